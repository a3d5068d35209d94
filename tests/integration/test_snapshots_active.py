"""Active snapshots (prepare/view/mounts/mounted/remove) as root, with real overlay
mounts (mutations happen in a child's mount namespace or inside ``mounted()``, and
every test checks that no mount of ours is left)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ociimg.digest import Digest
from ociimg.errors import AlreadyExists, InvalidReference, NotFound
from ociimg.layers.overlay import MAX_MOUNT_DATA, Mount, overlay_supported
from ociimg.layers.snapshots import SnapshotStore
from ociimg.spec import chain_ids
from ociimg.store import Store
from tests.conftest import need
from tests.integration.forked import in_mount_ns
from tests.integration.runtime_helpers import mounts_under
from tests.layerimage import build_image, image_from_layout, tar_of
from tests.treewalk import diff_manifests, tree_manifest


@pytest.fixture
def overlay(root: None) -> None:
    need(overlay_supported(), "overlayfs is not available in this kernel")


@pytest.fixture(params=["overlay", "copy"])
def snaps(request: pytest.FixtureRequest, root: None, tmp_path: Path
          ) -> Iterator[SnapshotStore]:
    use_overlay = request.param == "overlay"
    if use_overlay:
        need(overlay_supported(), "overlayfs is not available in this kernel")
    yield SnapshotStore(tmp_path / "snapshots", rootless=False, use_overlay=use_overlay)
    assert mounts_under(tmp_path) == []


def _busybox(snaps: SnapshotStore, fixture_layout: Path, tag: str = "busybox"):
    store = Store(fixture_layout)
    manifest, config = image_from_layout(store, tag)
    lowers = snaps.unpack_image(store, manifest, config)
    return chain_ids(config.diff_ids)[-1], lowers


def _manifest(path: Path) -> dict:
    out = tree_manifest(path)
    out.pop(".", None)
    return out


def test_prepare_mounts_the_parent_and_writes_land_in_the_active_dir(
        snaps: SnapshotStore, fixture_layout: Path, tmp_path: Path) -> None:
    top, lowers = _busybox(snaps, fixture_layout, "multilayer")
    mounts = snaps.prepare("c1", top, labels={"purpose": "test"})
    assert len(mounts) == 1 and isinstance(mounts[0], Mount)
    info = snaps.active_info("c1")
    assert (info.key, info.parent, info.kind, info.labels) == ("c1", top, "active",
                                                               {"purpose": "test"})
    assert [a.key for a in snaps.active()] == ["c1"]
    assert snaps.mounts("c1") == mounts
    with snaps.mounted("c1") as view:
        got = _manifest(view)
        assert "data/opaque/new.txt" in got and "data/to-delete.txt" not in got
        (view / "added.txt").write_text("hello")
        os.unlink(view / "data/opaque/new.txt")
    if mounts[0].type == "overlay":
        upper = snaps.active_dir("c1") / "upper"
        assert (upper / "added.txt").read_text() == "hello"
        assert os.lstat(upper / "data/opaque/new.txt").st_rdev == 0  # a whiteout
    with snaps.mounted("c1") as view:  # the change persists across mounts
        assert (view / "added.txt").read_text() == "hello"
        assert not (view / "data/opaque/new.txt").exists()
    snaps.remove("c1")
    assert snaps.active() == [] and not snaps.active_dir("c1").exists()
    assert all(p.is_dir() for p in lowers)  # the committed chain is untouched


def test_view_is_read_only_and_equals_the_merged_image(
        snaps: SnapshotStore, fixture_layout: Path, tmp_path: Path) -> None:
    top, _ = _busybox(snaps, fixture_layout, "multilayer")
    snaps.prepare("rw", top)
    snaps.view("ro", top)
    assert snaps.active_info("ro").kind == "view"
    with snaps.mounted("ro") as ro, snaps.mounted("rw") as rw:
        assert diff_manifests(_manifest(rw), _manifest(ro)) == []
        with pytest.raises(OSError) as exc:
            (ro / "nope").write_text("x")
        assert exc.value.errno == errno.EROFS
    snaps.remove("ro")
    snaps.remove("rw")


def test_single_layer_view_hides_its_whiteout_devices(
        snaps: SnapshotStore, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    manifest, config = build_image(store, [tar_of({"a": b"1", "d": None, "d/f": b"2"})])
    snaps.unpack_image(store, manifest, config)
    snaps.view("v", chain_ids(config.diff_ids)[-1])
    with snaps.mounted("v") as v:
        assert sorted(os.listdir(v)) == ["a", "d"] and (v / "d/f").read_bytes() == b"2"
    snaps.remove("v")


def test_prepare_without_parent_is_an_empty_tree(snaps: SnapshotStore) -> None:
    snaps.prepare("scratch", None)
    with snaps.mounted("scratch") as v:
        assert os.listdir(v) == []
        (v / "x").write_text("y")
    with snaps.mounted("scratch") as v:
        assert (v / "x").read_text() == "y"
    snaps.remove("scratch")


@pytest.mark.parametrize("key", ["", ".", "..", "../x", "a/b", "/abs", "x" * 129, ".hidden",
                                 "a..b", "-flag", "a\0b", "ä", "a b", "a\nb"])
def test_hostile_keys_are_refused(snaps: SnapshotStore, tmp_path: Path, key: str) -> None:
    with pytest.raises(InvalidReference):
        snaps.prepare(key, None)
    for call in (snaps.mounts, snaps.remove, snaps.active_info):
        with pytest.raises(InvalidReference):
            call(key)
    assert not (tmp_path / "x").exists() and not (tmp_path / "snapshots/x").exists()
    assert snaps.active() == []


def test_duplicate_key_and_unknown_parent(snaps: SnapshotStore, fixture_layout: Path) -> None:
    top, _ = _busybox(snaps, fixture_layout)
    snaps.prepare("k", top)
    with pytest.raises(AlreadyExists):
        snaps.prepare("k", top)
    with pytest.raises(NotFound):
        snaps.prepare("k2", Digest.of(b"nope"))
    with pytest.raises(NotFound):
        snaps.remove("missing")
    with pytest.raises(NotFound):
        snaps.mounts("missing")
    assert [a.key for a in snaps.active()] == ["k"]
    snaps.remove("k")


def test_gc_keeps_the_parent_chain_of_active_snapshots(
        snaps: SnapshotStore, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    m1, c1 = build_image(store, [tar_of({"a": b"1"}), tar_of({"b": b"2"})])
    m2, c2 = build_image(store, [tar_of({"other": b"3"})])
    snaps.unpack_image(store, m1, c1)
    snaps.unpack_image(store, m2, c2)
    chain = chain_ids(c1.diff_ids)
    snaps.prepare("c", chain[-1])
    # What a crash in prepare or remove leaves, and a mount point of a crashed mounted().
    crashed = snaps.path / "active" / ".tmp-c2-abc"
    (crashed / "upper").mkdir(parents=True)
    (snaps.path / ".mnt" / "c-xyz").mkdir(parents=True)
    removed = snaps.gc(keep=set())
    assert removed == chain_ids(c2.diff_ids)
    assert all(snaps.has(d) for d in chain)
    assert not crashed.exists() and not list((snaps.path / ".mnt").iterdir())
    assert [a.key for a in snaps.active()] == ["c"]
    with snaps.mounted("c") as v:
        assert sorted(os.listdir(v)) == ["a", "b"]
    snaps.remove("c")
    assert sorted(snaps.gc(keep=set())) == sorted(chain)


def test_gc_does_not_remove_a_temp_whose_key_is_locked(snaps: SnapshotStore) -> None:
    from ociimg.store import locks
    snaps.prepare("busy", None)
    temp = snaps.path / "active" / ".tmp-busy-123"
    temp.mkdir()
    with locks.locked(snaps.path / ".locks" / "active-busy.lock"):
        snaps.gc(keep=set())
        assert temp.exists()
    snaps.gc(keep=set())
    assert not temp.exists()
    snaps.remove("busy")


def test_150_layer_parent_mounts_through_short_lowers(overlay: None, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    layers = [tar_of({f"l{i:03d}": f"{i}".encode(), "shared": f"top={i}".encode()})
              for i in range(150)]
    manifest, config = build_image(store, layers, how="none")
    snaps = SnapshotStore(tmp_path / "snapshots", rootless=False, use_overlay=True)
    snaps.unpack_image(store, manifest, config)
    (mount,) = snaps.prepare("big", chain_ids(config.diff_ids)[-1])
    assert len(",".join(mount.options)) > MAX_MOUNT_DATA

    def body() -> dict:
        with snaps.mounted("big") as v:
            (v / "new").write_text("n")
            return {"n": len(os.listdir(v)), "shared": (v / "shared").read_text()}

    assert in_mount_ns(body) == {"n": 152, "shared": "top=149"}
    assert (snaps.active_dir("big") / "upper/new").read_text() == "n"
    snaps.remove("big")
    assert mounts_under(tmp_path) == []


def test_remove_refuses_a_mounted_snapshot(snaps: SnapshotStore, tmp_path: Path) -> None:
    from ociimg.layers.active import SnapshotInUse
    snaps.prepare("live", None)
    with snaps.mounted("live") as v:
        (v / "keep").write_text("mine")
        with pytest.raises(SnapshotInUse):
            snaps.remove("live")
        assert (v / "keep").read_text() == "mine"
    snaps.remove("live")
    assert snaps.active() == []
