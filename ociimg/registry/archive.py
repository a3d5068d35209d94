"""``oci-archive:`` read in place: an OCI image layout inside a tar, never extracted.

The archive is indexed once (its own small tar reader: every header field bounded,
only the layout's files — ``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>`` — as
regular, non-sparse members), and each blob is then read from its offset as a stream.
Nothing is written to $TMPDIR, so a small archive cannot make us write a large file,
and nothing is held in memory beyond the documents.

Compressed archives (gzip, bzip2, xz; the layout spec names none, but tools make
them) are read as a decompressed stream: ``seek`` on Python's decompressing readers
re-reads from the start, so each blob costs the decompression of the archive up to it
(CPU, not disk or memory). The documents met on the indexing pass are kept (within
:data:`MAX_CACHED_BYTES`) so narrowing an index does not re-read the archive.

A truncated or corrupt archive is one InvalidDocument naming it, not a traceback (or
EOFError, which click reports as "interrupted").
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import posixpath
import stat
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ociimg import spec
from ociimg.digest import Digest, is_digest
from ociimg.errors import (
    BlobUnknown,
    DigestMismatch,
    ImageNotFound,
    InvalidDocument,
    InvalidReference,
    UnsafeArchive,
)

BLOCK = 512
MAX_PAX_BYTES = 64 << 10  # an extended header; real ones are well under 1 KiB
MAX_LONG_NAME = 4096
MAX_MEMBERS = 1 << 20
MAX_CACHED_BYTES = 32 << 20  # documents kept from the pass over a compressed archive
_REGULAR = (b"0", b"\0", b"7")
_READ_ERRORS = (EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile, OSError, ValueError)

Opener = Callable[[], IO[bytes]]


@dataclass(frozen=True)
class Member:
    offset: int  # of the data, in the (decompressed) tar stream
    size: int
    link: str | None = None  # a link's target, as a name from the archive's top


def _names_hint(refs: list[tuple[str, spec.Descriptor]]) -> str:
    names = sorted(name for name, _ in refs)
    if not names:
        return "the layout names no image; give its digest"
    shown = ", ".join(names[:20]) + (f" (and {len(names) - 20} more)" if len(names) > 20 else "")
    return f"it holds: {shown}"


class MemberArchive:
    """A tar indexed once and read in place: regular members by name (``members``), and,
    where the format has them, link members (``links``: name → target as written).
    Subclasses say which names their format has (``accepts``)."""

    kind = "OCI"
    allow_links = False

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._open, self._compressed = _opener(self.path)
        self._cache: dict[str, bytes] = {}
        self.links: dict[str, str] = {}
        self.members = self._index()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    @staticmethod
    def accepts(name: str) -> bool:
        return _is_layout_member(name)

    # Indexing -----------------------------------------------------------------
    def _index(self) -> dict[str, Member]:
        members: dict[str, Member] = {}
        cached = 0
        with self._reading(), self._open() as stream:
            for name, member in _scan(stream, str(self.path), self.accepts, self.kind):
                if name in members or name in self.links:
                    raise UnsafeArchive(f"{self.path}: {name} appears twice in the archive")
                if len(members) + len(self.links) >= MAX_MEMBERS:
                    raise UnsafeArchive(f"{self.path}: more than {MAX_MEMBERS} entries")
                if member.link is not None:
                    if not self.allow_links:
                        raise UnsafeArchive(f"{self.path}: unexpected entry {name[:100]!r} "
                                            f"(a link) in an {self.kind} archive")
                    self.links[name] = member.link
                    continue
                members[name] = member
                if self._compressed and member.size <= spec.MAX_MANIFEST_BYTES and \
                        cached + member.size <= MAX_CACHED_BYTES:
                    self._cache[name] = _read_exact(stream, member.size, name, self.path)
                    cached += member.size
        if not self._compressed:
            end = os.stat(self.path).st_size
            for name, member in members.items():
                if member.offset + member.size > end:
                    raise InvalidDocument(f"{self.path}: truncated archive ({name} ends past "
                                          "the end of the file)")
        return members

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except _READ_ERRORS as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise  # an I/O error on our side is reported as such by the CLI
            raise InvalidDocument(f"{self.path}: truncated or corrupt archive "
                                  f"({str(exc) or type(exc).__name__})") from exc

    def open_member(self, name: str) -> IO[bytes]:
        if name in self._cache:
            return io.BytesIO(self._cache[name])
        # Unbuffered: readers ask for large chunks, and an upload reads remaining_bytes.
        return _MemberReader(self, self.members[name], name)  # type: ignore[return-value]

    def read_member(self, name: str, limit: int) -> bytes:
        if name in self._cache:
            data = self._cache[name]
        else:
            member = self.members.get(name)
            if member is None:
                raise BlobUnknown(f"{name} not in the archive {self.path}")
            if member.size > limit:
                raise InvalidDocument(f"{self.path}: {name} is larger than the {limit}-byte "
                                      "limit")
            with self._reading(), self._open() as stream:
                stream.seek(member.offset)
                data = _read_exact(stream, member.size, name, self.path)
        if len(data) > limit:
            raise InvalidDocument(f"{self.path}: {name} is larger than the {limit}-byte limit")
        return data


class LayoutArchive(MemberArchive):
    """The read side of a Store (has_blob, open_blob, read_blob, read_manifest,
    entries, resolve) over an OCI layout tar."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        if "oci-layout" not in self.members or "index.json" not in self.members:
            raise InvalidReference(f"{self.path}: not an OCI layout archive "
                                   "(no oci-layout or index.json)")
        self._index_raw = self.read_member("index.json", spec.MAX_MANIFEST_BYTES)

    # The read side of a Store ----------------------------------------------------
    def has_blob(self, digest: Digest | str) -> bool:
        return _blob_name(digest) in self.members

    def open_blob(self, digest: Digest | str) -> IO[bytes]:
        name = _blob_name(digest)
        if name not in self.members:
            raise BlobUnknown(f"blob {digest} not in the archive {self.path}")
        return self.open_member(name)

    def read_blob(self, digest: Digest | str, limit: int = spec.MAX_MANIFEST_BYTES) -> bytes:
        d = Digest.coerce(digest)
        data = self.read_member(_blob_name(d), limit)
        actual = Digest.of(data, d.algorithm)
        if actual != d:
            raise DigestMismatch(f"blob {d} in {self.path}: content hashes to {actual}")
        return data

    def read_manifest(self, desc: spec.Descriptor) -> spec.Manifest | spec.Index:
        raw = self.read_blob(desc.digest)
        if len(raw) != desc.size:
            raise InvalidDocument(f"manifest {desc.digest}: descriptor says {desc.size} bytes, "
                                  f"blob has {len(raw)}")
        return spec.parse_manifest_or_index(raw, desc.media_type,
                                            where=f"manifest {desc.digest}")

    def read_index(self) -> bytes:
        return self._index_raw

    def entries(self) -> list[spec.Descriptor]:
        return list(spec.parse_index(self._index_raw, where=f"{self.path}:index.json").manifests)

    def refs(self) -> list[tuple[str, spec.Descriptor]]:
        return [(d.annotations[spec.ANNOTATION_REF_NAME], d) for d in self.entries()
                if spec.ANNOTATION_REF_NAME in d.annotations]

    def resolve(self, name: str) -> spec.Descriptor:
        """An image by its ref name, or by digest, as in the layout's index.json."""
        for ref, desc in self.refs():
            if ref == name:
                return desc
        for desc in self.entries():
            if str(desc.digest) == name:
                return desc
        raise ImageNotFound(f"image {name} not found in the archive {self.path}",
                            hint=_names_hint(self.refs()))


