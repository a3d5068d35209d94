"""The differ without root or mounts: tar headers, streamed data, and active snapshots in
the flattened-copy form (written to directly), round-tripped through the applier."""

from __future__ import annotations

import io
import os
import tarfile
import threading
from pathlib import Path

import pytest

from ociimg.errors import InvalidReference, UnsafeArchive
from ociimg.layers import tarwriter
from ociimg.layers.apply import ApplyOptions, apply_layer
from ociimg.layers.changes import collect_changes
from ociimg.layers.diff import write_changes
from ociimg.layers.lowertree import LowerTree
from ociimg.layers.ondisk import OnDisk
from ociimg.layers.snapshots import SnapshotStore
from ociimg.layers.tarinfo import xattrs_of
from ociimg.spec import chain_ids
from ociimg.store import Store
from tests.layerimage import build_image, tar_of
from tests.treewalk import diff_manifests, tree_manifest

BASE = tar_of({"bin": None, "bin/sh": b"#!sh\n", "bin/ls": b"ls", "etc": None,
               "etc/passwd": b"root:x:0:0\n", "etc/skel": None, "etc/skel/.profile": b"x",
               "lib": "->usr/lib"})


# --- headers -------------------------------------------------------------------------
def _members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        return tf.getmembers()


def test_short_header_is_plain_ustar_with_numeric_owners() -> None:
    blob = tarwriter.header(b"etc/passwd", mode=0o4755, uid=1000, gid=50, size=0, mtime=12345)
    assert len(blob) == 512 and blob[156:157] == b"0" and b"PaxHeader" not in blob
    (m,) = _members(blob + tarwriter.end_of_archive())
    assert (m.name, m.mode, m.uid, m.gid, m.mtime, m.uname, m.gname, m.pax_headers) == \
        ("etc/passwd", 0o4755, 1000, 50, 12345, "", "", {})


def test_long_name_splits_into_ustar_prefix_then_needs_pax() -> None:
    split = ("d" * 120) + "/" + "f" * 90
    (m,) = _members(tarwriter.header(split.encode()) + tarwriter.end_of_archive())
    assert m.name == split and m.pax_headers == {}
    long = "/".join(["x" * 200, "y" * 200])
    (m,) = _members(tarwriter.header(long.encode()) + tarwriter.end_of_archive())
    assert m.name == long and m.pax_headers["path"] == long


def test_pax_only_for_what_does_not_fit() -> None:
    xattrs = {"security.capability": bytes([1, 0, 0, 2, 0, 4, 0, 0, 0xff, 0x80]),
              "user.k": b"v"}
    blob = tarwriter.header("näme".encode(), uid=2**32 - 2, size=0, mtime=2**40,
                            linkname=b"t" * 150, typeflag=tarwriter.SYMTYPE, xattrs=xattrs)
    (m,) = _members(blob + tarwriter.end_of_archive())
    assert m.name == "näme" and m.uid == 2**32 - 2 and m.mtime == 2**40
    assert m.linkname == "t" * 150
    assert xattrs_of(m) == xattrs  # binary values survive (the applier's reader)
    assert "gid" not in m.pax_headers and "size" not in m.pax_headers


class _Sink:
    def __init__(self) -> None:
        self.total = 0
        self.biggest = 0

    def write(self, data: bytes) -> int:
        self.total += len(data)
        self.biggest = max(self.biggest, len(data))
        return len(data)


def test_huge_sparse_file_is_streamed_not_loaded(tmp_path: Path) -> None:
    size = 8 << 30  # 8 GiB of holes with a little data in the middle and at the end
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(3 << 30)
        f.write(b"middle")
        f.seek(size - 4)
        f.write(b"tail")
    sink = _Sink()
    fd = os.open(path, os.O_RDONLY)
    try:
        tarwriter.stream_file(fd, size, sink)  # type: ignore[arg-type]
    finally:
        os.close(fd)
    assert sink.total == size and sink.biggest <= 1 << 20


