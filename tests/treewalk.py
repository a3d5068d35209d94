"""Tree-walk manifests: a comparable description of a directory tree.

Used by hostile-input tests (a canary tree must be unchanged), by the applier tests
(expected trees) and by the differential test against ``umoci unpack``. Nothing is
followed: symlinks are recorded as their targets, hardlinks as "same inode as <first
path>", devices by major/minor, files by the sha256 of their content.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "dir"), (stat.S_ISREG, "file"), (stat.S_ISLNK, "symlink"),
                       (stat.S_ISCHR, "char"), (stat.S_ISBLK, "block"), (stat.S_ISFIFO, "fifo"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "unknown"


def _content_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _xattrs(path: str) -> dict[str, str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {n: os.getxattr(path, n, follow_symlinks=False).hex() for n in sorted(names)}


def describe(path: str, rel: str, st: os.stat_result, inodes: dict[tuple[int, int], str], *,
             mtimes: bool, dir_mtimes: bool, xattrs: bool, skip_xattrs: tuple[str, ...]) -> dict:
    kind = _kind(st.st_mode)
    entry: dict = {"type": kind, "mode": oct(stat.S_IMODE(st.st_mode)),
                   "uid": st.st_uid, "gid": st.st_gid}
    if kind == "symlink":
        entry["target"] = os.readlink(path)
        entry.pop("mode")  # always 0777 on Linux
    elif kind in ("char", "block"):
        entry["rdev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
    if kind == "file":
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in inodes:
            entry["link"] = inodes[key]
        else:
            inodes[key] = rel
            entry["size"] = st.st_size
            entry["sha256"] = _content_hash(path)
    if mtimes and (kind != "dir" or dir_mtimes):
        entry["mtime"] = st.st_mtime_ns // 1_000_000_000
    if xattrs:
        found = {k: v for k, v in _xattrs(path).items()
                 if not any(k.startswith(p) for p in skip_xattrs)}
        if found:
            entry["xattrs"] = found
    return entry


def tree_manifest(root: str | os.PathLike[str], *, mtimes: bool = True,
                  dir_mtimes: bool = True, xattrs: bool = True,
                  skip_xattrs: tuple[str, ...] = ("security.selinux",)) -> dict[str, dict]:
    """{relative path: description} for everything under ``root`` (root itself is ".")."""
    root = os.fspath(root)
    out: dict[str, dict] = {}
    inodes: dict[tuple[int, int], str] = {}

    def visit(path: str, rel: str) -> None:
        st = os.lstat(path)
        out[rel] = describe(path, rel, st, inodes, mtimes=mtimes, dir_mtimes=dir_mtimes,
                            xattrs=xattrs, skip_xattrs=skip_xattrs)
        if stat.S_ISDIR(st.st_mode):
            for name in sorted(os.listdir(path)):
                visit(os.path.join(path, name), name if rel == "." else f"{rel}/{name}")

    visit(root, ".")
    return out


def diff_manifests(a: dict[str, dict], b: dict[str, dict]) -> list[str]:
    """Human-readable differences, empty when the trees match."""
    lines = []
    for path in sorted(set(a) | set(b)):
        if path not in a:
            lines.append(f"+ {path}: {b[path]}")
        elif path not in b:
            lines.append(f"- {path}: {a[path]}")
        elif a[path] != b[path]:
            lines.append(f"~ {path}: {a[path]} != {b[path]}")
    return lines


def make_canary(base: Path) -> Path:
    """A small tree beside a root that hostile layers try to reach."""
    canary = base / "canary"
    (canary / "sub").mkdir(parents=True)
    (canary / "secret").write_text("do not touch\n")
    (canary / "sub" / "file").write_text("still here\n")
    os.symlink("secret", canary / "link")
    return canary


