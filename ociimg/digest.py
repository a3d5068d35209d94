"""The Digest value type and hashing readers/writers.

A digest is validated against the image-spec grammar *before* it is used in a
URL or a path (CVE-2024-3727): only the registered algorithms with lowercase
hex of the right length are accepted.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import BinaryIO

from ociimg.errors import DigestMismatch, InvalidDocument

_ALGORITHMS = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"(sha256|sha512):([a-f0-9]+)")


@dataclass(frozen=True, slots=True, order=True)
class Digest:
    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str, *, where: str = "digest") -> Digest:
        if not isinstance(text, str):
            raise InvalidDocument(f"{where}: not a string")
        m = _DIGEST_RE.fullmatch(text)  # not match+$: '$' accepts a trailing newline
        if not m or len(m.group(2)) != _ALGORITHMS[m.group(1)]:
            raise InvalidDocument(f"{where}: {text[:80]!r} is not a valid sha256/sha512 digest")
        return cls(m.group(1), m.group(2))

    @classmethod
    def coerce(cls, value: Digest | str) -> Digest:
        """``value`` as a Digest: one given as text is parsed (and checked) first."""
        return value if isinstance(value, Digest) else cls.parse(str(value))

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)

    @property
    def short(self) -> str:
        return f"{self.algorithm}:{self.hex[:12]}"

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def is_digest(text: str) -> bool:
    try:
        Digest.parse(text)
    except InvalidDocument:
        return False
    return True


class HashingReader:
    """Wraps a binary stream; hashes and counts everything read through it."""

    def __init__(self, stream: BinaryIO, algorithm: str = "sha256") -> None:
        self._stream = stream
        self._hash = hashlib.new(algorithm)
        self.algorithm = algorithm
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self._hash.update(data)
        self.count += len(data)
        return data

    def readinto(self, buf: bytearray | memoryview) -> int:
        n = self._stream.readinto(buf)  # type: ignore[attr-defined]
        if n:
            self._hash.update(memoryview(buf)[:n])
            self.count += n
        return n or 0

    def drain(self, chunk: int = 1 << 20) -> None:
        """Read to EOF so trailing bytes are part of the digest (image-spec config.md)."""
        while self.read(chunk):
            pass

    def digest(self) -> Digest:
        return Digest(self.algorithm, self._hash.hexdigest())


class HashingWriter:
    """Wraps a binary sink; hashes and counts everything written through it."""

    def __init__(self, sink: BinaryIO, algorithm: str = "sha256") -> None:
        self._sink = sink
        self._hash = hashlib.new(algorithm)
        self.algorithm = algorithm
        self.count = 0

    def write(self, data: bytes) -> int:
        self._sink.write(data)
        self._hash.update(data)
        self.count += len(data)
        return len(data)

    def digest(self) -> Digest:
        return Digest(self.algorithm, self._hash.hexdigest())


def verify(expected: Digest, actual: Digest, what: str) -> None:
    if expected != actual:
        raise DigestMismatch(f"{what}: digest mismatch (expected {expected}, got {actual})")


def read_verified(f: BinaryIO, digest: Digest, limit: int, where: str,
                  hint: str | None = None) -> bytes:
    """All of ``f``, at most ``limit`` bytes, checked against ``digest``; ``where`` names
    the blob in the errors (``blob sha256:… in /some/store``)."""
    data = f.read(limit + 1)
    if len(data) > limit:
        raise InvalidDocument(f"{where}: larger than the {limit}-byte limit")
    actual = Digest.of(data, digest.algorithm)
    if actual != digest:
        raise DigestMismatch(f"{where}: content hashes to {actual}", hint=hint)
    return data
