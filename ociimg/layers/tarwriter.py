"""Deterministic tar headers and streamed file data for the differ's layer tars.

Headers are ustar, with a PAX extended header only when a value does not fit (a long or
non-ASCII path or link, a large id, size or mtime) or the entry has xattrs
(``SCHILY.xattr.*``, as GNU tar, containerd and the applier use). Owners are numeric
with empty user and group names; mtimes are whole seconds, clamped to
SOURCE_DATE_EPOCH when one is given; no atime or ctime, so the same tree always gives
the same bytes (containerd's ``archive/tar.go`` drops them the same way).
File data is streamed from an fd in chunks, holes written as zeros without reading them.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from ociimg.layers.fsops import data_segments

BLOCK = 512
_ZEROS = bytes(1 << 20)
_CHUNK = 1 << 20

REGTYPE, LNKTYPE, SYMTYPE, CHRTYPE, BLKTYPE, DIRTYPE, FIFOTYPE = (
    b"0", b"1", b"2", b"3", b"4", b"5", b"6")
XHDTYPE = b"x"
_TYPES = {stat.S_IFREG: REGTYPE, stat.S_IFLNK: SYMTYPE, stat.S_IFCHR: CHRTYPE,
          stat.S_IFBLK: BLKTYPE, stat.S_IFDIR: DIRTYPE, stat.S_IFIFO: FIFOTYPE}


def tar_type(mode: int) -> bytes | None:
    return _TYPES.get(stat.S_IFMT(mode))


def _octal(value: int, width: int) -> bytes | None:
    """``width``-byte octal field (digits + NUL); None when it does not fit."""
    if value < 0 or value >= 8 ** (width - 1):
        return None
    return b"%0*o\0" % (width - 1, value)


def _record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body


def _split_name(name: bytes) -> tuple[bytes, bytes] | None:
    """(prefix, name) for ustar, or None when ``name`` needs a PAX path."""
    if not name.isascii():
        return None
    if len(name) <= 100:
        return b"", name
    # ustar: prefix (<= 155) + "/" + name (<= 100)
    for i in range(len(name) - 1, -1, -1):
        if name[i:i + 1] == b"/" and i <= 155 and len(name) - i - 1 <= 100 and i > 0:
            return name[:i], name[i + 1:]
    return None


def header(name: bytes, *, mode: int = 0, uid: int = 0, gid: int = 0, size: int = 0,
           mtime: int = 0, typeflag: bytes = REGTYPE, linkname: bytes = b"",
           devmajor: int = 0, devminor: int = 0,
           xattrs: dict[str, bytes] | None = None) -> bytes:
    """One entry's header blocks (a PAX header first when needed)."""
    pax: list[bytes] = []
    split = _split_name(name)
    if split is None:
        pax.append(_record(b"path", name))
        split = b"", name.decode("ascii", "replace").encode("ascii", "replace")[:100]
    prefix, short = split
    if len(linkname) > 100 or not linkname.isascii():
        pax.append(_record(b"linkpath", linkname))
        linkname = linkname.decode("ascii", "replace").encode("ascii", "replace")[:100]
    fields = {}
    for key, value, width in ((b"uid", uid, 8), (b"gid", gid, 8), (b"size", size, 12),
                              (b"mtime", mtime, 12)):
        encoded = _octal(value, width)
        if encoded is None:
            pax.append(_record(key, str(value).encode()))
            encoded = _octal(0, width)
        fields[key] = encoded
    for key, value in sorted((xattrs or {}).items()):
        pax.append(_record(b"SCHILY.xattr." + key.encode("utf-8", "surrogateescape"), value))
    out = b""
    if pax:
        data = b"".join(pax)
        out = _ustar(b"././@PaxHeader", b"", 0o644, _octal(0, 8), _octal(0, 8),
                     _octal(len(data), 12) or b"", _octal(0, 12), XHDTYPE, b"", 0, 0)
        out += data + bytes(-len(data) % BLOCK)
    return out + _ustar(short, prefix, mode & 0o7777, fields[b"uid"], fields[b"gid"],
                        fields[b"size"], fields[b"mtime"], typeflag, linkname,
                        devmajor, devminor)


def _ustar(name: bytes, prefix: bytes, mode: int, uid: bytes | None, gid: bytes | None,
           size: bytes, mtime: bytes | None, typeflag: bytes, linkname: bytes,
           devmajor: int, devminor: int) -> bytes:
    parts = [
        name.ljust(100, b"\0"), _octal(mode, 8) or b"", uid or b"", gid or b"", size,
        mtime or b"", b" " * 8, typeflag, linkname.ljust(100, b"\0"), b"ustar\x0000",
        bytes(32), bytes(32), _octal(devmajor, 8) or _octal(0, 8) or b"",
        _octal(devminor, 8) or _octal(0, 8) or b"", prefix.ljust(155, b"\0"), bytes(12),
    ]
    block = b"".join(parts)
    assert len(block) == BLOCK, len(block)
    checksum = b"%06o\0 " % sum(block)
    return block[:148] + checksum + block[156:]


def end_of_archive() -> bytes:
    return bytes(2 * BLOCK)


def stream_file(fd: int, size: int, out: BinaryIO) -> None:
    """Write exactly ``size`` bytes of the file ``fd`` (then the block padding): data
    segments are read, holes written as zeros; a file that shrank meanwhile is padded
    with zeros, one that grew is cut at ``size`` (the header is already written)."""
    pos = 0
    for start, end in data_segments(fd, size):
        _write_zeros(out, start - pos)
        pos = start
        while pos < end:
            chunk = os.pread(fd, min(_CHUNK, end - pos), pos)
            if not chunk:  # shrank under us: zeros from here on
                break
            out.write(chunk)
            pos += len(chunk)
        if pos < end:
            break
    _write_zeros(out, size - pos)
    out.write(bytes(-size % BLOCK))


def _write_zeros(out: BinaryIO, count: int) -> None:
    while count > 0:
        n = min(count, len(_ZEROS))
        out.write(_ZEROS if n == len(_ZEROS) else memoryview(_ZEROS)[:n])
        count -= n
