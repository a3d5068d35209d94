"""Flattened unpack and the snapshot store from a real Store, without privileges."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from ociimg.digest import Digest
from ociimg.errors import AlreadyExists, DiffIDMismatch, DigestMismatch, InvalidDocument
from ociimg.layers.flatten import merge_snapshots
from ociimg.layers.snapshots import SnapshotStore
from ociimg.layers.unpack import unpack_rootfs
from ociimg.spec import chain_ids
from ociimg.store import Store
from tests.layerimage import apply_snapshots, build_image, tar_of
from tests.treewalk import tree_manifest

BASE = tar_of({"bin": None, "bin/sh": b"#!shell", "etc": None, "etc/os-release": b"ID=test\n"})
TOP = tar_of({"etc": None, "etc/hostname": b"box\n", "etc/.wh.os-release": b"",
              "usr": None, "usr/bin": None, "usr/bin/env": "->/bin/sh"})


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


@pytest.mark.parametrize("how", ["gzip", "zstd", "none"])
def test_unpack_rootfs_applies_layers_in_order(store: Store, tmp_path: Path, how: str) -> None:
    manifest, config = build_image(store, [BASE, TOP], how=how)
    dest = tmp_path / "rootfs"
    unpack_rootfs(store, manifest, config, dest, rootless=True)
    m = tree_manifest(dest)
    assert sorted(m) == [".", "bin", "bin/sh", "etc", "etc/hostname", "usr", "usr/bin",
                         "usr/bin/env"]
    assert m["usr/bin/env"]["target"] == "/bin/sh"
    assert not list(tmp_path.glob(".rootfs.tmp-*"))


def test_unpack_refuses_non_empty_destination(store: Store, tmp_path: Path) -> None:
    manifest, config = build_image(store, [BASE])
    dest = tmp_path / "rootfs"
    dest.mkdir()
    (dest / "x").write_text("mine")
    with pytest.raises(AlreadyExists):
        unpack_rootfs(store, manifest, config, dest, rootless=True)
    assert (dest / "x").read_text() == "mine"


def _assert_nothing_left(tmp_path: Path) -> None:
    assert not (tmp_path / "rootfs").exists()
    assert not list(tmp_path.glob(".rootfs.tmp-*"))


def test_diff_id_mismatch_leaves_nothing(store: Store, tmp_path: Path) -> None:
    wrong = Digest.of(b"not the layer")
    manifest, config = build_image(store, [BASE, TOP], diff_ids=[Digest.of(BASE), wrong])
    with pytest.raises(DiffIDMismatch, match="uncompressed content hashes to"):
        unpack_rootfs(store, manifest, config, tmp_path / "rootfs", rootless=True)
    _assert_nothing_left(tmp_path)


def test_tampered_blob_is_a_digest_mismatch(store: Store, tmp_path: Path) -> None:
    manifest, config = build_image(store, [BASE], how="none")
    blob = store.blob_path(manifest.layers[0].digest)
    os.chmod(blob, 0o644)
    with open(blob, "ab") as f:
        f.write(b"\0" * 512)  # still a valid tar; only the blob digest notices
    with pytest.raises(DigestMismatch):
        unpack_rootfs(store, manifest, config, tmp_path / "rootfs", rootless=True)
    _assert_nothing_left(tmp_path)


@pytest.mark.parametrize("how", ["gzip", "zstd"])
def test_corrupt_compressed_layer_is_one_error_and_leaves_nothing(
        store: Store, tmp_path: Path, how: str) -> None:
    big = tar_of({"f": os.urandom(200_000)})
    manifest, config = build_image(store, [big], how=how)
    blob = store.blob_path(manifest.layers[0].digest)
    data = blob.read_bytes()
    os.chmod(blob, 0o644)
    blob.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidDocument):
        unpack_rootfs(store, manifest, config, tmp_path / "rootfs", rootless=True)
    _assert_nothing_left(tmp_path)


# -- snapshots ----------------------------------------------------------------------
def test_snapshots_are_keyed_by_chain_id_and_shared(store: Store, tmp_path: Path) -> None:
    snaps = SnapshotStore(tmp_path / "snapshots", rootless=True)
    m1, c1 = build_image(store, [BASE])
    m2, c2 = build_image(store, [BASE, tar_of({"extra": b"x"})])
    dirs1 = snaps.unpack_image(store, m1, c1)
    inode = os.stat(dirs1[0] / "bin/sh").st_ino
    dirs2 = snaps.unpack_image(store, m2, c2)
    assert dirs2[0] == dirs1[0] and os.stat(dirs2[0] / "bin/sh").st_ino == inode
    assert [p.parent.name for p in dirs2] == [c.hex for c in chain_ids(c2.diff_ids)]
    assert (dirs2[1] / "extra").read_bytes() == b"x"
    assert {s.chain_id for s in snaps.list()} == set(chain_ids(c2.diff_ids))


def test_snapshot_diff_id_mismatch_commits_nothing(store: Store, tmp_path: Path) -> None:
    snaps = SnapshotStore(tmp_path / "snapshots", rootless=True)
    manifest, config = build_image(store, [BASE], diff_ids=[Digest.of(b"wrong")])
    with pytest.raises(DiffIDMismatch):
        snaps.unpack_image(store, manifest, config)
    assert [p.name for p in snaps.path.iterdir()] == [".locks"]


def test_gc_keeps_what_is_asked_and_removes_stale_temps(store: Store, tmp_path: Path) -> None:
    snaps = SnapshotStore(tmp_path / "snapshots", rootless=True)
    m1, c1 = build_image(store, [BASE])
    m2, c2 = build_image(store, [TOP])
    snaps.unpack_image(store, m1, c1)
    snaps.unpack_image(store, m2, c2)
    crashed = snaps.path / f".tmp-{'ab' * 32}-xyz"
    (crashed / "fs").mkdir(parents=True)  # what a killed builder leaves
    removed = snaps.gc(keep=set(chain_ids(c1.diff_ids)))
    assert removed == chain_ids(c2.diff_ids)
    assert not crashed.exists()
    assert snaps.has(chain_ids(c1.diff_ids)[0]) and not snaps.has(chain_ids(c2.diff_ids)[0])


def _prepare_in_child(args: tuple[str, str, bytes, bytes]) -> list[str]:
    from ociimg.spec import parse_config, parse_manifest

    store_path, snap_path, mraw, craw = args
    dirs = SnapshotStore(snap_path, rootless=True).unpack_image(
        Store(store_path), parse_manifest(mraw), parse_config(craw))
    return [str(d) for d in dirs]


def test_parallel_prepare_builds_each_snapshot_once(store: Store, tmp_path: Path) -> None:
    big = tar_of({f"d/f{i}": os.urandom(2000) for i in range(300)})
    manifest, config = build_image(store, [BASE, big])
    args = (str(store.path), str(tmp_path / "snapshots"), manifest.raw, config.raw)
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.map(_prepare_in_child, [args] * 4)
    assert all(r == results[0] for r in results)
    snaps = SnapshotStore(tmp_path / "snapshots")
    assert len(snaps.list()) == 2
    assert not list(snaps.path.glob(".tmp-*"))
    assert len(os.listdir(Path(results[0][1]) / "d")) == 300


def test_merged_snapshots_equal_flattened_unpack(store: Store, tmp_path: Path) -> None:
    # Without whiteouts (those need mknod/trusted xattrs: see the integration tests).
    from tests.tarbuild import F, H, tar
    layers = [BASE, tar_of({"etc": None, "etc/hostname": b"box\n", "bin/sh": b"newer"}),
              tar(F("a/f", b"linked"), H("b/g", "a/f"), H("c/d/e", "a/f"))]
    manifest, config = build_image(store, layers)
    unpack_rootfs(store, manifest, config, tmp_path / "flat", rootless=True)
    snapshots = SnapshotStore(tmp_path / "snapshots", rootless=True)
    dirs = snapshots.unpack_image(store, manifest, config)
    merge_snapshots(dirs, tmp_path / "merged", rootless=True)
    merged, flat = tree_manifest(tmp_path / "merged"), tree_manifest(tmp_path / "flat")
    for implicit in (".", "a", "b", "c", "c/d"):  # no tar entry: dated when created
        merged[implicit].pop("mtime")
        flat[implicit].pop("mtime")
    assert merged == flat
    assert merged["b/g"]["link"] == "a/f" and merged["c/d/e"]["link"] == "a/f"


def test_userxattr_snapshots_merge_like_a_flattened_unpack(store: Store, tmp_path: Path) -> None:
    # Rootless overlay snapshots: opaque dirs marked with user.overlay.opaque, which an
    # unprivileged owner may set; whiteouts are 0:0 devices (unprivileged since 5.8).
    from tests.conftest import can_make_whiteout, need
    need(can_make_whiteout(tmp_path), "kernel refuses 0:0 whiteout mknod here")
    layers = [BASE, TOP, tar_of({"etc": None, "etc/.wh..wh..opq": b"", "etc/only": b"o"})]
    manifest, config = build_image(store, layers)
    unpack_rootfs(store, manifest, config, tmp_path / "flat", rootless=True)
    dirs = apply_snapshots(tmp_path, layers, rootless=True, userxattr=True)
    assert os.getxattr(dirs[2] / "etc", "user.overlay.opaque") == b"y"
    merge_snapshots(dirs, tmp_path / "merged", rootless=True, userxattr=True)
    flat, merged = tree_manifest(tmp_path / "flat"), tree_manifest(tmp_path / "merged")
    flat.pop(".")
    merged.pop(".")
    assert merged == flat
    assert sorted(p for p in merged if p.startswith("etc/")) == ["etc/only"]


def test_snapshot_of_the_other_xattr_flavour_is_rebuilt(store: Store, tmp_path: Path) -> None:
    manifest, config = build_image(store, [BASE])
    user = SnapshotStore(tmp_path / "snapshots", rootless=True, userxattr=True)
    (first,) = user.unpack_image(store, manifest, config)
    trusted = SnapshotStore(tmp_path / "snapshots", rootless=True, userxattr=False)
    assert not trusted.has(chain_ids(config.diff_ids)[0])
    (again,) = trusted.unpack_image(store, manifest, config)
    assert again == first and trusted.has(chain_ids(config.diff_ids)[0])
    assert not user.has(chain_ids(config.diff_ids)[0])
    assert not list(trusted.path.glob(".tmp-*"))


def test_snapshot_of_an_older_format_is_rebuilt(store: Store, tmp_path: Path) -> None:
    manifest, config = build_image(store, [BASE])
    snaps = SnapshotStore(tmp_path / "snapshots", rootless=True)
    (fs,) = snaps.unpack_image(store, manifest, config)
    meta = fs.parent / "snapshot.json"
    doc = json.loads(meta.read_bytes())
    doc.pop("format")  # as written before the format field existed
    meta.write_text(json.dumps(doc))
    (fs / "stale").write_text("from the old snapshot")
    assert not snaps.has(chain_ids(config.diff_ids)[0])
    assert snaps.unpack_image(store, manifest, config) == [fs]
    assert not (fs / "stale").exists() and snaps.has(chain_ids(config.diff_ids)[0])


def test_an_outdated_snapshot_survives_its_rebuild_while_its_chain_is_kept(
        store: Store, tmp_path: Path) -> None:
    # A container started before an upgrade has the old snapshot mounted: rebuilding must
    # not delete it under the container; gc does once nothing keeps that chain ID.
    manifest, config = build_image(store, [BASE])
    chain = chain_ids(config.diff_ids)[0]
    snaps = SnapshotStore(tmp_path / "snapshots", rootless=True)
    (fs,) = snaps.unpack_image(store, manifest, config)
    in_use = os.open(fs / "bin", os.O_RDONLY | os.O_DIRECTORY)  # what an overlay holds
    try:
        meta = fs.parent / "snapshot.json"
        meta.write_text(json.dumps({**json.loads(meta.read_bytes()), "format": 1}))
        assert snaps.unpack_image(store, manifest, config) == [fs] and snaps.has(chain)
        assert "sh" in os.listdir(in_use)  # the old tree is still whole
        assert snaps.gc(keep={chain}) == [] and "sh" in os.listdir(in_use)
        snaps.gc(keep=set())
        assert not list((snaps.path / ".retired").iterdir())
    finally:
        os.close(in_use)
