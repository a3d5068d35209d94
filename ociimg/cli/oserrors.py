"""An OSError that reached the CLI, as one line and a hint instead of ``[Errno 22]
umount2: Invalid argument``: what failed, on which path, and what to do."""

from __future__ import annotations

import errno
import os

_HINTS = {
    errno.ENOENT: ("no such file or directory", "check the path"),
    errno.EEXIST: ("already exists", "remove it first or choose another name"),
    errno.ENOTDIR: ("a part of the path is not a directory", "check each part of the path"),
    errno.EISDIR: ("is a directory", "give a file, or a path inside the directory"),
    errno.EACCES: ("permission denied", "run as root, or check the path's permissions"),
    errno.EPERM: ("operation not permitted", "run as root (ociimg needs CAP_SYS_ADMIN)"),
    errno.ENOSPC: ("no space left on device", "free space (ociimg gc, ociimg container prune)"),
    errno.EBUSY: ("in use (busy)", "stop what uses it (a container, a mount) and retry"),
    errno.ENOTEMPTY: ("directory not empty", "empty or remove it first"),
    errno.EROFS: ("read-only file system", "choose a writable location"),
    errno.ELOOP: ("too many symbolic links", "the path loops through symlinks"),
    errno.ENAMETOOLONG: ("name too long", "use a shorter path"),
}


def describe(exc: OSError) -> tuple[str, str | None]:
    """(message, hint) for ``exc``; the call named by runtime/oskit errors kept."""
    call = ""
    text = exc.strerror or str(exc)
    if exc.strerror and ": " in exc.strerror:  # oskit: "umount2: Invalid argument"
        call, _, text = exc.strerror.partition(": ")
    path = _shown_path(exc)
    if call.startswith("umount") and exc.errno == errno.EINVAL:
        return (f"{path or 'the target'}: not mounted",
                "it was unmounted already, or never mounted")
    what, hint = _HINTS.get(exc.errno or 0, (text.lower(), None))
    subject = " ".join(x for x in (call, path) if x)
    return (f"{subject}: {what}" if subject else what), hint


def _shown_path(exc: OSError) -> str:
    """The path a user gave, never a temp file of ours beside it (``.tmp-...``):
    then the directory it was made in."""
    for name in (exc.filename, exc.filename2):
        if name is None:
            continue
        path = os.fsdecode(name) if isinstance(name, bytes | str) else str(name)
        base = os.path.basename(path)
        if base.startswith((".tmp", "tmp")) or ".tmp-" in base or base.endswith(".tmp"):
            return os.path.dirname(path)
        return path
    return ""
