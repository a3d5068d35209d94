"""The safe applier without privileges: entry types, whiteouts, hostile tars.

Everything here runs as an ordinary user. When the suite runs as root, the
rootless behaviour is exercised by passing ``rootless=True`` (chown and mknod are
skipped with warnings), so these tests mean the same thing either way.
"""

from __future__ import annotations

import hashlib
import io
import os
import resource
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from ociimg.errors import InvalidDocument, UnsafeArchive
from ociimg.layers.apply import ApplyOptions, OnDiskFormat, apply_layer
from ociimg.layers.flatten import merge_snapshots
from tests.conftest import can_make_whiteout, need
from tests.layerimage import apply_snapshots
from tests.tarbuild import (
    DEV,
    GID,
    HOSTILE,
    MTIME,
    RESOLVERS,
    UID,
    D,
    F,
    H,
    L,
    layer_tars,
    make_info,
    need_resolver,
    pax_archives,
    pax_size_archive,
    tar,
    with_canary,
)
from tests.treewalk import diff_manifests, make_canary, tree_manifest


@pytest.fixture(params=RESOLVERS)
def resolver(request: pytest.FixtureRequest) -> str:
    need_resolver(request.param)
    return request.param


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


def apply(root: Path, data: bytes, resolver: str = "auto", **kw):
    kw.setdefault("rootless", True)
    return apply_layer(root, io.BytesIO(data), ApplyOptions(resolver=resolver, **kw))


