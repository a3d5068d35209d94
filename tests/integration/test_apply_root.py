"""The applier, snapshots and overlay mounts as root: devices, ownership, the
overlay on-disk format, and real overlay mounts (in a child's mount namespace, so
the test process and host keep no mounts)."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from ociimg.errors import UnsafeArchive
from ociimg.layers.apply import ApplyOptions, apply_layer
from ociimg.layers.flatten import merge_snapshots
from ociimg.layers.overlay import (
    MAX_MOUNT_DATA,
    mount_rootfs,
    overlay_options,
    overlay_supported,
    umount,
)
from ociimg.layers.snapshots import SnapshotStore
from ociimg.layers.unpack import unpack_rootfs
from ociimg.oskit.mountinfo import read_mountinfo
from ociimg.store import Store
from tests.conftest import need
from tests.integration.forked import in_mount_ns
from tests.layerimage import apply_snapshots, build_image, image_from_layout, tar_of
from tests.tarbuild import DEV, D, F, H, L, tar
from tests.treewalk import diff_manifests, tree_manifest

# VFS_CAP_REVISION_2 with CAP_NET_BIND_SERVICE (bit 10) permitted+effective.
CAP_NET_BIND = bytes([0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0, 0] + [0] * 12)


def apply(root: Path, data: bytes, **kw: Any):
    return apply_layer(root, io.BytesIO(data), ApplyOptions(rootless=False, **kw))


def _is_whiteout(path: Path) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


# -- DIR format as root -----------------------------------------------------------
def test_devices_ownership_and_capabilities(root: None, tmp_path: Path) -> None:
    caps = CAP_NET_BIND.decode("utf-8", "surrogateescape")
    result = apply(tmp_path, tar(
        DEV("dev/null", tarfile.CHRTYPE, 1, 3), DEV("dev/sda", tarfile.BLKTYPE, 8, 0),
        F("bin/ping", b"ELF", 0o4755, uid=0, gid=0, xattrs={"security.capability": caps}),
        F("home/app/file", b"x", 0o6750, uid=1000, gid=1000),
        D("home/app", 0o2770, uid=1000, gid=1000), L("home/app/link", "file", uid=1000, gid=7),
        F("etc/trusted", b"", xattrs={"trusted.note": "t"}),
    ))
    assert result.warnings == []
    m = tree_manifest(tmp_path)
    assert m["dev/null"]["type"] == "char" and m["dev/null"]["rdev"] == [1, 3]
    assert m["dev/sda"]["type"] == "block" and m["dev/sda"]["rdev"] == [8, 0]
    # chown first, then chmod: setuid/setgid survive (umoci oci/layer/tar_extract.go)
    assert m["home/app/file"]["mode"] == oct(0o6750) and m["home/app/file"]["uid"] == 1000
    assert m["home/app"]["mode"] == oct(0o2770) and m["home/app"]["gid"] == 1000
    assert (m["home/app/link"]["uid"], m["home/app/link"]["gid"]) == (1000, 7)
    assert os.getxattr(tmp_path / "bin/ping", "security.capability") == CAP_NET_BIND
    assert m["bin/ping"]["mode"] == oct(0o4755)
    assert os.getxattr(tmp_path / "etc/trusted", "trusted.note") == b"t"


def test_uid_2_32_minus_1_is_refused_not_left_to_root(root: None, tmp_path: Path) -> None:
    # chown(2) reads (uid_t)-1 as "unchanged": the setuid file would have stayed root's.
    with pytest.raises(UnsafeArchive, match="out of range"):
        apply(tmp_path, tar(F("suid", b"x", 0o4755, uid=2**32 - 1), fmt=tarfile.GNU_FORMAT))
    assert not (tmp_path / "suid").exists()
    apply(tmp_path, tar(F("f", b"x", uid=2**32 - 2, gid=2**32 - 2), fmt=tarfile.GNU_FORMAT))
    assert (os.stat(tmp_path / "f").st_uid, os.stat(tmp_path / "f").st_gid) == (2**32 - 2,) * 2


def test_rootless_option_as_root_skips_devices_and_chown(root: None, tmp_path: Path) -> None:
    result = apply_layer(tmp_path, io.BytesIO(tar(DEV("dev/null"), F("f", b"", uid=1000))),
                         ApplyOptions(rootless=True))
    assert not (tmp_path / "dev/null").exists()
    assert os.lstat(tmp_path / "f").st_uid == 0
    assert len(result.warnings) == 2


# -- OVERLAY format -----------------------------------------------------------------
def _layers(tmp_path: Path, *tars: bytes) -> list[Path]:
    """Apply tars as a stack of overlay-format dirs; returns them bottom → top."""
    return apply_snapshots(tmp_path, list(tars), rootless=False)


LOWER = tar(D("etc", 0o750, uid=7, gid=8), F("etc/a", b"a"), F("etc/b", b"b"),
            D("etc/sub"), F("etc/sub/c", b"c"), F("bin/tool", b"tool", 0o755, uid=3),
            D("var"), F("var/log", b"l"))


def test_overlay_whiteouts_and_opaque_dirs(root: None, tmp_path: Path) -> None:
    _, top = _layers(tmp_path, LOWER, tar(F("etc/.wh.a"), F(".wh.var"), D("etc/sub"),
                                          F("etc/sub/.wh..wh..opq"), F("etc/sub/new", b"n")))
    assert _is_whiteout(top / "etc/a") and _is_whiteout(top / "var")
    assert _opaque(top / "etc/sub") and not _opaque(top / "etc")
    assert (top / "etc/sub/new").read_bytes() == b"n"


@pytest.mark.parametrize("marker_first", [True, False])
def test_no_plain_whiteouts_inside_opaque_dir(root: None, tmp_path: Path,
                                              marker_first: bool) -> None:
    marker, plain = [F("etc/.wh..wh..opq")], [F("etc/.wh.b"), F("etc/sub/.wh.c")]
    _, top = _layers(tmp_path, LOWER,
                     tar(D("etc"), *(marker + plain if marker_first else plain + marker)))
    assert _opaque(top / "etc")
    assert not os.path.lexists(top / "etc/b") and not os.path.lexists(top / "etc/sub/c")


def test_dir_whited_out_and_recreated_is_opaque(root: None, tmp_path: Path) -> None:
    _, top = _layers(tmp_path, LOWER, tar(F(".wh.etc"), D("etc"), F("etc/fresh", b"f")))
    assert _opaque(top / "etc") and (top / "etc/fresh").read_bytes() == b"f"


def test_implicit_parent_copies_lower_attributes(root: None, tmp_path: Path) -> None:
    low, top = _layers(tmp_path, LOWER, tar(F("etc/sub/added", b"x")))
    for rel in ("etc", "etc/sub"):
        a, b = os.lstat(low / rel), os.lstat(top / rel)
        assert (a.st_mode, a.st_uid, a.st_gid, a.st_mtime_ns) == \
            (b.st_mode, b.st_uid, b.st_gid, b.st_mtime_ns), rel


def test_hardlink_to_lower_file_is_copied_up(root: None, tmp_path: Path) -> None:
    low, top = _layers(tmp_path, LOWER, tar(H("bin/tool-link", "bin/tool")))
    up, link = os.lstat(top / "bin/tool"), os.lstat(top / "bin/tool-link")
    assert up.st_ino == link.st_ino and (top / "bin/tool-link").read_bytes() == b"tool"
    assert (up.st_mode, up.st_uid) == (os.lstat(low / "bin/tool").st_mode, 3)


def test_overlay_xattrs_from_the_tar_are_escaped(root: None, tmp_path: Path) -> None:
    (top,) = _layers(tmp_path, tar(D("d", xattrs={"trusted.overlay.opaque": "y"})))
    assert not _opaque(top / "d")
    assert os.getxattr(top / "d", "trusted.overlay.overlay.opaque") == b"y"


# -- snapshots and real overlay mounts ------------------------------------------------
def _mounted_manifest(lowers: list[Path], container: Path) -> dict:
    def body() -> dict:
        rootfs, mounted = mount_rootfs(lowers, container)
        assert mounted
        try:
            return tree_manifest(rootfs)
        finally:
            umount(rootfs)
    return in_mount_ns(body)


def _flat_manifest(rootfs: Path) -> dict:
    return json.loads(json.dumps(tree_manifest(rootfs)))


@pytest.fixture
def overlay(root: None) -> None:
    need(overlay_supported(), "overlayfs is not available in this kernel")


def test_overlay_mount_of_snapshots_equals_flattened_unpack(
        overlay: None, fixture_layout: Path, tmp_path: Path) -> None:
    store = Store(fixture_layout)
    manifest, config = image_from_layout(store, "multilayer")
    unpack_rootfs(store, manifest, config, tmp_path / "flat", rootless=False)
    snaps = SnapshotStore(tmp_path / "snapshots", rootless=False)
    lowers = snaps.unpack_image(store, manifest, config)
    expected = _flat_manifest(tmp_path / "flat")
    expected.pop(".")
    got = _mounted_manifest(lowers, tmp_path / "c1")
    got.pop(".")
    assert diff_manifests(expected, got) == []
    # The user-space merge (no-overlay fallback) shows the same tree.
    merge_snapshots(lowers, tmp_path / "merged", rootless=False)
    merged = _flat_manifest(tmp_path / "merged")
    merged.pop(".")
    assert diff_manifests(expected, merged) == []
    assert "data/to-delete.txt" not in got and "data/opaque/old1.txt" not in got
    assert "data/opaque/new.txt" in got


def test_second_container_reuses_snapshots(overlay: None, fixture_layout: Path,
                                           tmp_path: Path) -> None:
    store = Store(fixture_layout)
    manifest, config = image_from_layout(store, "busybox")
    snaps = SnapshotStore(tmp_path / "snapshots", rootless=False)
    first = snaps.unpack_image(store, manifest, config)
    stamp = [os.stat(p / "..").st_mtime_ns for p in first]
    assert snaps.unpack_image(store, manifest, config) == first
    assert [os.stat(p / "..").st_mtime_ns for p in first] == stamp
    a = _mounted_manifest(first, tmp_path / "c1")
    b = _mounted_manifest(first, tmp_path / "c2")
    # The merged root's attributes are each container's own fresh upper dir (its mtime is
    # the container's creation time), so only the trees below it must match.
    a.pop(".")
    b.pop(".")
    assert a == b and "bin/busybox" in a


def test_image_with_150_layers_mounts(overlay: None, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    layers = [tar_of({f"layer{i:03d}": f"{i}".encode(), "shared": f"top={i}".encode()})
              for i in range(150)]
    manifest, config = build_image(store, layers, how="none")
    lowers = SnapshotStore(tmp_path / "snapshots", rootless=False).unpack_image(
        store, manifest, config)
    # Absolute lowerdirs cannot fit one page: the short-name path is what's tested.
    assert len(overlay_options([str(p) for p in lowers], None, None)) > MAX_MOUNT_DATA

    def body() -> dict:
        rootfs, _ = mount_rootfs(lowers, tmp_path / "c")
        try:
            return {"names": sorted(os.listdir(rootfs)),
                    "shared": (rootfs / "shared").read_text()}
        finally:
            umount(rootfs)

    got = in_mount_ns(body)
    assert got["names"] == sorted([f"layer{i:03d}" for i in range(150)] + ["shared"])
    assert got["shared"] == "top=149"
    assert not list((tmp_path / "c").glob(".lowers-*"))


def test_fallback_without_overlay_is_a_flattened_copy(root: None, fixture_layout: Path,
                                                      tmp_path: Path) -> None:
    store = Store(fixture_layout)
    manifest, config = image_from_layout(store, "multilayer")
    lowers = SnapshotStore(tmp_path / "snapshots", rootless=False).unpack_image(
        store, manifest, config)
    rootfs, mounted = mount_rootfs(lowers, tmp_path / "c", use_overlay=False)
    assert not mounted
    unpack_rootfs(store, manifest, config, tmp_path / "flat", rootless=False)
    a, b = _flat_manifest(tmp_path / "flat"), _flat_manifest(rootfs)
    a.pop(".")
    b.pop(".")
    assert diff_manifests(a, b) == []


def test_no_overlay_mounts_left_behind(root: None,
                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    # Every mount above happened in a child's namespace and died with it. Only this
    # session's temp dirs count: other pytest sessions on the machine may mount meanwhile.
    ours = f"{tmp_path_factory.getbasetemp()}/"
    assert not [m for m in read_mountinfo()
                if m.fstype == "overlay" and m.mount_point.startswith(ours)]


def test_userxattr_snapshots_mount_with_userxattr(overlay: None, tmp_path: Path) -> None:
    from ociimg.layers.overlay import mount_overlay

    layers = [tar(D("etc"), F("etc/a", b"a"), F("etc/b", b"b"), D("var"), F("var/x", b"x")),
              tar(F("etc/.wh.a"), F(".wh.var"), D("etc")),
              tar(D("etc"), F("etc/.wh..wh..opq"), F("etc/only", b"o"), D("var"))]
    store = Store(tmp_path / "store")
    manifest, config = build_image(store, layers)
    unpack_rootfs(store, manifest, config, tmp_path / "flat", rootless=False)
    dirs = apply_snapshots(tmp_path, layers, rootless=False, userxattr=True)
    assert not _opaque(dirs[2] / "etc")  # user.overlay.opaque, not trusted.*
    for sub in ("upper", "work", "rootfs"):
        (tmp_path / "c" / sub).mkdir(parents=True)

    def body() -> dict:
        target = tmp_path / "c" / "rootfs"
        mount_overlay(dirs, tmp_path / "c/upper", tmp_path / "c/work", target, userxattr=True)
        try:
            return tree_manifest(target)
        finally:
            umount(target)

    got, want = in_mount_ns(body), _flat_manifest(tmp_path / "flat")
    got.pop(".")
    want.pop(".")
    assert diff_manifests(want, got) == []
    assert sorted(p for p in got if p.startswith("etc/")) == ["etc/only"]