class _MemberReader(io.RawIOBase):
    """One member's bytes, read (and seekable) in place; ``remaining_bytes`` lets an
    upload send a Content-Length."""

    def __init__(self, archive: MemberArchive, member: Member, name: str) -> None:
        super().__init__()
        self._archive, self._member, self._name = archive, member, name
        self._stream: IO[bytes] | None = None
        self._pos = 0

    @property
    def remaining_bytes(self) -> int:
        return self._member.size - self._pos

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._member.size}[whence]
        self._pos = min(max(0, base + pos), self._member.size)
        if self._stream is not None:
            with self._archive._reading():
                self._stream.seek(self._member.offset + self._pos)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._member.size - self._pos)
        if want <= 0:
            return 0
        with self._archive._reading():
            if self._stream is None:
                self._stream = self._archive._open()
                self._stream.seek(self._member.offset + self._pos)
            got = self._stream.readinto(memoryview(buffer)[:want])  # type: ignore[attr-defined]
        if not got:
            raise InvalidDocument(f"{self._archive.path}: truncated archive ({self._name} "
                                  f"ends after {self._pos} of {self._member.size} bytes)")
        self._pos += got
        return got

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        super().close()


def _blob_name(digest: Digest | str) -> str:
    d = Digest.coerce(digest)
    return f"blobs/{d.algorithm}/{d.hex}"