# -- entry types --------------------------------------------------------------------
def test_entry_types_and_attributes(rootfs: Path, resolver: str) -> None:
    long_dir = "d" * 120
    result = apply(rootfs, tar(
        D("etc", 0o755), F("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644),
        F("bin/su", b"\x7fELF", 0o4755), D("tmp", 0o1777), D("shared", 0o2775),
        L("bin/sh", "busybox"), F("bin/busybox", b"BB" * 5000, 0o755), H("bin/ls", "bin/busybox"),
        L("abs", "/etc/passwd"), _fifo("run/fifo"),
        D(long_dir), F(f"{long_dir}/{'f' * 150}", b"long"),
    ), resolver)
    m = tree_manifest(rootfs)
    assert m["etc/passwd"]["sha256"] == hashlib.sha256(b"root:x:0:0::/root:/bin/sh\n").hexdigest()
    assert m["bin/su"]["mode"] == oct(0o4755)
    assert m["tmp"]["mode"] == oct(0o1777) and m["tmp"]["type"] == "dir"
    assert m["shared"]["mode"] == oct(0o2775)
    assert m["bin/sh"] == {"type": "symlink", "target": "busybox", "uid": UID, "gid": GID,
                           "mtime": MTIME}
    assert m["abs"]["target"] == "/etc/passwd"
    assert m["bin/ls"]["link"] == "bin/busybox"
    assert m["run/fifo"]["type"] == "fifo"
    assert m[f"{long_dir}/{'f' * 150}"]["size"] == 4
    # Implicit parents are 0755; every explicit entry keeps its tar mtime, dirs too
    # (set after their children were written).
    assert m["bin"]["mode"] == oct(0o755)
    for path in ("etc", "tmp", "etc/passwd", "bin/sh", "bin/su", long_dir):
        assert m[path]["mtime"] == MTIME, path
    assert result.entries == 12


def _fifo(name: str):
    return make_info(name, tarfile.FIFOTYPE, 0o600), None


def test_gnu_long_names(rootfs: Path) -> None:
    name = "/".join(["x" * 60] * 5) + "/file"
    apply(rootfs, tar(F(name, b"gnu"), L("l" * 200, "t" * 300), fmt=tarfile.GNU_FORMAT))
    assert (rootfs / name).read_bytes() == b"gnu"
    assert os.readlink(rootfs / ("l" * 200)) == "t" * 300


def test_pax_subsecond_mtime(rootfs: Path) -> None:
    info, data = F("f", b"x")
    info.pax_headers = {"mtime": "1600000000.123456789"}
    apply(rootfs, tar((info, data)))
    assert os.lstat(rootfs / "f").st_mtime_ns == 1_600_000_000_123_456_789


def test_xattrs_user_applied_selinux_and_overlay_dropped(rootfs: Path) -> None:
    value = "b\udcff\x00in"  # binary bytes as tarfile exposes them (surrogateescape)
    result = apply(rootfs, tar(F("f", b"", xattrs={
        "user.plain": "v", "user.binary": value, "security.selinux": "system_u:object_r:x",
        "trusted.overlay.opaque": "y"})))
    assert os.getxattr(rootfs / "f", "user.plain") == b"v"
    assert os.getxattr(rootfs / "f", "user.binary") == b"b\xff\x00in"
    names = os.listxattr(rootfs / "f")
    assert "security.selinux" not in names or os.getxattr(
        rootfs / "f", "security.selinux") != b"system_u:object_r:x"
    assert not [n for n in names if n.startswith("trusted.overlay")]
    assert any("overlayfs xattr" in w for w in result.warnings)


def test_sparse_file_content(rootfs: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.seek(1 << 20)
        f.write(b"middle")
        f.seek(3 << 20)
        f.write(b"end")
    for fmt in ("gnu", "pax"):
        out = tmp_path / f"sparse-{fmt}.tar"
        subprocess.run(["tar", f"--format={fmt}", "--sparse", "-cf", out, "-C", src, "sparse"],
                       check=True)
        target = rootfs / fmt
        target.mkdir()
        apply(target, out.read_bytes())
        assert (target / "sparse").read_bytes() == (src / "sparse").read_bytes(), fmt


def test_sparse_holes_stay_holes(rootfs: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    logical = 64 << 30  # 64 GiB logical, a few KiB of tar
    with open(src / "huge", "wb") as f:
        f.write(b"start")
        f.seek(logical - 3)
        f.write(b"end")
    out = tmp_path / "huge.tar"
    subprocess.run(["tar", "--format=pax", "--sparse", "-cf", out, "-C", src, "huge"], check=True)
    assert out.stat().st_size < 1 << 20
    apply(rootfs, out.read_bytes())
    st = os.stat(rootfs / "huge")
    assert st.st_size == logical and st.st_blocks * 512 < 1 << 20
    with open(rootfs / "huge", "rb") as f:
        assert f.read(5) == b"start"
        f.seek(logical - 3)
        assert f.read() == b"end"


def test_rootless_skips_chown_and_devices_with_one_warning_each(rootfs: Path) -> None:
    result = apply(rootfs, tar(
        F("a", b"1", uid=1234, gid=1234), F("b", b"2", uid=4321, gid=4321),
        DEV("dev/null"), DEV("dev/sda", tarfile.BLKTYPE, 8, 0),
    ), rootless=True)
    assert (rootfs / "a").read_bytes() == b"1" and (rootfs / "b").read_bytes() == b"2"
    assert not (rootfs / "dev/null").exists() and not (rootfs / "dev/sda").exists()
    assert len([w for w in result.warnings if "ownership" in w]) == 1
    assert len([w for w in result.warnings if "device" in w]) == 1


# -- replacing existing paths (layer.md "Changesets") -------------------------------
@pytest.mark.parametrize("p", ["", "nested/deeper/"])
def test_entries_over_existing_paths(rootfs: Path, resolver: str, p: str) -> None:
    apply(rootfs, tar(F(f"{p}file-then-dir", b"x"), D(f"{p}dir-then-file"),
                      F(f"{p}dir-then-file/child"), D(f"{p}keep", 0o700),
                      F(f"{p}keep/old", b"old"), F(f"{p}parent", b"not a dir"),
                      L(f"{p}link-then-file", "keep")),
          resolver)
    apply(rootfs, tar(D(f"{p}file-then-dir"), F(f"{p}dir-then-file", b"now a file"),
                      D(f"{p}keep", 0o750), F(f"{p}keep/new", b"new"),
                      F(f"{p}parent/child", b"c"), F(f"{p}link-then-file", b"file")),
          resolver)
    m = tree_manifest(rootfs)
    assert m[f"{p}file-then-dir"]["type"] == "dir"
    assert m[f"{p}dir-then-file"]["type"] == "file" and f"{p}dir-then-file/child" not in m
    assert m[f"{p}keep"]["mode"] == oct(0o750)
    assert f"{p}keep/old" in m and f"{p}keep/new" in m
    assert m[f"{p}parent"]["type"] == "dir" and m[f"{p}parent/child"]["type"] == "file"
    assert m[f"{p}link-then-file"]["type"] == "file"
    assert m[f"{p}keep"]["type"] == "dir"  # not written through the old symlink


def test_hardlink_over_existing_and_before_target(rootfs: Path, resolver: str) -> None:
    apply(rootfs, tar(F("a", b"A"), F("link", b"old")), resolver)
    apply(rootfs, tar(H("link", "a"), H("early", "late"), F("late", b"L")), resolver)
    assert os.stat(rootfs / "link").st_ino == os.stat(rootfs / "a").st_ino
    assert os.stat(rootfs / "early").st_ino == os.stat(rootfs / "late").st_ino


def test_hardlink_to_lower_layer_file_in_dir_format(rootfs: Path) -> None:
    apply(rootfs, tar(F("usr/bin/python3.11", b"py")))
    apply(rootfs, tar(H("usr/bin/python3", "usr/bin/python3.11")))
    assert (rootfs / "usr/bin/python3").read_bytes() == b"py"


@pytest.mark.parametrize("members, message", [
    ((H("l", "missing"),), "does not exist"),
    ((D("d"), H("l", "d")), "is a directory"),
    ((F(".wh.", b""),), "whiteout without a name"),
    ((L(".", "/etc"),), "root must stay a directory"),
    ((F("./", b"x"),), "root must stay a directory"),
])
def test_invalid_entries_are_refused(rootfs: Path, members, message: str) -> None:
    with pytest.raises(UnsafeArchive, match=message):
        apply(rootfs, tar(*members))


@pytest.mark.parametrize("ids", [{"uid": 2**32 - 1}, {"gid": 2**32 - 1}, {"uid": 2**32},
                                 {"gid": 2**40}, {"uid": -5}])
def test_out_of_range_ids_are_refused_not_wrapped(rootfs: Path, ids: dict) -> None:
    # Refused even when ownership is not applied: the layer is hostile or broken.
    with pytest.raises(UnsafeArchive, match="out of range"):
        apply(rootfs, tar(F("suid", b"x", 0o4755, **ids), fmt=tarfile.GNU_FORMAT))
    assert not (rootfs / "suid").exists()


@pytest.mark.parametrize("fmt", [OnDiskFormat.DIR, OnDiskFormat.OVERLAY])
def test_thousands_of_dirs_do_not_exhaust_fds(tmp_path: Path, fmt: OnDiskFormat) -> None:
    # Each resolver caches ~128 dir fds; those it retires must be closed as the layer
    # goes, in the end-of-layer time restore too, and in the lower layers' resolvers.
    n = 1500
    lower = tar(*[F(f"d{i}/sub/f", b"x") for i in range(n)])
    upper = tar(*[m for i in range(n) for m in (D(f"d{i}/sub"), F(f"d{i}/sub/g", b"y"))])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = open_fds()
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(before) + 1 + 350, hard))
    try:
        if fmt is OnDiskFormat.DIR:
            root = tmp_path / "root"
            root.mkdir()
            apply(root, lower)
            apply(root, upper)
        else:
            apply_snapshots(tmp_path, [lower, upper], rootless=True, userxattr=True)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    # Under the limit is not enough: every fd the layers opened is closed again.
    after = open_fds()
    assert len(after) == len(before), f"fds left open: {sorted(after.items() - before.items())}"


def open_fds() -> dict[int, str]:
    """This process's open fds and what they name, but the listing's own."""
    with os.scandir("/proc/self/fd") as listing:
        fds = {int(entry.name): os.readlink(entry.path) for entry in listing}
    return {fd: target for fd, target in fds.items() if target != f"/proc/{os.getpid()}/fd"}


# -- whiteouts in DIR format -------------------------------------------------------
LOWER = tar(D("etc"), F("etc/a", b"a"), F("etc/b", b"b"), D("etc/sub"),
            F("etc/sub/deep", b"d"), D("var"), F("var/log", b"l"), F("keep", b"k"))


def _lower(root: Path) -> None:
    apply(root, LOWER)


def test_whiteouts_remove_lower_entries(rootfs: Path, resolver: str) -> None:
    _lower(rootfs)
    apply(rootfs, tar(F("etc/.wh.a"), F(".wh.var"), F(".wh.nonexistent")), resolver)
    m = tree_manifest(rootfs)
    assert "etc/a" not in m and "var" not in m and "var/log" not in m
    assert "etc/b" in m and "keep" in m


@pytest.mark.parametrize("opaque_first", [True, False])
def test_opaque_dir_hides_lower_but_keeps_this_layer(rootfs: Path, resolver: str,
                                                     opaque_first: bool) -> None:
    _lower(rootfs)
    own = [D("etc"), F("etc/new", b"n"), D("etc/sub"), F("etc/sub/mine", b"m")]
    opq = [F("etc/.wh..wh..opq")]
    apply(rootfs, tar(*(opq + own if opaque_first else own + opq)), resolver)
    m = tree_manifest(rootfs)
    assert sorted(p for p in m if p.startswith("etc/")) == ["etc/new", "etc/sub", "etc/sub/mine"]
    assert "keep" in m


@pytest.mark.parametrize("whiteout_first", [True, False])
@pytest.mark.parametrize("explicit_dir", [True, False])
def test_dir_whited_out_and_recreated_in_same_layer(rootfs: Path, whiteout_first: bool,
                                                    explicit_dir: bool) -> None:
    # layer.md: the whiteout hides the lower etc/ and the layer's own etc/ stays,
    # whichever comes first in the tar.
    _lower(rootfs)
    own = [D("etc")] * explicit_dir + [F("etc/fresh", b"f")]
    wh = [F(".wh.etc")]
    apply(rootfs, tar(*(wh + own if whiteout_first else own + wh)))
    m = tree_manifest(rootfs)
    assert sorted(p for p in m if p.startswith("etc")) == ["etc", "etc/fresh"]


@pytest.mark.parametrize("members", [
    [F(".wh.etc"), D("etc"), F("etc/fresh", b"f")],
    [D("etc"), F("etc/fresh", b"f"), F(".wh.etc")],
    [F("etc/fresh", b"f"), F(".wh.etc")],
    [F("etc/.wh..wh..opq"), D("etc"), F("etc/fresh", b"f"), D("etc/sub")],
    [D("etc"), F("etc/fresh", b"f"), D("etc/sub"), F("etc/.wh..wh..opq")],
    [F("etc/.wh..wh..opq"), F("etc/sub/.wh.deep"), F("etc/sub/x")],
], ids=["wh-first", "wh-last", "wh-last-implicit", "opq-first", "opq-last", "opq-nested-wh"])
def test_snapshots_of_whiteout_orders_merge_like_a_flattened_unpack(
        tmp_path: Path, members: list) -> None:
    need(can_make_whiteout(tmp_path), "kernel refuses 0:0 whiteout mknod here")
    flat = tmp_path / "flat"
    flat.mkdir()
    _lower(flat)
    top = tar(*members)
    apply(flat, top)
    dirs = _apply_snapshots(tmp_path, [LOWER, top])
    merge_snapshots(dirs, tmp_path / "merged", rootless=True, userxattr=True)
    # Dir mtimes left out: dirs without a tar entry are dated when each tree made them.
    expected = tree_manifest(flat, dir_mtimes=False)
    got = tree_manifest(tmp_path / "merged", dir_mtimes=False)
    assert diff_manifests(expected, got) == []
    assert "etc/a" not in got and "etc/sub/deep" not in got and "keep" in got


def test_whiteout_does_not_hide_same_layer_entry(rootfs: Path) -> None:
    apply(rootfs, tar(F("x", b"same layer"), F(".wh.x")))
    assert (rootfs / "x").read_bytes() == b"same layer"


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layer_never_escapes(tmp_path: Path, resolver: str, case: str) -> None:
    canary = make_canary(tmp_path)
    before = tree_manifest(tmp_path, mtimes=True)
    root = tmp_path / "root"
    root.mkdir()
    for layer in HOSTILE[case]:
        try:
            apply(root, with_canary(layer, canary), resolver)
        except (UnsafeArchive, InvalidDocument):
            break
    after = tree_manifest(tmp_path)
    for path, entry in before.items():
        if path == "." or path.startswith("root"):
            continue
        assert after.get(path) == entry, f"{case}: {path} changed"
    assert sorted(p for p in after if not p.startswith("root") and p != ".") == \
        sorted(p for p in before if not p.startswith("root") and p != ".")
    assert (canary / "secret").read_text() == "do not touch\n"


def _apply_snapshots(base: Path, layers: list[bytes], resolver: str = "auto") -> list[Path]:
    return apply_snapshots(base, layers, rootless=True, userxattr=True, resolver=resolver)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_snapshots_never_escape(tmp_path: Path, resolver: str, case: str) -> None:
    # OVERLAY format: layer N+1 sees layer N's symlinks only through the merged view,
    # which must clamp them at the image root like the DIR format's resolver.
    need(can_make_whiteout(tmp_path), "kernel refuses 0:0 whiteout mknod here")
    canary = make_canary(tmp_path)
    before = tree_manifest(canary, mtimes=True)
    root = tmp_path / "root"
    root.mkdir()
    try:
        dirs = _apply_snapshots(root, [with_canary(layer, canary) for layer in HOSTILE[case]],
                                resolver)
        merge_snapshots(dirs, root / "merged", rootless=True, userxattr=True)
    except (UnsafeArchive, InvalidDocument):
        pass
    assert diff_manifests(before, tree_manifest(canary, mtimes=True)) == []
    assert sorted(os.listdir(tmp_path)) == ["canary", "root"]


# A symlink from a lower layer, then a later layer writing through it: both formats
# must give the tree a flattened unpack gives (merged-usr images: lib -> usr/lib).
THROUGH_LOWER_SYMLINK = {
    "file-under-symlink": [tar(D("usr"), D("usr/lib"), F("usr/lib/libc", b"c"),
                               L("lib", "usr/lib")), tar(F("lib/libnew", b"n"))],
    "file-under-abs-symlink": [tar(D("usr"), D("usr/lib"), L("lib", "/usr/lib")),
                               tar(F("lib/deep/libnew", b"n"))],
    "hardlink-target-via-symlink": [tar(D("usr"), D("usr/lib"), F("usr/lib/libc", b"c"),
                                        L("lib", "usr/lib")), tar(H("x", "lib/libc"))],
    "whiteout-via-symlink": [tar(D("usr"), D("usr/lib"), F("usr/lib/libc", b"c"),
                                 L("lib", "usr/lib")), tar(F("lib/.wh.libc"))],
    "opaque-via-symlink": [tar(D("usr"), D("usr/lib"), F("usr/lib/libc", b"c"),
                               L("lib", "usr/lib")), tar(F("lib/.wh..wh..opq"), F("lib/n"))],
    "symlinks-in-two-layers": [tar(D("usr"), D("usr/lib"), L("lib", "usr/lib")),
                               tar(L("usr/lib/x", "/opt")), tar(F("lib/x/f", b"f"))],
    "dotdot-in-lower-target": [tar(D("a"), D("a/b"), L("a/b/up", "../../../..")),
                               tar(F("a/b/up/top", b"t"))],
    "upper-dir-hides-lower-symlink": [tar(D("t"), L("lib", "t")),
                                      tar(D("lib"), F("lib/own", b"o"))],
}


@pytest.mark.parametrize("case", sorted(THROUGH_LOWER_SYMLINK))
def test_snapshots_follow_lower_symlinks_like_a_flattened_unpack(tmp_path: Path,
                                                                  case: str) -> None:
    need(can_make_whiteout(tmp_path), "kernel refuses 0:0 whiteout mknod here")
    layers = THROUGH_LOWER_SYMLINK[case]
    flat = tmp_path / "flat"
    flat.mkdir()
    for data in layers:
        apply(flat, data)
    dirs = _apply_snapshots(tmp_path, layers)
    merge_snapshots(dirs, tmp_path / "merged", rootless=True, userxattr=True)
    # Dir mtimes left out: dirs without a tar entry are dated when each tree made them.
    expected = tree_manifest(flat, dir_mtimes=False)
    got = tree_manifest(tmp_path / "merged", dir_mtimes=False)
    assert diff_manifests(expected, got) == []


def test_dir_mtime_restored_when_written_through_a_symlink(rootfs: Path) -> None:
    apply(rootfs, tar(D("usr"), D("usr/lib", mtime=1_000), L("lib", "usr/lib")))
    apply(rootfs, tar(F("lib/new", b"n")))
    assert os.stat(rootfs / "usr/lib").st_mtime_ns == 1_000 * 1_000_000_000


@pytest.mark.parametrize("members", [
    [F("a/" * 300 + "f", b"x")],
    [L("l", "/".join(["a"] * 200)), F("l/" + "b/" * 100 + "f", b"x")],
    [H("h", "a/" * 300 + "f")],
], ids=["name", "through-symlink", "hardlink-target"])
def test_absurdly_deep_trees_are_refused(rootfs: Path, resolver: str, members: list) -> None:
    # Deeper trees would end in a RecursionError when removed, merged or copied.
    with pytest.raises(UnsafeArchive, match="nested deeper than 256"):
        apply(rootfs, tar(*members), resolver)
    apply(rootfs, tar(F("ok/" * 250 + "f", b"x")), resolver)
    apply(rootfs, tar(F(".wh.ok")), resolver)  # and removed again without recursing out
    assert not (rootfs / "ok").exists()


def test_absurdly_deep_trees_through_lower_symlinks_are_refused(tmp_path: Path) -> None:
    need(can_make_whiteout(tmp_path), "kernel refuses 0:0 whiteout mknod here")
    lower = tar(L("l", "/".join(["a"] * 200)))
    with pytest.raises(UnsafeArchive, match="nested deeper than 256"):
        _apply_snapshots(tmp_path, [lower, tar(F("l/" + "b/" * 100 + "f", b"x"))])


def test_dotdot_is_refused_with_clear_error(rootfs: Path) -> None:
    with pytest.raises(UnsafeArchive, match=r"'\.\.' path component"):
        apply(rootfs, tar(F("../x", b"")))


def test_absolute_names_land_inside_root(rootfs: Path, resolver: str) -> None:
    apply(rootfs, tar(F("/etc/hostname", b"h"), L("l", "/"), F("l/via-root-link", b"v")),
          resolver)
    assert (rootfs / "etc/hostname").read_bytes() == b"h"
    assert (rootfs / "via-root-link").read_bytes() == b"v"
    assert os.readlink(rootfs / "l") == "/"


def test_oversized_pax_header_is_refused(rootfs: Path) -> None:
    info, data = F("f", b"")
    info.pax_headers = {"comment": "x" * (2 << 20)}
    with pytest.raises(UnsafeArchive, match="meta header"):
        apply(rootfs, tar((info, data)))


# -- stream-level integrity --------------------------------------------------------
def test_diff_id_covers_bytes_after_the_tar_end(rootfs: Path) -> None:
    data = tar(F("f", b"x")) + b"\0" * 4096 + b"trailing junk"
    result = apply(rootfs, data)
    assert str(result.diff_id) == "sha256:" + hashlib.sha256(data).hexdigest()
    assert result.size == len(data)


def test_truncated_tar_is_one_clear_error(rootfs: Path) -> None:
    data = tar(F("big", os.urandom(50_000)))
    with pytest.raises(InvalidDocument, match="layer tar"):
        apply(rootfs, data[:20_000])


# -- OVERLAY format, as far as it works without privileges ------------------------


def test_overlay_format_whiteouts_are_char_devices(rootfs: Path, tmp_path: Path) -> None:
    need(can_make_whiteout(tmp_path), "kernel refuses 0:0 whiteout mknod here")
    apply(rootfs, tar(F("etc/.wh.passwd"), F(".wh.var"), F("a", b"a"), F(".wh.a")),
          format=OnDiskFormat.OVERLAY)
    for path in ("etc/passwd", "var"):
        st = os.lstat(rootfs / path)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, path
    assert (rootfs / "a").read_bytes() == b"a"  # same-layer entries are not whited out


# -- the fast header decoder agrees with tarfile's ---------------------------------
def _headers() -> list[bytes]:
    info, _ = F("dir/file", b"x" * 10, 0o4755, uid=1000, gid=2000)
    big, _ = F("big", b"", uid=1 << 30)
    old_dir, _ = D("olddir/")
    old_dir.type = tarfile.AREGTYPE
    return [
        info.tobuf(tarfile.USTAR_FORMAT), info.tobuf(tarfile.GNU_FORMAT),
        DEV("dev/null")[0].tobuf(tarfile.USTAR_FORMAT),
        L("l", "target")[0].tobuf(tarfile.GNU_FORMAT),
        F("p/" * 60 + "f")[0].tobuf(tarfile.USTAR_FORMAT)[-512:],  # ustar prefix field
        big.tobuf(tarfile.GNU_FORMAT),  # base-256 uid
        old_dir.tobuf(tarfile.USTAR_FORMAT),
        b"\0" * 512, b"", b"\0" * 100,
    ]


def _decode(fn, buf: bytes):  # type: ignore[no-untyped-def]
    from ociimg.layers.tarinfo import LayerTarInfo
    try:
        obj = fn(LayerTarInfo, buf, "utf-8", "surrogateescape")
    except Exception as exc:  # noqa: BLE001 - compared by type
        return type(exc).__name__
    return {k: getattr(obj, k) for k in ("name", "mode", "uid", "gid", "size", "mtime", "type",
                                          "linkname", "uname", "gname", "devmajor", "devminor",
                                          "chksum")}


def test_fast_header_decoder_matches_tarfile() -> None:
    import random

    from ociimg.layers.tarinfo import fast_frombuf
    slow = tarfile.TarInfo.frombuf.__func__
    rng = random.Random(1234)
    cases = _headers()
    for header in list(cases):
        for _ in range(300):  # byte mutations, with the checksum fixed up half the time
            buf = bytearray(header)
            if not buf:
                continue
            for _ in range(rng.randint(1, 4)):
                buf[rng.randrange(len(buf))] = rng.choice(b"0127 \0\x80\xffa/")
            if rng.random() < 0.5 and len(buf) == 512:
                buf[148:156] = b"        "
                buf[148:156] = b"%06o\0 " % sum(buf)
            cases.append(bytes(buf))
    for buf in cases:
        assert _decode(fast_frombuf, buf) == _decode(slow, buf), buf


# -- read-ahead: errors stop the producer; nothing hangs ---------------------------
def test_error_early_in_a_big_layer_stops_cleanly(rootfs: Path) -> None:
    data = tar(F("../evil", b""), *[F(f"f{i}", os.urandom(1 << 20)) for i in range(40)])
    with pytest.raises(UnsafeArchive):
        apply(rootfs, data)
    assert os.listdir(rootfs) == []


def test_truncated_inside_a_header(rootfs: Path) -> None:
    data = tar(F("a", b"x" * 1000), F("b", b"y"))
    cut = 512 + 1024 + 100  # inside the second header block
    with pytest.raises(InvalidDocument, match="layer tar"):
        apply(rootfs, data[:cut])


def test_read_errors_from_the_stream_reach_the_caller(rootfs: Path) -> None:
    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
            raise OSError(5, "simulated EIO")

    with pytest.raises(OSError, match="simulated EIO"):
        apply_layer(rootfs, Broken(), ApplyOptions(rootless=True))


def test_garbage_instead_of_the_end_blocks_is_refused(rootfs: Path) -> None:
    data = tar(F("a", b"x"))
    body = data[:1024]  # header + data block, without the end-of-archive blocks
    with pytest.raises(InvalidDocument, match="no end-of-archive block"):
        apply(rootfs, body + b"\x01" * 1024)


@pytest.mark.parametrize("zeros", [512, 1024, 10240])
def test_empty_layer_is_fine(rootfs: Path, zeros: int) -> None:
    result = apply(rootfs, b"\0" * zeros)
    assert result.entries == 0 and os.listdir(rootfs) == []


def test_bomb_caps(rootfs: Path) -> None:
    many = tar(*[F(f"f{i}", b"") for i in range(10)])
    with pytest.raises(UnsafeArchive, match="more than 5 entries"):
        apply(rootfs, many, max_entries=5)
    big = tar(F("a", b"x" * 4000), F("b", b"y" * 4000))
    with pytest.raises(UnsafeArchive, match="files exceed 5000 bytes at 'b'"):
        apply(rootfs, big, max_file_bytes=5000)
    apply(rootfs, big, max_file_bytes=8000)


def _members(archive: bytes, tarinfo: type[tarfile.TarInfo]) -> list[object]:
    out: list[object] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:", tarinfo=tarinfo,
                          encoding="utf-8", errors="surrogateescape") as tf:
            for m in tf:
                out.append((m.get_info(), dict(m.pax_headers), m.offset, m.offset_data))
            out.append(dict(tf.pax_headers))
    except tarfile.TarError as exc:
        out.append(type(exc).__name__)
    return out


