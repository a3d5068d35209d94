"""A ``tarfile.TarInfo`` for layers: bounded meta headers and a faster header decoder.

Header parsing is most of the CPU time of an unpack (bench/unpack: ``frombuf`` was
~35% of the profile for a 58k-file image). ``fast_frombuf`` decodes the common
ustar/GNU/PAX header with bytes operations and one ``sum`` for the checksum, and
hands every unusual header (base-256 numbers, old GNU sparse, a checksum that only
matches as signed chars, EOF/truncated blocks) to tarfile's own ``frombuf``, so the
result is the same (tests/unit/test_apply.py compares both on mutated headers).
"""

from __future__ import annotations

import re
import struct
import tarfile
from decimal import Decimal
from zlib import adler32

from ociimg.errors import InvalidDocument, UnsafeArchive

# Limits on what a tar header makes us hold in memory (issue 8 item 12). Each is a
# counter checked as the header is read, so a hostile layer fails with UnsafeArchive
# before it costs memory or stack. Go's archive/tar (CVE-2022-2879) caps every PAX and
# GNU long-name header, and the GNU sparse 1.0 map, at 1 MiB (maxSpecialFileSize);
# we do the same per header, and bound what Go leaves to callers:
MAX_META_HEADER = 1 << 20  # PAX / GNU long-name headers before one entry, in total
# Meta headers chained in front of one entry (x, g, L, K ...): tarfile handles each by
# recursing into the next header, so 3,000 of them were a RecursionError. Real
# producers chain at most three (GNU tar: L K; PAX: x; git archive: g x).
MAX_META_CHAIN = 16
# Global PAX ('g') records are merged into every later entry and kept for the whole
# layer (tarfile copies them per entry): 64 KiB in total per layer. Producers write one,
# of a few dozen bytes (git archive's comment=<commit>); Go does not merge them at all.
MAX_GLOBAL_PAX = 64 << 10
# Data segments of one sparse file (any GNU sparse format): its map is a list in memory
# (a 10 M-entry PAX 1.0 map was 1.6 GB of RSS from 146 KB of gzip). The 1.0 map's text
# is also capped at MAX_META_HEADER, like Go's.
MAX_SPARSE_ENTRIES = 1 << 16
# POSIX ustar layout: name mode uid gid size mtime chksum type linkname (magic version)
# uname gname devmajor devminor prefix.
_USTAR = struct.Struct("100s8s8s8s12s12s8sc100s8x32s32s8s8s155s12x")
_HDRCHARSET = re.compile(rb"\d+ hdrcharset=([^\n]+)\n")
_META_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
               tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)


_OCTALS: dict[bytes, int] = {}  # mode/uid/gid/device fields repeat across headers


def octal_field(field: bytes) -> int:
    """tarfile's ``nti`` for a field that is not base-256; ValueError where it raises."""
    value = _OCTALS.get(field)
    if value is not None:
        return value
    end = field.find(b"\0")
    text = field if end == -1 else field[:end]
    try:
        value = int(text.strip() or b"0", 8)
    except ValueError:
        # str.strip also drops \x1c-\x1f, which tarfile's nti (str) accepts.
        value = int(text.decode("ascii").strip() or "0", 8)
    if len(_OCTALS) < 4096:  # bounded: a hostile layer can make every field unique
        _OCTALS[field] = value
    return value


def byte_sum(data: bytes) -> int:
    """``sum(data)`` for a header block, ~6x faster: Adler-32's low half is 1 + the byte
    sum mod 65521, exact for 256 bytes (at most 65,280)."""
    total = 0
    for at in range(0, len(data), 256):
        total += (adler32(data[at:at + 256]) & 0xFFFF) - 1
    return total


def _text(field: bytes, encoding: str, errors: str) -> str:
    end = field.find(b"\0")
    return (field if end == -1 else field[:end]).decode(encoding, errors)