def test_a_file_that_shrank_is_padded_to_its_header_size(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    out = io.BytesIO()
    fd = os.open(path, os.O_RDONLY)
    try:
        tarwriter.stream_file(fd, 10, out)  # the header said 10 bytes
    finally:
        os.close(fd)
    assert out.getvalue() == b"abc" + bytes(509)


# --- active snapshots as flattened copies (no mount needed) ---------------------------
@pytest.fixture
def copies(tmp_path: Path) -> tuple[SnapshotStore, Store]:
    return SnapshotStore(tmp_path / "snapshots", use_overlay=False), Store(tmp_path / "store")


def _prepared(snaps: SnapshotStore, store: Store, key: str = "k"):
    manifest, config = build_image(store, [BASE])
    snaps.unpack_image(store, manifest, config)
    parent = chain_ids(config.diff_ids)[-1]
    snaps.prepare(key, parent)
    return snaps.active_dir(key) / "fs", manifest, config


def _roundtrip(snaps: SnapshotStore, store: Store, fs: Path, tmp_path: Path, tar: bytes) -> None:
    """The parent unpacked flat, the diff applied on top == the active snapshot's tree."""
    flat = tmp_path / "flat"
    flat.mkdir()
    apply_layer(flat, io.BytesIO(BASE), ApplyOptions())
    apply_layer(flat, io.BytesIO(tar), ApplyOptions())
    a, b = tree_manifest(fs), tree_manifest(flat)
    a.pop(".")
    b.pop(".")
    assert diff_manifests(a, b) == []


def test_diff_round_trips_and_is_deterministic(copies, tmp_path: Path) -> None:
    snaps, store = copies
    fs, _, _ = _prepared(snaps, store)
    (fs / "etc/passwd").write_text("root:x:0:0\nuser:x:1000:1000\n")
    (fs / "bin/sh").unlink()
    (fs / "new").mkdir()
    (fs / "new/file").write_bytes(b"\0" * 5000)
    os.link(fs / "new/file", fs / "new/again")
    os.setxattr(fs / "new", "user.note", b"\xff\x00bin")
    import shutil
    shutil.rmtree(fs / "etc/skel")
    (fs / "etc/skel").mkdir()
    one, two = io.BytesIO(), io.BytesIO()
    d1 = snaps.diff("k", one)
    d2 = snaps.diff("k", two)
    assert d1 == d2 and one.getvalue() == two.getvalue()
    names = [m.name for m in _members(one.getvalue())]
    # A dir whose every name is gone (rm -rf; mkdir) gets one opaque marker.
    assert names == ["bin", "bin/.wh.sh", "etc", "etc/passwd", "etc/skel",
                     "etc/skel/.wh..wh..opq", "new", "new/again", "new/file"]
    assert one.getvalue()[:4] == b"bin/"  # dir names end in "/" (tarfile strips it)
    members = {m.name: m for m in _members(one.getvalue())}
    assert members["new/file"].islnk() and members["new/file"].linkname == "new/again"
    assert {(c.kind, c.path) for c in snaps.changes("k")} == {
        ("C", "/bin"), ("D", "/bin/sh"), ("C", "/etc"), ("C", "/etc/passwd"),
        ("C", "/etc/skel"), ("D", "/etc/skel/.profile"), ("A", "/new"), ("A", "/new/again"),
        ("A", "/new/file")}
    _roundtrip(snaps, store, fs, tmp_path, one.getvalue())


def test_source_date_epoch_clamps_mtimes(copies) -> None:
    snaps, store = copies
    fs, _, _ = _prepared(snaps, store)
    (fs / "new").write_text("x")
    out = io.BytesIO()
    snaps.diff("k", out, source_date_epoch=1_000)
    assert {m.mtime for m in _members(out.getvalue())} == {1_000}
    out2 = io.BytesIO()
    snaps.diff("k", out2, source_date_epoch=2**40)  # later than everything: no effect
    assert {m.mtime for m in _members(out2.getvalue())} == {int(os.stat(fs / "new").st_mtime)}


def test_symlinks_pointing_out_are_archived_never_followed(copies, tmp_path: Path) -> None:
    snaps, store = copies
    fs, _, _ = _prepared(snaps, store)
    secret = tmp_path / "secret"
    secret.write_text("host secret")
    os.symlink(str(secret), fs / "abs")
    os.symlink("../../../../../../" + str(secret), fs / "rel")
    os.symlink(str(tmp_path), fs / "dirlink")
    out = io.BytesIO()
    snaps.diff("k", out)
    members = {m.name: m for m in _members(out.getvalue())}
    assert members["abs"].issym() and members["abs"].linkname == str(secret)
    assert members["rel"].issym() and members["dirlink"].issym()
    assert not [n for n in members if n.startswith("dirlink/")]
    assert b"host secret" not in out.getvalue()


def test_a_file_swapped_for_a_symlink_after_the_walk_is_left_out(copies, tmp_path: Path
                                                                  ) -> None:
    snaps, store = copies
    fs, _, _ = _prepared(snaps, store)
    (fs / "victim").write_text("x")
    secret = tmp_path / "secret"
    secret.write_text("host secret")
    lowers = [snaps.fs_dir(d) for d in reversed(snaps.active_info("k").lowers)]
    with LowerTree(lowers, userxattr=snaps.userxattr) as lower:
        changes = collect_changes(fs, OnDisk(), lower, complete=True)
    os.unlink(fs / "victim")
    os.symlink(str(secret), fs / "victim")  # the race the differ must not lose
    out = io.BytesIO()
    write_changes(changes, fs, out)
    assert b"host secret" not in out.getvalue()
    assert "victim" not in [m.name for m in _members(out.getvalue())]


@pytest.mark.parametrize("key", ["../k", "k/../../x", "/etc", ".", "x" * 500])
def test_diff_and_changes_refuse_hostile_keys(copies, key: str) -> None:
    snaps, _ = copies
    with pytest.raises(InvalidReference):
        snaps.diff(key, io.BytesIO())
    with pytest.raises(InvalidReference):
        snaps.changes(key)
    with pytest.raises(InvalidReference):
        snaps.commit(key)


class _Gate:
    """An output that blocks on its first write until released (a slow consumer)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.buf = io.BytesIO()

    def write(self, data: bytes) -> int:
        self.started.set()
        self.release.wait(30)
        return self.buf.write(data)


def test_remove_during_a_diff_waits_for_it(copies) -> None:
    snaps, store = copies
    fs, _, _ = _prepared(snaps, store)
    (fs / "data").write_bytes(b"d" * 100_000)
    gate = _Gate()
    result: dict = {}

    def diff() -> None:
        try:
            result["digest"] = snaps.diff("k", gate)  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    def remove() -> None:
        try:
            snaps.remove("k")
            result["removed"] = True
        except BaseException as exc:  # noqa: BLE001
            result["remove_error"] = exc

    t1 = threading.Thread(target=diff)
    t1.start()
    assert gate.started.wait(30)
    t2 = threading.Thread(target=remove)
    t2.start()
    gate.release.set()
    t1.join(30)
    t2.join(30)
    assert "error" not in result and "remove_error" not in result, result
    assert result["removed"] and not snaps.active_dir("k").exists()
    assert b"d" * 1000 in gate.buf.getvalue()


def test_commit_gives_the_chain_id_of_the_same_layer_unpacked(copies, tmp_path: Path) -> None:
    snaps, store = copies
    fs, _, config = _prepared(snaps, store)
    (fs / "etc/hostname").write_text("box\n")
    out = io.BytesIO()
    diff_id = snaps.diff("k", out)
    chain = snaps.commit("k")
    parent = chain_ids(config.diff_ids)[-1]
    assert chain == chain_ids([*config.diff_ids, diff_id])[-1]
    assert snaps.has(chain) and snaps.chain_of(chain) == [parent, chain]
    assert (snaps.fs_dir(chain) / "etc/hostname").read_text() == "box\n"
    assert snaps.commit("k") == chain  # again: the same snapshot, nothing rebuilt
    snaps.prepare("next", chain)
    assert (snaps.active_dir("next") / "fs/etc/hostname").read_text() == "box\n"


def test_a_tree_deeper_than_path_max_and_the_recursion_limit(copies) -> None:
    snaps, store = copies
    fs, _, _ = _prepared(snaps, store)
    fd = os.open(fs, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1500):  # 4500 bytes of path: past PATH_MAX and Python's recursion limit
        os.mkdir("dd", dir_fd=fd)
        child = os.open("dd", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    leaf = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(leaf, b"deep")
    os.close(leaf)
    os.close(fd)
    out = io.BytesIO()
    snaps.diff("k", out)
    members = _members(out.getvalue())
    assert len(members) == 1501 and members[-1].name == "dd/" * 1500 + "leaf"
    assert members[-1].size == 4
    # The applier refuses trees that deep (paths.MAX_DEPTH): commit says so, leaves nothing.
    with pytest.raises(UnsafeArchive):
        snaps.commit("k")
    assert not [p for p in snaps.path.iterdir() if p.name.startswith(".tmp-")]
    snaps.remove("k")


def test_files_removed_between_walk_and_write_are_left_out(copies) -> None:
    """A running container keeps changing its tree: what went away since the walk is
    not in the tar, and the tar is still whole."""
    snaps, store = copies
    fs, _, _ = _prepared(snaps, store)
    (fs / "gone").mkdir()
    (fs / "gone/f").write_text("x")
    (fs / "stays").write_text("y")
    lowers = [snaps.fs_dir(d) for d in reversed(snaps.active_info("k").lowers)]
    with LowerTree(lowers, userxattr=snaps.userxattr) as lower:
        changes = collect_changes(fs, OnDisk(), lower, complete=True)
    import shutil
    shutil.rmtree(fs / "gone")
    out = io.BytesIO()
    write_changes(changes, fs, out)
    assert [m.name for m in _members(out.getvalue())] == ["gone", "stays"]