def test_pax_record_splitter_matches_tarfile() -> None:
    from ociimg.layers.tarinfo import LayerTarInfo
    for archive in pax_archives():
        assert _members(archive, LayerTarInfo) == _members(archive, tarfile.TarInfo)


# -- the layer reader's PAX shortcut (LayerTarInfo.fromtarfile) agrees with tarfile ------
class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile's own reader plus the one deliberate difference: the meta-header bound."""

    def _proc_member(self, tf):  # type: ignore[no-untyped-def]
        from ociimg.layers.tarinfo import _META_TYPES, MAX_META_HEADER
        if self.type in _META_TYPES and self.size > MAX_META_HEADER:
            raise UnsafeArchive(f"tar header for {self.name!r}: {self.size}-byte meta header")
        return super()._proc_member(tf)


def _members_with_sparse(archive: bytes, tarinfo: type[tarfile.TarInfo]) -> list[object]:
    try:
        out = _members(archive, tarinfo)
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:", tarinfo=tarinfo,
                          encoding="utf-8", errors="surrogateescape") as tf:
            out.append([(m.name, m.type, m.sparse, m.offset_data) for m in tf])
    except tarfile.TarError as exc:
        out.append(type(exc).__name__)
    except UnsafeArchive as exc:
        return [str(exc)]
    return out