def _opener(path: Path) -> tuple[Opener, bool]:
    """How to open the archive's tar stream, and whether it is compressed. The file is
    checked to be a regular file first, opened without blocking (a FIFO would hang)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InvalidReference(f"{path}: no such archive") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise InvalidReference(f"{path}: not a regular file")
        head = f.read(6)

    def plain() -> IO[bytes]:
        return open(path, "rb")  # noqa: SIM115  (the caller closes it)

    if head.startswith(b"\x1f\x8b"):
        return lambda: gzip.open(path, "rb"), True
    if head.startswith(b"BZh"):
        return lambda: bz2.open(path, "rb"), True
    if head.startswith(b"\xfd7zXZ\x00"):
        return lambda: lzma.open(path, "rb"), True
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        raise InvalidDocument(f"{path}: zstd-compressed archives are not supported",
                              hint="decompress it first (zstd -d)")
    return plain, False


# The tar reader ----------------------------------------------------------------------
def _is_layout_member(name: str) -> bool:
    if name in ("oci-layout", "index.json"):
        return True
    parts = name.split("/")
    return len(parts) == 3 and parts[0] == "blobs" and is_digest(f"{parts[1]}:{parts[2]}")


def _scan(stream: IO[bytes], where: str, accepts: Callable[[str], bool] = _is_layout_member,
          kind_name: str = "OCI") -> Iterator[tuple[str, Member]]:
    """(name, member) for each regular or link member the format ``accepts``, in archive
    order; refuses anything else (devices, FIFOs, sparse files, unknown names)."""
    pos = 0
    pax: dict[str, str] = {}
    long_name: str | None = None
    long_link: str | None = None
    while True:
        header = stream.read(BLOCK)
        if len(header) == 0 or header == b"\0" * BLOCK:
            return  # end of archive (the second zero block and padding need not be read)
        if len(header) < BLOCK:
            raise InvalidDocument(f"{where}: truncated archive (a header ends early)")
        pos += BLOCK
        _check_checksum(header, where)
        kind = header[156:157]
        size = _number(header[124:136], where)
        padded = -(-size // BLOCK) * BLOCK
        if kind in (b"x", b"g", b"L", b"K"):
            limit = MAX_LONG_NAME if kind in (b"L", b"K") else MAX_PAX_BYTES
            if size > limit:
                raise UnsafeArchive(f"{where}: an extended header of {size} bytes "
                                    f"(limit {limit})")
            data = _read_exact(stream, padded, "extended header", where)[:size]
            pos += padded
            if kind == b"x":
                pax = _parse_pax(data, where)
            elif kind == b"L":
                long_name = data.split(b"\0", 1)[0].decode("utf-8", "replace")
            elif kind == b"K":
                long_link = data.split(b"\0", 1)[0].decode("utf-8", "replace")
            continue  # global headers: nothing in them matters to a layout
        name = pax.get("path") or long_name or _header_name(header)
        link_target = pax.get("linkpath") or long_link
        if "size" in pax:
            size = _pax_size(pax["size"], where)
            padded = -(-size // BLOCK) * BLOCK
        pax, long_name, long_link = {}, None, None
        name = name.removeprefix("./")
        if kind == b"5":  # directories are implied by the blobs' names: nothing to keep
            stream.seek(pos + padded)
            pos += padded
            continue
        if kind in (b"1", b"2") and accepts(name):
            yield name, Member(pos, 0, _link_name(name, kind, link_target or
                                                  _header_field(header, 157, 257)))
            stream.seek(pos + padded)
            pos += padded
            continue
        if kind not in _REGULAR or not accepts(name):
            raise UnsafeArchive(f"{where}: unexpected entry {name[:100]!r} in an {kind_name} "
                                "archive", hint=f"only {kind_name} image archives are accepted")
        yield name, Member(pos, size)
        stream.seek(pos + padded)  # the caller may have read some of the data
        pos += padded


def _header_name(header: bytes) -> str:
    name = header[0:100].split(b"\0", 1)[0]
    if header[257:265] == b"ustar\x0000":  # POSIX: a prefix field (GNU uses it otherwise)
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "replace")


def _link_name(name: str, kind: bytes, target: str) -> str:
    """A link's target as a member name: a hard link names a member, a relative symlink
    is relative to its own directory (an absolute one stays absolute: outside)."""
    if kind == b"1" or target.startswith("/"):
        return target
    return posixpath.normpath(posixpath.join(posixpath.dirname(name), target))


def _header_field(header: bytes, start: int, end: int) -> str:
    return header[start:end].split(b"\0", 1)[0].decode("utf-8", "replace")


def _check_checksum(header: bytes, where: str) -> None:
    stored = _number(header[148:156], where)
    unsigned = sum(header[:148]) + 8 * 0x20 + sum(header[156:])
    signed = unsigned - 256 * sum(1 for b in header[:148] + header[156:] if b > 127)
    if stored not in (unsigned, signed):
        raise InvalidDocument(f"{where}: corrupt archive (bad header checksum)")


def _number(field: bytes, where: str) -> int:
    if field[0] & 0x80:  # GNU base-256: the marker bit, then a two's complement number
        if field[0] & 0x40:
            raise InvalidDocument(f"{where}: corrupt archive (negative number in a header)")
        return int.from_bytes(bytes([field[0] & 0x3F]) + field[1:], "big")
    text = field.replace(b"\0", b" ").strip()
    if not text:
        return 0
    if not all(48 <= c <= 55 for c in text):
        raise InvalidDocument(f"{where}: corrupt archive (bad number {text[:20]!r} in a header)")
    return int(text, 8)


def _parse_pax(data: bytes, where: str) -> dict[str, str]:
    """POSIX extended header records ``"<len> <key>=<value>\\n"``."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos, pos + 20)
        length_text = data[pos:space]
        if space < 0 or not length_text.isdigit():
            if not data[pos:].strip(b"\0"):
                break
            raise InvalidDocument(f"{where}: corrupt extended header")
        length = int(length_text)
        record = data[space + 1:pos + length]
        if length <= 0 or pos + length > len(data) or not record.endswith(b"\n"):
            raise InvalidDocument(f"{where}: corrupt extended header")
        key, eq, value = record[:-1].partition(b"=")
        if not eq:
            raise InvalidDocument(f"{where}: corrupt extended header")
        text_key = key.decode("utf-8", "replace")
        if text_key.startswith("GNU.sparse."):
            raise UnsafeArchive(f"{where}: sparse member in an OCI archive")
        out[text_key] = value.decode("utf-8", "replace")
        pos += length
    return out


def _pax_size(text: str, where: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 19):
        raise InvalidDocument(f"{where}: corrupt extended header (size {text[:20]!r})")
    return int(text)


def _read_exact(stream: IO[bytes], size: int, name: str, where: str | Path) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise InvalidDocument(f"{where}: truncated archive ({name} ends after {len(data)} of "
                              f"{size} bytes)")
    return data