def fast_frombuf(cls: type[tarfile.TarInfo], buf: bytes, encoding: str, errors: str
                 ) -> tarfile.TarInfo:
    slow = tarfile.TarInfo.frombuf.__func__  # type: ignore[attr-defined]
    if len(buf) != tarfile.BLOCKSIZE or buf[156:157] == tarfile.GNUTYPE_SPARSE or \
            (buf[100] | buf[108] | buf[116] | buf[124] | buf[136] | buf[148] | buf[329]
             | buf[337]) & 0x80:
        return slow(cls, buf, encoding, errors)
    chk = buf[148:156]
    try:
        chksum = octal_field(chk)
        if chksum != 256 + byte_sum(buf) - sum(chk):
            return slow(cls, buf, encoding, errors)  # signed sums, or the error
        mode, uid, gid = _ids(buf[100:124])
        uname, gname, major, minor = _owner(buf[265:345], encoding, errors)
        obj = cls()
        obj.name = _text(buf[:100], encoding, errors)
        obj.size = octal_field(buf[124:136])
        obj.mtime = octal_field(buf[136:148])
    except ValueError as exc:
        raise tarfile.InvalidHeaderError("invalid header") from exc
    obj.mode, obj.uid, obj.gid = mode, uid, gid
    obj.uname, obj.gname, obj.devmajor, obj.devminor = uname, gname, major, minor
    obj.chksum = chksum
    obj.type = buf[156:157]
    obj.linkname = _text(buf[157:257], encoding, errors) if buf[157] else ""
    prefix = _text(buf[345:500], encoding, errors) if buf[345] else ""
    if obj.type == tarfile.AREGTYPE and obj.name.endswith("/"):
        obj.type = tarfile.DIRTYPE  # old V7 directories
    if obj.isdir():
        obj.name = obj.name.rstrip("/")
    if prefix and obj.type not in tarfile.GNU_TYPES:
        obj.name = prefix + "/" + obj.name
    return obj


# mode/uid/gid and uname/gname/devmajor/devminor repeat across a layer's headers: one
# lookup for each group instead of a decode per field (bounded like _OCTALS).
_IDS: dict[bytes, tuple[int, int, int]] = {}
_OWNERS: dict[bytes, tuple[str, str, int, int]] = {}


def _ids(field: bytes) -> tuple[int, int, int]:
    ids = _IDS.get(field)
    if ids is None:
        ids = (octal_field(field[:8]), octal_field(field[8:16]), octal_field(field[16:]))
        if len(_IDS) < 1024:
            _IDS[field] = ids
    return ids


def _owner(field: bytes, encoding: str, errors: str) -> tuple[str, str, int, int]:
    cache = encoding == "utf-8" and errors == "surrogateescape"
    owner = _OWNERS.get(field) if cache else None
    if owner is None:
        owner = (_text(field[:32], encoding, errors), _text(field[32:64], encoding, errors),
                 octal_field(field[64:72]), octal_field(field[72:]))
        if cache and len(_OWNERS) < 1024:
            _OWNERS[field] = owner
    return owner