def test_layer_reader_matches_tarfile_on_fixture_and_hostile_tars(fixture_layout: Path) -> None:
    from ociimg.layers.tarinfo import LayerTarInfo
    layers = layer_tars(fixture_layout)
    assert len(layers) >= 3
    archives = layers + [data for case in HOSTILE.values() for data in case]
    archives += pax_archives()
    archives.append(tar(*[F(f"d/{i}", b"x" * i) for i in range(50)]))
    archives.append(pax_size_archive())
    assert [m.name for m in tarfile.open(fileobj=io.BytesIO(archives[-1]))] == ["big", "after"]
    for archive in archives:
        assert _members_with_sparse(archive, LayerTarInfo) == \
            _members_with_sparse(archive, _BoundedTarInfo)


def test_layer_reader_matches_tarfile_on_mutated_pax_headers() -> None:
    import random

    from ociimg.layers.tarinfo import LayerTarInfo
    rng = random.Random(4321)
    bases = [tar(F("a/" + "n" * 120, b"data", 0o755, uid=70000), L("l", "t" * 120),
                 D("dir/"), F("big", b"z" * 700)),
             tar((tarfile.TarInfo("x"), b""), fmt=tarfile.PAX_FORMAT), pax_size_archive()]
    for base in bases:
        for _ in range(1500):
            buf = bytearray(base)
            for _ in range(rng.randint(1, 3)):
                # the first PAX header block, its records and the entry's own header
                buf[rng.randrange(1536)] = rng.choice(b"0127 =\n\0\x80\xffa/x")
            if rng.random() < 0.5:
                for at in (0, 1024):  # fix up both headers' checksums
                    buf[at + 148:at + 156] = b"        "
                    buf[at + 148:at + 156] = b"%06o\0 " % sum(buf[at:at + 512])
            data = bytes(buf)
            assert _members_with_sparse(data, LayerTarInfo) == \
                _members_with_sparse(data, _BoundedTarInfo), data[:1536]


