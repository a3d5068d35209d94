"""Overlay mounts of snapshot stacks, and the flattened fallback.

The lowerdirs are the image's snapshot fs dirs, top first in the option string
(overlayfs.rst "Multiple lower layers"); each container gets a fresh upper and work
dir. Mount data must fit one page, which long absolute snapshot paths exceed at
~60 layers (containers/storage#1375, moby#26380): then a forked child chdirs into
a temp dir of short symlinks ("0", "1", …) and mounts with relative lowerdirs, as
containers/storage does with its "l/" short links. The child shares our mount
namespace, so the mount is ours; the symlinks can go once it is made (overlayfs
keeps references to the resolved dirs).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ociimg.events import NullProgress, Progress
from ociimg.layers.flatten import merge_snapshots
from ociimg.oskit import linux

MAX_MOUNT_DATA = os.sysconf("SC_PAGESIZE") - 1  # plus the NUL
_warned_no_overlay = False


def overlay_supported() -> bool:
    """Whether the kernel offers overlayfs (a probe, not an assumption)."""
    try:
        with open("/proc/filesystems") as f:
            if any(line.split()[-1:] == ["overlay"] for line in f):
                return True
    except OSError:
        return False
    return False


def _escape(path: str) -> str:
    if "," in path:
        raise ValueError(f"overlay path {path!r}: a ',' cannot be passed in mount options")
    return path.replace("\\", "\\\\").replace(":", "\\:")


def overlay_options(lowers_top_first: Sequence[str], upper: Path | None,
                    work: Path | None, *, userxattr: bool = False) -> str:
    opts = "lowerdir=" + ":".join(_escape(p) for p in lowers_top_first)
    if upper is not None and work is not None:
        opts += f",upperdir={_escape(str(upper))},workdir={_escape(str(work))}"
    if userxattr:  # snapshots made with ApplyOptions(userxattr=True)
        opts += ",userxattr"
    return opts


def mount_overlay(lowers: Sequence[Path], upper: Path | None, work: Path | None,
                  target: Path, flags: int = 0, *, userxattr: bool = False) -> None:
    """Mount ``lowers`` (bottom → top, as SnapshotStore.unpack_image returns them) on
    ``target``; without upper/work the mount is read-only."""
    if not lowers:
        raise ValueError("mount_overlay: no lower dirs")
    if upper is None or work is None:
        flags |= linux.MS.RDONLY
    top_first = [str(p) for p in reversed(lowers)]
    data = overlay_options(top_first, upper, work, userxattr=userxattr)
    if len(data.encode()) <= MAX_MOUNT_DATA:
        linux.mount("overlay", target, "overlay", flags, data)
        return
    _mount_with_short_lowers(top_first, upper, work, target, flags, userxattr)


def _mount_with_short_lowers(top_first: list[str], upper: Path | None, work: Path | None,
                             target: Path, flags: int, userxattr: bool,
                             extra: tuple[str, ...] = ()) -> None:
    base = (work or target).parent
    links = Path(tempfile.mkdtemp(dir=base, prefix=".lowers-"))
    try:
        for i, lower in enumerate(top_first):
            os.symlink(os.path.abspath(lower), links / str(i))
        data = overlay_options([str(i) for i in range(len(top_first))],
                               upper and upper.absolute(), work and work.absolute(),
                               userxattr=userxattr)
        data = ",".join((data, *extra))
        if len(data.encode()) > MAX_MOUNT_DATA:
            raise OSError(7, f"mount overlay on {target}: {len(top_first)} layers do not fit "
                          "the mount options even with short names")  # E2BIG
        _mount_in_child(links, data, target.absolute(), flags)
    finally:
        shutil.rmtree(links, ignore_errors=True)


def _mount_in_child(cwd: Path, data: str, target: Path, flags: int) -> None:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            os.chdir(cwd)  # relative lowerdirs resolve against the mounter's cwd
            linux.mount("overlay", target, "overlay", flags, data)
        except OSError as exc:
            code = exc.errno or 1
        except BaseException:
            code = 255
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise OSError(code, f"mount: {os.strerror(code)} (overlay on {target})", str(target))


def umount(target: Path) -> None:
    linux.umount2(target, 0)


@dataclass(frozen=True, slots=True)
class Mount:
    """containerd's ``mount.Mount``: what to mount for a snapshot, as data.

    ``type`` is "overlay" or "bind"; ``options`` are mount(8)-style words ("ro",
    "rbind", "lowerdir=…"), the flag words applied as flags and the rest passed as
    the mount data. Overlay lowerdirs are listed top first, escaped (``\\:``).
    """

    type: str
    source: str
    options: tuple[str, ...]

    def mount(self, target: Path) -> None:
        readonly = "ro" in self.options
        if self.type == "bind":
            _mount_bind(Path(self.source), target, readonly,
                        recursive="rbind" in self.options)
        elif self.type == "overlay":
            _mount_overlay_options(self.options, target, readonly)
        else:
            raise ValueError(f"mount {self.source} on {target}: unsupported type {self.type!r}")


_FLAG_WORDS = {"ro", "rw", "bind", "rbind"}


def _mount_bind(source: Path, target: Path, readonly: bool, *, recursive: bool) -> None:
    flags = linux.MS.BIND | (linux.MS.REC if recursive else 0)
    linux.mount(str(source), target, None, flags, None)
    if readonly:  # MS_RDONLY is ignored on the first bind mount (mount(2))
        try:
            linux.mount(None, target, None,
                        linux.MS.BIND | linux.MS.REMOUNT | linux.MS.RDONLY, None)
        except BaseException:
            linux.umount2(target, linux.MNT.DETACH)
            raise


def _mount_overlay_options(options: Sequence[str], target: Path, readonly: bool) -> None:
    flags = linux.MS.RDONLY if readonly else 0
    data = ",".join(o for o in options if o not in _FLAG_WORDS)
    if len(data.encode()) <= MAX_MOUNT_DATA:
        linux.mount("overlay", target, "overlay", flags, data)
        return
    fields = dict(o.split("=", 1) for o in options if "=" in o)
    lowers = [_unescape(p) for p in _split_lowers(fields.get("lowerdir", ""))]
    upper = Path(_unescape(fields["upperdir"])) if "upperdir" in fields else None
    work = Path(_unescape(fields["workdir"])) if "workdir" in fields else None
    extra = [o for o in options if o not in _FLAG_WORDS and not
             o.startswith(("lowerdir=", "upperdir=", "workdir="))]
    _mount_with_short_lowers(lowers, upper, work, target, flags, "userxattr" in extra,
                             tuple(o for o in extra if o != "userxattr"))


def _split_lowers(value: str) -> list[str]:
    """``lowerdir=`` split at its unescaped ':'."""
    out, cur, i = [], "", 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            cur += value[i:i + 2]
            i += 2
            continue
        if ch == ":":
            out.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    out.append(cur)
    return out


def _unescape(path: str) -> str:
    return re.sub(r"\\(.)", r"\1", path)


def mount_all(mounts: Sequence[Mount], target: Path) -> None:
    """Mount each of ``mounts`` on ``target`` in order (containerd's ``mount.All``)."""
    done = 0
    try:
        for m in mounts:
            m.mount(target)
            done += 1
    except BaseException:
        for _ in range(done):
            linux.umount2(target, linux.MNT.DETACH)
        raise


def unmount(target: Path) -> None:
    """Unmount everything stacked on ``target``; a path with nothing mounted is fine."""
    while True:
        try:
            linux.umount2(target, 0)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOENT):  # not (any more) a mount point
                return
            raise


def mount_rootfs(lowers: Sequence[Path], container_dir: Path,
                 progress: Progress = NullProgress(), *, use_overlay: bool | None = None,
                 userxattr: bool = False) -> tuple[Path, bool]:
    """A container's rootfs from snapshot dirs: ``container_dir``/rootfs, an overlay of
    ``lowers`` with a fresh upper/ and work/; where overlayfs is unavailable, a
    flattened copy instead (said once). ``userxattr``: the snapshots' flavour
    (``SnapshotStore.userxattr``). Returns (rootfs, mounted)."""
    global _warned_no_overlay
    rootfs = container_dir / "rootfs"
    if use_overlay is None:
        use_overlay = overlay_supported()
    if not use_overlay:
        if not _warned_no_overlay:
            progress.log("overlayfs is unavailable: each container gets a flattened copy")
            _warned_no_overlay = True
        merge_snapshots(lowers, rootfs, userxattr=userxattr)
        return rootfs, False
    for sub in ("upper", "work", "rootfs"):
        (container_dir / sub).mkdir(parents=True, exist_ok=True)
    mount_overlay(lowers, container_dir / "upper", container_dir / "work", rootfs,
                  userxattr=userxattr)
    return rootfs, True
