"""``dir:`` — skopeo's directory transport (containers/image ``directory/``): a
``version`` file, the image's manifest as ``manifest.json`` (exact bytes), each blob
as a file named by its digest's hex, and for an index each instance's manifest as
``<hex>.manifest.json``.

Read: every file is opened as a regular file only (a planted symlink, FIFO or device is
refused, see store.files), names come from digests (never from the documents' text),
documents are bounded and checked against their digests. Written: into a temp dir
beside the target, renamed into place when complete.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from ociimg import spec
from ociimg.digest import Digest, read_verified
from ociimg.errors import BlobUnknown, DigestMismatch, ImageNotFound, InvalidReference
from ociimg.fsutil import atomic_write, replace_dir, temp_dir_beside
from ociimg.store.files import is_regular, open_regular, read_regular

VERSION = b"Directory Transport Version: 1.1\n"
_CHUNK = 1 << 20


class DirImage:
    """The read side of a Store over one ``dir:`` image."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not is_regular(self.path / "manifest.json"):
            raise InvalidReference(f"dir:{self.path}: not a dir: image (no manifest.json)")
        raw = read_regular(self.path / "manifest.json", spec.MAX_MANIFEST_BYTES,
                           f"dir:{self.path}/manifest.json")
        doc = spec.parse_manifest_or_index(raw, where=f"dir:{self.path}/manifest.json")
        self.top = spec.Descriptor(doc.media_type, Digest.of(raw), len(raw))
        self._top_raw = raw

    def __repr__(self) -> str:
        return f"DirImage({str(self.path)!r})"

    def _file(self, digest: Digest) -> Path | None:
        for name in (digest.hex, f"{digest.hex}.manifest.json"):
            if is_regular(self.path / name):
                return self.path / name
        return None

    def has_blob(self, digest: Digest | str) -> bool:
        d = Digest.coerce(digest)
        return d == self.top.digest or self._file(d) is not None

    def open_blob(self, digest: Digest | str) -> IO[bytes]:
        d = Digest.coerce(digest)
        if d == self.top.digest:
            return io.BytesIO(self._top_raw)
        path = self._file(d)
        if path is None:
            raise BlobUnknown(f"blob {d} not in dir:{self.path}")
        return open_regular(path, f"blob {d} in dir:{self.path}")

    def read_blob(self, digest: Digest | str, limit: int = spec.MAX_MANIFEST_BYTES) -> bytes:
        d = Digest.coerce(digest)
        with self.open_blob(d) as f:
            return read_verified(f, d, limit, f"blob {d} in dir:{self.path}")

    def read_manifest(self, desc: spec.Descriptor) -> spec.Manifest | spec.Index:
        return spec.parse_manifest_or_index(self.read_blob(desc.digest), desc.media_type,
                                            where=f"manifest {desc.digest}")

    def entries(self) -> list[spec.Descriptor]:
        return [self.top]

    def refs(self) -> list[tuple[str, spec.Descriptor]]:
        return []

    def resolve(self, name: str) -> spec.Descriptor:
        if name in ("", str(self.top.digest)):
            return self.top
        raise ImageNotFound(f"dir:{self.path} holds one image ({self.top.digest}), not {name}")


def write_dir(path: Path, top: spec.Descriptor, blobs: Iterable[tuple[spec.Descriptor,
                                                                      IO[bytes]]]) -> None:
    """Write a ``dir:`` image: ``blobs`` yields (descriptor, stream) for every blob below
    ``top`` and ``top`` itself; each is verified while written. Replaces ``path`` only if
    it is empty or a ``dir:`` image (containers/image refuses other directories too)."""
    _check_replaceable(path)
    with temp_dir_beside(path) as tmp:
        for desc, stream in blobs:
            name = desc.digest.hex
            if desc.digest == top.digest:
                name = "manifest.json"
            elif desc.media_type in spec.MANIFEST_TYPES | spec.INDEX_TYPES:
                name = f"{desc.digest.hex}.manifest.json"
            _write_verified(tmp / name, stream, desc)
        atomic_write(tmp / "version", VERSION)
        replace_dir(tmp, path)


def _check_replaceable(path: Path) -> None:
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        raise InvalidReference(f"dir:{path}: exists and is not a directory")
    if any(path.iterdir()) and not is_regular(path / "version"):
        raise InvalidReference(f"dir:{path}: a non-empty directory that is not a dir: image",
                               hint="refusing to replace it; name a new or empty directory")


def _write_verified(dest: Path, stream: IO[bytes], desc: spec.Descriptor) -> None:
    hasher = desc.digest.hasher()
    count = 0
    with open(dest, "xb") as out:
        while chunk := stream.read(_CHUNK):
            hasher.update(chunk)
            count += len(chunk)
            out.write(chunk)
    if hasher.hexdigest() != desc.digest.hex or count != desc.size:
        raise DigestMismatch(f"blob {desc.digest}: got {count} bytes hashing to "
                             f"{desc.digest.algorithm}:{hasher.hexdigest()}")