# -- file data across prefetch chunks; a failing write names its entry ------------
def test_files_of_every_size_get_their_data_and_metadata(rootfs: Path) -> None:
    sizes = [0, 1, 511, 512, 65_536, 300_000, (1 << 20) - 1, (1 << 20) + 7, 4 << 20]
    members = [F(f"d/f{i}", os.urandom(size), 0o640 + i % 2, mtime=MTIME + i)
               for i, size in enumerate(sizes)]
    members.append(F("d/setuid", os.urandom(70_000), 0o4755))
    apply(rootfs, tar(*members))
    for info, data in members:
        st = os.lstat(rootfs / info.name)
        assert (rootfs / info.name).read_bytes() == data, info.name
        assert stat.S_IMODE(st.st_mode) == info.mode, info.name
        assert st.st_mtime_ns == info.mtime * 1_000_000_000, info.name


def test_a_failing_write_names_its_entry_and_leaks_no_fd(rootfs: Path) -> None:
    import signal
    members = [F(f"small{i}", b"s" * 100) for i in range(5)] + \
        [F("big", b"b" * 200_000)] + [F(f"after{i}", b"a") for i in range(100)]
    data = tar(*members)
    fds = len(os.listdir("/proc/self/fd"))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a core dump
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
    try:
        with pytest.raises(OSError, match="unpack entry big: File too large"):
            apply(rootfs, data)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    assert len(os.listdir("/proc/self/fd")) == fds