class LayerTarInfo(tarfile.TarInfo):
    @classmethod
    def frombuf(cls, buf, encoding, errors):  # type: ignore[no-untyped-def, override]
        return fast_frombuf(cls, buf, encoding, errors)

    @classmethod
    def fromtarfile(cls, tf):  # type: ignore[no-untyped-def, override]
        """tarfile's ``fromtarfile`` with a shortcut for the PAX 'x' header that precedes
        almost every entry of a layer: no TarInfo is built for it and its records are
        decoded directly, when nothing in it needs tarfile's special cases (GNU sparse,
        hdrcharset, odd numbers or checksums); otherwise the same block goes through
        ``frombuf``/``_proc_member`` as before."""
        chain = getattr(tf, "_meta_chain", 0)  # meta headers read for this entry so far
        if chain > MAX_META_CHAIN:
            raise UnsafeArchive(f"tar header at byte {tf.fileobj.tell()}: more than "
                                f"{MAX_META_CHAIN} PAX/GNU meta headers before one entry",
                                hint="the layer is hostile or broken")
        if not chain:
            tf._meta_bytes = 0  # meta header bytes before this entry
        tf._meta_chain = chain + 1
        try:
            return cls._read_member(tf)
        finally:
            tf._meta_chain = chain

    @classmethod
    def _read_member(cls, tf):  # type: ignore[no-untyped-def]
        fileobj = tf.fileobj
        buf = fileobj.read(tarfile.BLOCKSIZE)
        offset = fileobj.tell() - tarfile.BLOCKSIZE
        if buf[156:157] == tarfile.XHDTYPE and tf.encoding == "utf-8" and \
                tf.errors == "surrogateescape":
            size = plain_meta_size(buf)
            if size is not None:
                _count_meta(tf, size, offset)
                data = fileobj.read(block_size(size))
                if b"GNU.sparse" not in data and b"hdrcharset" not in data:
                    return cls._proc_plain_pax(tf, offset, data)
                obj = cls.frombuf(buf, tf.encoding, tf.errors)
                obj.offset = offset
                return obj._proc_pax_data(tf, data)
        obj = cls.frombuf(buf, tf.encoding, tf.errors)
        obj.offset = offset
        return obj._proc_member(tf)

    @classmethod
    def _proc_plain_pax(cls, tf, offset, data):  # type: ignore[no-untyped-def]
        """``_proc_pax`` for an 'x' header whose records have no sparse or charset keys:
        with UTF-8/surrogateescape, tarfile's strict-then-fallback decoding of every
        keyword and value is one ``decode(..., "surrogateescape")``."""
        pax = tf.pax_headers.copy()
        for keyword, value in pax_records(data):
            pax[keyword.decode("utf-8", "surrogateescape")] = \
                value.decode("utf-8", "surrogateescape")
        try:
            nxt = cls.fromtarfile(tf)
        except tarfile.HeaderError as exc:
            raise tarfile.SubsequentHeaderError(str(exc)) from None
        apply_pax(nxt, pax, offset, tf)
        return nxt

    def _proc_member(self, tf):  # type: ignore[no-untyped-def]
        # Refuse huge PAX/GNU meta headers before tarfile reads them into memory
        # (containerd CVE-2023-25153).
        if self.type in _META_TYPES:
            _count_meta(tf, self.size, self.offset)
        if self.type in _META_TYPES and self.size > MAX_META_HEADER:
            raise UnsafeArchive(f"tar header for {self.name!r}: {self.size}-byte meta header")
        return super()._proc_member(tf)

    def _proc_pax(self, tf):  # type: ignore[no-untyped-def]
        """tarfile's PAX handling with the records split by ``find`` instead of a regex
        match per record (every entry of a typical layer has a PAX header: ~9% of an
        unpack's CPU). Same records, same decoding, same sparse/size handling; tests
        compare it with tarfile's own on valid and odd headers."""
        return self._proc_pax_data(tf, tf.fileobj.read(self._block(self.size)))

    def _proc_pax_data(self, tf, buf):  # type: ignore[no-untyped-def]
        if self.type == tarfile.XGLTYPE:
            total = getattr(tf, "_global_pax", 0) + len(buf)
            if total > MAX_GLOBAL_PAX:
                raise UnsafeArchive(f"tar header at byte {self.offset}: global PAX headers "
                                    f"exceed {MAX_GLOBAL_PAX} bytes in total",
                                    hint="the layer is hostile or broken")
            tf._global_pax = total
        pax = tf.pax_headers if self.type == tarfile.XGLTYPE else tf.pax_headers.copy()
        if b"hdrcharset=" in buf and (m := _HDRCHARSET.search(buf)) is not None:
            pax["hdrcharset"] = m.group(1).decode("utf-8")
        encoding = tf.encoding if pax.get("hdrcharset") == "BINARY" else "utf-8"
        for keyword, value in pax_records(buf):
            key = self._decode_pax_field(keyword, "utf-8", "utf-8", tf.errors)
            if key in tarfile.PAX_NAME_FIELDS:
                pax[key] = self._decode_pax_field(value, encoding, tf.encoding, tf.errors)
            else:
                pax[key] = self._decode_pax_field(value, "utf-8", "utf-8", tf.errors)
        try:
            nxt = self.fromtarfile(tf)
        except tarfile.HeaderError as exc:
            raise tarfile.SubsequentHeaderError(str(exc)) from None
        if "GNU.sparse.map" in pax:
            self._proc_gnusparse_01(nxt, pax)
        elif "GNU.sparse.size" in pax:
            self._proc_gnusparse_00(nxt, pax, buf)
        elif pax.get("GNU.sparse.major") == "1" and pax.get("GNU.sparse.minor") == "0":
            self._proc_gnusparse_10(nxt, pax, tf)
        if self.type in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE):
            apply_pax(nxt, pax, self.offset, tf)
        return nxt

    def _apply_pax_info(self, pax_headers, encoding, errors):  # type: ignore[no-untyped-def]
        try:
            super()._apply_pax_info(pax_headers, encoding, errors)
        except ValueError:  # int() of GNU.sparse.size / realsize, global records too
            raise _bad_sparse(self) from None

    # -- sparse maps: tarfile's parsers, bounded (MAX_SPARSE_ENTRIES) and with every
    # malformed number a header error instead of a ValueError from int() --
    def _proc_sparse(self, tf):  # type: ignore[no-untyped-def]
        """Old GNU sparse ('S'): 4 segments in the header, 21 per extension block."""
        structs, isextended, origsize = self._sparse_structs  # type: ignore[attr-defined]
        del self._sparse_structs  # type: ignore[attr-defined]
        while isextended:
            buf = tf.fileobj.read(tarfile.BLOCKSIZE)
            if len(buf) != tarfile.BLOCKSIZE:
                raise _bad_sparse(self)
            for pos in range(0, 21 * 24, 24):
                try:
                    offset = tarfile.nti(buf[pos:pos + 12])
                    numbytes = tarfile.nti(buf[pos + 12:pos + 24])
                except ValueError:
                    break
                if offset and numbytes:
                    structs.append((offset, numbytes))
            _check_sparse(self, len(structs))
            isextended = bool(buf[504])
        self.sparse = structs
        self.offset_data = tf.fileobj.tell()
        tf.offset = self.offset_data + self._block(self.size)
        self.size = origsize
        return self

    def _proc_gnusparse_00(self, nxt, pax_headers, buf):  # type: ignore[no-untyped-def]
        super()._proc_gnusparse_00(nxt, pax_headers, buf)  # bounded by MAX_META_HEADER
        _check_sparse(nxt, len(nxt.sparse))

    def _proc_gnusparse_01(self, nxt, pax_headers):  # type: ignore[no-untyped-def]
        try:
            numbers = [_sparse_number(x) for x in pax_headers["GNU.sparse.map"].split(",")]
        except ValueError:
            raise _bad_sparse(nxt) from None
        _check_sparse(nxt, len(numbers) // 2)
        nxt.sparse = list(zip(numbers[::2], numbers[1::2], strict=False))

    def _proc_gnusparse_10(self, nxt, pax_headers, tf):  # type: ignore[no-untyped-def]
        """PAX 1.0: the map is text at the start of the data ("COUNT\n" then
        "OFFSET\nSIZE\n" pairs, padded to a block)."""
        buf = b""
        numbers: list[int] = []
        count = None
        read = 0
        while count is None or len(numbers) < count * 2:
            if b"\n" not in buf:
                block = tf.fileobj.read(tarfile.BLOCKSIZE)
                read += len(block)
                if len(block) != tarfile.BLOCKSIZE:
                    raise _bad_sparse(nxt)
                if read > MAX_META_HEADER:
                    raise UnsafeArchive(f"tar entry {nxt.name[:200]!r}: sparse map larger "
                                        f"than {MAX_META_HEADER} bytes",
                                        hint="the layer is hostile or broken")
                buf += block
                continue
            line, buf = buf.split(b"\n", 1)
            try:
                number = _sparse_number(line)
            except ValueError:
                raise _bad_sparse(nxt) from None
            if count is None:
                count = number
                _check_sparse(nxt, count)
            else:
                numbers.append(number)
        nxt.offset_data = tf.fileobj.tell()
        nxt.sparse = list(zip(numbers[::2], numbers[1::2], strict=False))


def _count_meta(tf: tarfile.TarFile, size: int, offset: int) -> None:
    """All meta headers before one entry together stay within MAX_META_HEADER: each
    is parsed into a dict that lives until the entry is read (16 chained 1 MiB headers
    of short records would be hundreds of MB)."""
    total = getattr(tf, "_meta_bytes", 0) + size
    if total > MAX_META_HEADER and size <= MAX_META_HEADER:
        raise UnsafeArchive(f"tar header at byte {offset}: meta headers before one entry "
                            f"exceed {MAX_META_HEADER} bytes in total",
                            hint="the layer is hostile or broken")
    tf._meta_bytes = total  # type: ignore[attr-defined]


def _sparse_number(text: str | bytes) -> int:
    """A decimal, non-negative sparse map number (int() alone takes "-1", " 1_0 ")."""
    if not text.isdigit() or not text.isascii() or len(text) > 20:
        raise ValueError(text)
    return int(text)


def _bad_sparse(info: tarfile.TarInfo) -> InvalidDocument:
    # Not a tarfile.HeaderError: TarFile.next() takes one raised after the entry's own
    # header was read for the end of the archive, and would drop the entry silently.
    return InvalidDocument(f"tar entry {info.name[:200]!r}: malformed GNU sparse map or size",
                           hint="the layer is broken or hostile")


def _check_sparse(info: tarfile.TarInfo, count: int) -> None:
    if count > MAX_SPARSE_ENTRIES:
        raise UnsafeArchive(f"tar entry {info.name[:200]!r}: sparse map of more than "
                            f"{MAX_SPARSE_ENTRIES} segments", hint="the layer is hostile or broken")


def apply_pax(member: tarfile.TarInfo, pax: dict[str, str], offset: int,
               tf: tarfile.TarFile) -> None:
    """Give ``member`` its PAX records and the PAX header's offset; a PAX ``size`` also
    decides where the next header starts (not the ustar size field)."""
    member._apply_pax_info(pax, tf.encoding, tf.errors)  # type: ignore[attr-defined]
    member.offset = offset
    if "size" in pax:
        end = member.offset_data
        if member.isreg() or member.type not in tarfile.SUPPORTED_TYPES:
            end += member._block(member.size)  # type: ignore[attr-defined]
        tf.offset = end  # type: ignore[attr-defined]


def block_size(count: int) -> int:
    """``count`` bytes rounded up to whole tar blocks."""
    blocks, remainder = divmod(count, tarfile.BLOCKSIZE)
    return (blocks + 1) * tarfile.BLOCKSIZE if remainder else blocks * tarfile.BLOCKSIZE


def plain_meta_size(buf: bytes) -> int | None:
    """The size of a meta header block that ``fast_frombuf`` would decode without an
    error (a whole block, octal numbers, a valid unsigned checksum) and that is within
    MAX_META_HEADER; None for anything else, which then takes tarfile's path."""
    if len(buf) != tarfile.BLOCKSIZE or \
            (buf[100] | buf[108] | buf[116] | buf[124] | buf[136] | buf[148] | buf[329]
             | buf[337]) & 0x80:
        return None
    (_, mode, uid, gid, size, mtime, chk, _, _, _, _, major, minor, _) = _USTAR.unpack(buf)
    try:
        if octal_field(chk) != 256 + byte_sum(buf) - sum(chk):
            return None
        for field in (mode, uid, gid, mtime, major, minor):
            octal_field(field)
        count = octal_field(size)
    except ValueError:
        return None
    return count if count <= MAX_META_HEADER else None


def pax_records(buf: bytes) -> list[tuple[bytes, bytes]]:
    """``LEN KEYWORD=VALUE\n`` records from the start of ``buf``; parsing stops at the
    first thing that is not one (trailing NULs), as tarfile's does."""
    out, pos = [], 0
    while True:
        space = buf.find(b" ", pos)
        if space == -1 or not buf[pos:space].isdigit():
            return out
        eq = buf.find(b"=", space + 1)
        if eq <= space + 1:
            return out
        length = int(buf[pos:space])
        if length == 0:
            raise tarfile.InvalidHeaderError("invalid header")
        out.append((buf[space + 1:eq], buf[eq + 1:pos + length - 1]))
        pos += length


# os.utime takes seconds that fit a 64-bit time_t; anything else raised OverflowError (or
# ValueError for NaN) with a traceback instead of naming the entry.
_MIN_NS, _MAX_NS = -(2**63) * 1_000_000_000, (2**63 - 1) * 1_000_000_000


def mtime_ns(info: tarfile.TarInfo, key: str = "mtime") -> int:
    """A time in ns, sub-second from the PAX header when there is one."""
    text = info.pax_headers.get(key)
    ns = None
    if text is not None:
        whole, dot, frac = text.partition(".")
        # Plain "SECONDS[.FRACTION]" (what producers write) without Decimal: with at
        # most 28 digits Decimal's product is exact, and int() truncates the same way;
        # up to 18 digits of seconds always fit a time_t.
        if len(text) <= 28 and len(whole) <= 18 and text.isascii() and whole.isdigit() and \
                (frac.isdigit() or not dot):
            return int(whole) * 1_000_000_000 + (int(frac[:9].ljust(9, "0")) if frac else 0)
        try:
            ns = int(Decimal(text) * 1_000_000_000)
        except (ArithmeticError, ValueError):  # not a number, infinite, NaN
            pass
    if ns is None:  # the header's mtime (PAX mtime as tarfile parsed it, or ustar)
        key, text = "mtime", info.pax_headers.get("mtime")
        try:
            ns = int(info.mtime) * 1_000_000_000
        except (OverflowError, ValueError):  # inf, NaN
            ns = _MAX_NS + 1
    if not _MIN_NS <= ns <= _MAX_NS:
        shown = text if text is not None else info.mtime
        raise InvalidDocument(f"tar entry {info.name!r}: {key} {str(shown)[:40]!r} is not a "
                              "representable time", hint="the layer is broken or hostile")
    return ns


XATTR_NAME_MAX = 255  # Linux limits.h: longer names, or values, are ERANGE
XATTR_SIZE_MAX = 65536


def xattrs_of(info: tarfile.TarInfo) -> dict[str, bytes]:
    """The entry's xattrs, from PAX ``SCHILY.xattr.*`` records; names and values the
    kernel would refuse (empty, NUL, too long) are the layer's error, named here."""
    out = {}
    for key, value in info.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            name = key[len("SCHILY.xattr."):]
            # tarfile decodes PAX values as UTF-8 with surrogateescape: reversible.
            data = value.encode("utf-8", "surrogateescape")
            if not name or "\0" in name or len(name.encode("utf-8", "surrogateescape")) > \
                    XATTR_NAME_MAX or len(data) > XATTR_SIZE_MAX:
                raise InvalidDocument(f"tar entry {info.name[:200]!r}: invalid xattr "
                                      f"{name[:80]!r} (empty, NUL, or too long)",
                                      hint="the layer is broken or hostile")
            out[name] = data
    return out
