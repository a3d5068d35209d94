"""Tar members of a layer, decoded in place from the prefetched stream.

Reading headers through ``tarfile.TarFile.next()`` was a quarter of the applier
thread's time (bench/unpack, 58k members: ~0.95 of ~3.7 s): per member it re-reads the
stream through three wrappers, builds a TarInfo for the PAX header as well as the
entry, and merges empty global headers.
``MemberReader.next()`` handles the member almost every layer is made of -- an
optional per-entry PAX 'x' header and one ustar header of a builtin type, both inside
the current prefetched chunk -- by decoding the blocks where they lie. Anything else
goes to ``TarFile.next()`` from the same offset, before a byte is consumed: GNU long
names, global headers, sparse files, ``hdrcharset``, base-256 numbers, signed or bad
checksums, end-of-archive and truncated blocks, a member split across two chunks. So
members, offsets, the stream position and every error are tarfile's
(tests/unit/test_tarmembers.py compares them on fixture, hostile and mutated tars).
"""

from __future__ import annotations

import tarfile

from ociimg.layers.stream import Prefetcher
from ociimg.layers.tarinfo import (
    MAX_META_HEADER,
    apply_pax,
    block_size,
    fast_frombuf,
    octal_field,
    pax_records,
    plain_meta_size,
)

_BLOCK = tarfile.BLOCKSIZE
# Types whose header tarfile does not finish in _proc_builtin.
_SPECIAL = frozenset((tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                      tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK,
                      tarfile.GNUTYPE_SPARSE))
_DATA_TYPES = frozenset(tarfile.REGULAR_TYPES)
_SUPPORTED = frozenset(tarfile.SUPPORTED_TYPES)
_TEMPLATES = 64


class MemberReader:
    """``next()`` returns what ``tf.next()`` would; ``tf`` reads ``source`` (mode "r:")."""

    def __init__(self, tf: tarfile.TarFile, source: Prefetcher) -> None:
        self._tf = tf
        self._src = source
        # The decoding below is tarfile's for these settings only (tarinfo.py).
        self._fast = tf.encoding == "utf-8" and tf.errors == "surrogateescape"
        # PAX header blocks differ, within a layer, mostly in their size and checksum:
        # a block whose other bytes were validated before needs only those two checked.
        self._pax_blocks: dict[bytes, int] = {}

    def next(self) -> tarfile.TarInfo | None:
        tf = self._tf
        if not self._fast or tf.firstmember is not None or tf.pax_headers or tf.offset == 0:
            return tf.next()
        if tf.offset != self._src.position:  # tarfile's own skip over the previous data
            tf.fileobj.seek(tf.offset - 1)
            if not tf.fileobj.read(1):
                raise tarfile.ReadError("unexpected end of data")
        member = self._decode()
        return tf.next() if member is None else member

    def _decode(self) -> tarfile.TarInfo | None:
        """The member at the current position decoded in place, or None (untouched)."""
        buf = self._src.buffered()
        if len(buf) < _BLOCK:
            return None
        start = self._src.position
        header = bytes(buf[:_BLOCK])
        pax = None
        at = 0
        if header[156:157] == tarfile.XHDTYPE:
            size = self._pax_size(header)
            if size is None:
                return None
            at = _BLOCK + block_size(size)
            if len(buf) < at + _BLOCK:
                return None
            data = bytes(buf[_BLOCK:at])
            if b"GNU.sparse" in data or b"hdrcharset" in data:
                return None
            try:
                records = pax_records(data)
            except tarfile.HeaderError:
                return None
            pax = {k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
                   for k, v in records}
            header = bytes(buf[at:at + _BLOCK])
        try:
            member = fast_frombuf(self._tf.tarinfo, header, "utf-8", "surrogateescape")
        except tarfile.HeaderError:
            return None
        if member.type in _SPECIAL:
            return None
        self._src.skip(at + _BLOCK)
        self._finish(member, start, start + at + _BLOCK, pax)
        return member

    def _finish(self, member: tarfile.TarInfo, start: int, data_at: int,
                pax: dict[str, str] | None) -> None:
        """tarfile's ``_proc_builtin`` (no global PAX records: those take its path), then
        the PAX records' ``_apply_pax``."""
        tf = self._tf
        member.offset = start
        member.offset_data = data_at
        if member.type in _DATA_TYPES or member.type not in _SUPPORTED:
            data_at += block_size(member.size)
        tf.offset = data_at  # type: ignore[attr-defined]
        if pax is not None:
            apply_pax(member, pax, start, tf)

    def _pax_size(self, header: bytes) -> int | None:
        """``plain_meta_size`` of a PAX header block, remembering blocks seen before."""
        key = header[:124] + header[136:148] + header[156:]
        base = self._pax_blocks.get(key)
        if base is None:
            size = plain_meta_size(header)
            if size is not None and len(self._pax_blocks) < _TEMPLATES:
                self._pax_blocks[key] = sum(key)
            return size
        size_field, chk_field = header[124:136], header[148:156]
        if (size_field[0] | chk_field[0]) & 0x80:
            return None  # base-256: tarfile's path
        try:
            size = octal_field(size_field)
            chksum = octal_field(chk_field)
        except ValueError:
            return None
        if chksum != 256 + base + sum(size_field) or size > MAX_META_HEADER:
            return None
        return size
