"""The image's own users and groups: ``Config.User`` → uid, gid, groups and home.

image-spec conversion.md: names are resolved from the *extracted* /etc/passwd and
/etc/group, never the host's NSS; an unknown user or group is an error; supplementary
groups only for a named user without an explicit group. Ids are unsigned 32-bit and
never wrapped (containerd CVE-2024-40635 turned an overflowing uid into root). The files
are read with every symlink clamped to the rootfs, so an image cannot make us read a
host file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ociimg.errors import InvalidDocument
from ociimg.oskit.paths import resolve_in_dir
from ociimg.store.files import reopen_regular

# uid_t/gid_t are unsigned 32-bit; (uid_t)-1 = 4294967295 means "unchanged" to setresuid(2)
# and is the kernel's invalid id, so the largest usable id is one less.
MAX_ID = 2**32 - 2
_USERDB_LIMIT = 16 * 1024 * 1024
_DECIMAL = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class ExecUser:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    home: str | None = None



def parse_id(text: str, what: str) -> int | None:
    """A decimal uid/gid as an unsigned 32-bit value; None if ``text`` is a name.

    Only plain decimal digits are numbers: "0x10", "+1", "1_0" or " 1" are names (and so
    must exist in the image), never reinterpreted. Values past the 32-bit range are an error,
    not wrapped (containerd CVE-2024-40635 turned such a uid into root).
    """
    if text.startswith("-") and _DECIMAL.fullmatch(text[1:]):
        raise InvalidDocument(f"{what} {text!r} is negative",
                              hint=f"use a {what} between 0 and {MAX_ID}")
    if not _DECIMAL.fullmatch(text):
        return None
    value = int(text)
    if value > MAX_ID:
        raise InvalidDocument(f"{what} {text!r} is out of range (max {MAX_ID})",
                              hint=f"use a {what} between 0 and {MAX_ID}")
    return value


def resolve_user(spec: str, rootfs: Path) -> ExecUser:
    """``Config.User`` → uid, gid, supplementary gids and home, from the image's own files.

    Forms: "", "uid", "uid:gid", "name", "name:group", "uid:group", "name:gid". Supplementary
    groups are set only for a named user without an explicit group (conversion.md).
    """
    user_part, sep, group_part = spec.partition(":")
    if sep and not (user_part and group_part):
        raise InvalidDocument(f"user {spec!r}: empty user or group",
                              hint="write the user as name[:group] or uid[:gid]")
    uid = parse_id(user_part or "0", "uid")
    try:
        passwd = _read_passwd(rootfs)
    except InvalidDocument:
        if uid is None:
            raise  # a name needs the database: say why it cannot be read
        passwd = []  # a numeric uid works without one (runc: an unreadable passwd is none)
    if uid is None:
        entry = next((e for e in passwd if e[0] == user_part), None)
        if entry is None:
            raise InvalidDocument(
                f"user {user_part!r} not found in the image's /etc/passwd",
                hint="use a numeric uid[:gid], or add the user to the image")
        _name, uid, gid, home = entry
        named = True
    else:
        # A numeric uid is verbatim; its passwd entry, if any, only supplies gid and HOME.
        entry = next((e for e in passwd if e[1] == uid), None)
        gid, home = (entry[2], entry[3]) if entry else (0, None)
        named = False
    if group_part:
        return ExecUser(uid, _resolve_group(group_part, rootfs), (), home)
    sgids = _supplementary_gids(user_part, gid, rootfs) if named else ()
    return ExecUser(uid, gid, sgids, home)


def _resolve_group(group: str, rootfs: Path) -> int:
    gid = parse_id(group, "gid")
    if gid is not None:
        return gid
    for name, group_gid, _members in _read_group(rootfs):
        if name == group:
            return group_gid
    raise InvalidDocument(f"group {group!r} not found in the image's /etc/group",
                          hint="use a numeric gid, or add the group to the image")


def _supplementary_gids(user: str, primary: int, rootfs: Path) -> tuple[int, ...]:
    gids: list[int] = []
    for _name, gid, members in _read_group(rootfs):
        if user in members and gid != primary and gid not in gids:
            gids.append(gid)
    return tuple(gids)


def _read_passwd(rootfs: Path) -> list[tuple[str, int, int, str | None]]:
    """(name, uid, gid, home) for each well-formed /etc/passwd line."""
    entries = []
    for fields in _read_userdb(rootfs, "/etc/passwd"):
        if len(fields) < 4:
            continue
        uid, gid = _db_id(fields[2]), _db_id(fields[3])
        if uid is None or gid is None:
            continue  # a malformed line is skipped, never wrapped into some other id
        home = fields[5] if len(fields) > 5 and fields[5] else None
        entries.append((fields[0], uid, gid, home))
    return entries


def _read_group(rootfs: Path) -> list[tuple[str, int, list[str]]]:
    """(name, gid, members) for each well-formed /etc/group line."""
    entries = []
    for fields in _read_userdb(rootfs, "/etc/group"):
        if len(fields) < 3:
            continue
        gid = _db_id(fields[2])
        if gid is None:
            continue
        members = [m for m in fields[3].split(",") if m] if len(fields) > 3 else []
        entries.append((fields[0], gid, members))
    return entries


def _db_id(text: str) -> int | None:
    if not _DECIMAL.fullmatch(text):
        return None
    value = int(text)
    return value if value <= MAX_ID else None


def _read_userdb(rootfs: Path, path: str) -> list[list[str]]:
    data = read_in_root(rootfs, path, _USERDB_LIMIT)
    if data is None:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    return [line.split(":") for line in lines if line and not line.startswith("#")]


# --- reading a file inside the rootfs ---------------------------------------------------


def _open_in_root(rootfs: Path, path: str, use_openat2: bool | None) -> int:
    """An O_PATH fd for ``path`` inside ``rootfs``: nothing is opened for I/O yet (no
    device driver's open, no FIFO wait) and a symlink never leads out of the root."""
    return resolve_in_dir(rootfs, path, use_openat2=use_openat2)


def read_in_root(rootfs: Path, path: str, limit: int, *, use_openat2: bool | None = None,
                 ) -> bytes | None:
    """The bytes of regular file ``path`` inside ``rootfs``; None if it does not exist.

    Resolved by ``oskit.paths.resolve_in_root``, which clamps every symlink and ".."
    to the rootfs. The file is opened O_PATH and fstat'ed first, and read only if it is
    a regular file: a device node or FIFO in the image (or made by a running container
    before ``exec -u``) is never opened, and at most ``limit`` bytes are read.
    """
    what = f"image rootfs: {path}"
    try:
        path_fd = _open_in_root(Path(rootfs), path, use_openat2)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InvalidDocument(f"image rootfs: cannot read {path}: {exc.strerror}",
                              hint="check the unpacked image's file") from exc
    try:
        fd = reopen_regular(path_fd, what)
    finally:
        os.close(path_fd)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise InvalidDocument(f"{what} is larger than {limit} bytes",
                              hint="use a numeric uid[:gid] instead of a user name")
    return data
