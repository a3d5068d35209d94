"""A registry repository read in place as a blob source (the read side of a Store):
what ``docker://`` gives inspect and the other readers without pulling anything."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import IO

from ociimg import spec
from ociimg.digest import Digest, read_verified
from ociimg.errors import BlobUnknown, InvalidDocument
from ociimg.reference import Reference
from ociimg.registry.client import RegistryClient


class RegistryBlobs:
    """A registry repository as a blob source: documents fetched (and cached) by
    digest, blobs streamed through a spooled temp file (verified by the reader)."""

    def __init__(self, client: RegistryClient, ref: Reference) -> None:
        self.client, self.ref = client, ref
        self.path = Path(str(ref))
        self._docs: dict[Digest, bytes] = {}
        self._sizes: dict[Digest, int] = {}

    def top(self) -> spec.Descriptor:
        raw, media_type, digest = self.client.get_manifest(self.ref.repository,
                                                           self.ref.manifest_reference)
        self._docs[digest] = raw
        return spec.Descriptor(media_type, digest, len(raw))

    def has_blob(self, digest: Digest | str) -> bool:
        return True  # asked for by digest; a missing one is BlobUnknown when opened

    def read_blob(self, digest: Digest | str, limit: int = spec.MAX_MANIFEST_BYTES) -> bytes:
        d = Digest.coerce(digest)
        if d not in self._docs:
            with self.open_blob(d, limit) as f:
                self._docs[d] = read_verified(f, d, limit, f"blob {d} from {self.ref.domain}")
        return self._docs[d]

    def read_manifest(self, desc: spec.Descriptor) -> spec.Manifest | spec.Index:
        if desc.digest not in self._docs:
            raw, _mt, digest = self.client.get_manifest(self.ref.repository, str(desc.digest))
            self._docs[digest] = raw
        doc = spec.parse_manifest_or_index(self._docs[desc.digest], desc.media_type,
                                           where=f"manifest {desc.digest}")
        children = doc.manifests if isinstance(doc, spec.Index) else (doc.config, *doc.layers)
        self._sizes.update((c.digest, c.size) for c in children)
        return doc

    def open_blob(self, digest: Digest, limit: int | None = None) -> IO[bytes]:
        if digest in self._docs:
            return io.BytesIO(self._docs[digest])
        if digest not in self._sizes:
            raise BlobUnknown(f"blob {digest}: not referenced by {self.ref}'s manifests")
        if limit is not None and self._sizes[digest] > limit:
            raise InvalidDocument(f"blob {digest}: larger than the {limit}-byte limit")
        spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # noqa: SIM115
        sink = _Sink(spool)
        desc = spec.Descriptor("application/octet-stream", digest, self._sizes[digest])
        try:
            self.client.fetch_blob(self.ref.repository, desc, sink)
        except BlobUnknown:
            spool.close()
            raise
        spool.seek(0)
        return spool  # type: ignore[return-value]


class _Sink:
    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.offset = f, 0

    def write(self, data: bytes) -> int:
        self.f.write(data)
        self.offset += len(data)
        return len(data)

    def restart(self) -> None:
        self.f.seek(0)
        self.f.truncate()
        self.offset = 0
