"""Deep trees (issue 8 item 11): no layer builds one, and every tree walk survives one.

A layer must not get past the depth limit by reaching an existing deep dir through a
symlink, and every walker (remove, size, copy/merge, whiteout clearing, opaque pruning,
snapshot gc) must handle a 5,000-deep tree made by hand: deeper than Python's recursion
limit, and with a path (~55 KB) far beyond PATH_MAX.
"""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from ociimg.commands.maintenance import collect_garbage
from ociimg.errors import UnsafeArchive
from ociimg.fsutil import remove_tree
from ociimg.layers import paths
from ociimg.layers.apply import ApplyOptions, OnDiskFormat, apply_layer
from ociimg.layers.flatten import merge_snapshots
from ociimg.layers.snapshots import SnapshotStore
from tests.conftest import can_make_whiteout
from tests.tarbuild import RESOLVERS, D, F, L, need_resolver, tar

DEPTH = 5000
NAME = "d" * 10  # 5,000 levels of "dddddddddd/": a 55,000-byte path


def make_deep(parent: Path, *, whiteouts: bool = False) -> None:
    """``parent/dddddddddd/...`` DEPTH levels deep, a file every 500 levels (and, when
    we may mknod, a whiteout device), built with dir fds only."""
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(DEPTH):
            os.mkdir(NAME, 0o755, dir_fd=fd)
            nxt = os.open(NAME, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
            if level % 500 == 0:
                f = os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
                os.write(f, b"x" * 5000)
                os.close(f)
                if whiteouts:
                    os.mknod("gone", stat.S_IFCHR, os.makedev(0, 0), dir_fd=fd)
        os.chmod(fd, 0o555)  # the deepest dir read-only, as layers may leave one
    finally:
        os.close(fd)


def count_levels(top: Path) -> tuple[int, int]:
    """(dirs below top along the chain, whiteout devices seen), with dir fds only."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    levels = whiteouts = 0
    try:
        while True:
            names = os.listdir(fd)
            whiteouts += sum(1 for n in names if stat.S_ISCHR(
                os.stat(n, dir_fd=fd, follow_symlinks=False).st_mode))
            if NAME not in names:
                return levels, whiteouts
            nxt = os.open(NAME, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
            levels += 1
    finally:
        os.close(fd)




# -- the layer cannot build one -------------------------------------------------------
def _symlinked_deep_layer(target_depth: int = 1100) -> bytes:
    """Dirs 250 deep by name, then a symlink to the deepest and 250 more levels below
    it, again and again: every name stays short, the tree grows past ``target_depth``."""
    members = []
    chain = ["a"] * 250
    for i in range(1, 251):
        members.append(D("/".join(chain[:i])))
    base = "/".join(chain)
    depth = 250
    hop = 0
    while depth < target_depth:
        hop += 1
        link = f"s{hop}"
        members.append(L(link, base))  # a relative target from the root
        for i in range(1, 251):
            members.append(D(f"{link}/" + "/".join(["a"] * i)))
        base = f"{link}/" + "/".join(["a"] * 250)
        depth += 250
    return tar(*members)


@pytest.mark.parametrize("resolver", RESOLVERS)
@pytest.mark.parametrize("fmt", [OnDiskFormat.DIR, OnDiskFormat.OVERLAY])
def test_layer_cannot_nest_deeper_through_symlinked_parents(tmp_path: Path, resolver: str,
                                                           fmt: OnDiskFormat) -> None:
    need_resolver(resolver)
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(UnsafeArchive, match="nested deeper than 256"):
        apply_layer(root, io.BytesIO(_symlinked_deep_layer()),
                    ApplyOptions(fmt, rootless=True, resolver=resolver))
    remove_tree(root)


def test_layer_cannot_nest_deeper_below_a_deep_lower_dir(tmp_path: Path) -> None:
    """The entry's own last component counts: a dir entry directly below a dir at the
    limit (a lower layer's) is refused, not created one level deeper."""
    root = tmp_path / "root"
    root.mkdir()
    name = "/".join(["a"] * paths.MAX_DEPTH)
    apply_layer(root, io.BytesIO(tar(D(name))), ApplyOptions(rootless=True))
    apply_layer(root, io.BytesIO(tar(L("s", name))), ApplyOptions(rootless=True))
    apply_layer(root, io.BytesIO(tar(F("s/f"))), ApplyOptions(rootless=True))  # a file is fine
    for entry in (D("s/b"), D("s/b/c"), F("s/b/f")):
        with pytest.raises(UnsafeArchive, match="nested deeper"):
            apply_layer(root, io.BytesIO(tar(entry)), ApplyOptions(rootless=True))


# -- every walker survives one made by hand --------------------------------------------
def test_remove_of_a_5000_deep_tree(tmp_path: Path) -> None:
    make_deep(tmp_path)
    assert count_levels(tmp_path)[0] == DEPTH
    remove_tree(tmp_path / NAME)
    assert os.listdir(tmp_path) == []


def test_whiteout_clearing_in_a_5000_deep_tree(tmp_path: Path) -> None:
    """OVERLAY format: an opaque marker clears what the upper holds below the dir that
    is not this layer's (whiteouts, helper dirs): here a hand-made deep tree."""
    mknod = can_make_whiteout(tmp_path)
    root = tmp_path / "upper"
    root.mkdir()
    make_deep(root, whiteouts=mknod)
    apply_layer(root, io.BytesIO(tar(F(f"{NAME}/.wh..wh..opq"), F(f"{NAME}/kept", b"new"))),
                ApplyOptions(OnDiskFormat.OVERLAY, rootless=True, userxattr=True))
    assert os.listdir(root / NAME) == ["kept"]


def test_merge_of_a_5000_deep_snapshot(tmp_path: Path) -> None:
    snap = tmp_path / "snap"
    snap.mkdir()
    make_deep(snap)
    merged = tmp_path / "merged"
    merge_snapshots([snap], merged, rootless=True)
    assert count_levels(merged)[0] == DEPTH
    remove_tree(merged)
    remove_tree(snap)


@pytest.mark.parametrize("marker", [f"{NAME}/.wh..wh..opq", f".wh.{NAME}"])
def test_opaque_and_whiteout_over_a_5000_deep_lower_tree(tmp_path: Path, marker: str) -> None:
    """DIR format: an opaque marker prunes, a whiteout removes, a hand-made deep tree."""
    root = tmp_path / "root"
    root.mkdir()
    make_deep(root)
    keep = [F(f"{NAME}/kept", b"new")] if "opq" in marker else []
    apply_layer(root, io.BytesIO(tar(*keep, F(marker))), ApplyOptions(rootless=True))
    if keep:
        assert sorted(os.listdir(root / NAME)) == ["kept"]
    else:
        assert os.listdir(root) == []


def test_gc_of_a_5000_deep_snapshot(tmp_path: Path) -> None:
    """`ociimg gc`: sizes every snapshot, then removes the unused ones."""
    root = tmp_path / "root"
    store = SnapshotStore(root / "snapshots", rootless=True)
    store._init()
    chain = "ab" * 32
    fs = store.path / chain / "fs"
    fs.mkdir(parents=True)
    (store.path / chain / "snapshot.json").write_text(json.dumps({
        "chainID": f"sha256:{chain}", "diffID": f"sha256:{chain}",
        "layer": f"sha256:{chain}", "mediaType": "application/vnd.oci.image.layer.v1.tar"}))
    make_deep(fs)
    report = collect_garbage(root, [])
    assert report.removed_snapshots == 1
    assert report.snapshot_bytes_freed > DEPTH * 512  # every dir's blocks counted
    assert not (store.path / chain).exists()


def test_walks_hold_a_bounded_number_of_fds(tmp_path: Path) -> None:
    """The walk climbs back with "..", so 5,000 levels fit a 256-fd limit."""
    make_deep(tmp_path)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            import resource
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
            remove_tree(tmp_path / NAME)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.listdir(tmp_path) == []


def test_symlinked_layer_below_the_limit_applies(tmp_path: Path) -> None:
    """Sanity: the symlinked layer really is well-formed (it applies below the limit)."""
    root = tmp_path / "root"
    root.mkdir()
    data = _symlinked_deep_layer(target_depth=200)
    assert len(tarfile.open(fileobj=io.BytesIO(data)).getmembers()) == 250
    apply_layer(root, io.BytesIO(data), ApplyOptions(rootless=True))
