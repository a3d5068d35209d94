"""An OSError that reached the CLI, as one line and a hint instead of ``[Errno 22]
umount2: Invalid argument``: what failed, on which path, and what to do."""

from __future__ import annotations

import errno
import os
import re

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
    """The path a user gave, never a temp file of ours beside it (``.x.tar.k3j9a0qz``,
    ``.ociimg-archive-...``, ``.tmp-...``): then the directory it was made in. An fd
    number (an ``*at`` call's) is no path to show."""
    for name in (exc.filename, exc.filename2):
        if not isinstance(name, str | bytes | os.PathLike):
            continue
        path = os.fsdecode(name)
        if _TEMP.match(os.path.basename(path)):
            return os.path.dirname(path) or "."
        return path
    return ""


# Our temp files: hidden, named by tempfile (8 random characters) or with a tmp marker.
_TEMP = re.compile(r"^\.(ociimg-|tmp|.*\.[a-z0-9_]{8}$|.*\.tmp$)")
