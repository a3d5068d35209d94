"""The content store: an OCI image layout (image-spec image-layout.md) on disk.

    store/oci-layout            {"imageLayoutVersion": "1.0.0"}
    store/index.json            one descriptor per named image (org.opencontainers.image.ref.name)
    store/blobs/sha256/<hex>    read-only, verified content
    store/ingest/               partial downloads and temp files, never mistaken for blobs
    store/.index.lock           serialises read-modify-write of index.json
    store/.gc.lock              shared by writers (leases), exclusive for gc

Because the layout is standard, ``skopeo copy oci:<store>:<name> …`` and umoci read it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ociimg.digest import Digest, HashingWriter, is_digest, read_verified
from ociimg.errors import (
    BlobUnknown,
    DigestMismatch,
    ImageNotFound,
    InvalidDocument,
    InvalidReference,
    NoMatchingPlatform,
    OciimgError,
)
from ociimg.fsutil import atomic_write
from ociimg.reference import check_ref_name, parse_reference
from ociimg.rootdir import default_root, make_private  # noqa: F401 (re-exported)
from ociimg.spec import (
    ANNOTATION_REF_NAME,
    DOCKER_CONFIG,
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    OCI_CONFIG,
    OCI_INDEX,
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    Platform,
    canonical_json,
    load_json,
    match_platform,
    parse_config,
    parse_index,
    parse_manifest_or_index,
)
from ociimg.store import locks
from ociimg.store.files import is_regular, open_regular, read_regular
from ociimg.store.gc import FsckProblem, GCResult, check_store, collect_garbage
from ociimg.store.ingest import LOCK, Ingest, fsync_file, link_into_place

LAYOUT_VERSION = "1.0.0"
_CHUNK = 1 << 20
_MIN_DIGEST_PREFIX = 12
_MAX_LAYOUT_FILE = 64 << 10


@dataclass(frozen=True, slots=True)
class ImageSummary:
    """One line of ``ociimg images``; ``size`` counts the image's blobs present here."""

    name: str
    digest: Digest
    media_type: str
    size: int


class Store:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._initialised = False

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> Store:
        """The store under an ociimg root directory (ROOT/store), created if needed."""
        make_private(Path(root))
        store = cls(Path(root) / "store")
        store.init()
        return store

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # Layout ----------------------------------------------------------------------
    @property
    def ingest_dir(self) -> Path:
        return self.path / "ingest"

    @property
    def index_path(self) -> Path:
        return self.path / "index.json"

    def init(self) -> None:
        """Create the layout files that are missing; never touch existing ones."""
        if self._initialised:
            return
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        self.ingest_dir.mkdir(exist_ok=True)
        layout = self.path / "oci-layout"
        if layout.exists():
            self._check_layout_version(layout)
        else:
            atomic_write(layout, canonical_json({"imageLayoutVersion": LAYOUT_VERSION}))
        if not self.index_path.exists():
            with locks.locked(self.path / ".index.lock"):
                if not self.index_path.exists():
                    self._write_index({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                       "manifests": []})
        self._initialised = True

    def _check_layout_version(self, layout: Path) -> None:
        doc = load_json(read_regular(layout, _MAX_LAYOUT_FILE), str(layout), _MAX_LAYOUT_FILE)
        version = doc.get("imageLayoutVersion") if isinstance(doc, dict) else None
        if version != LAYOUT_VERSION:
            raise InvalidDocument(f"{layout}: unsupported imageLayoutVersion {version!r}",
                                  hint=f"ociimg reads OCI layouts version {LAYOUT_VERSION}")

    @contextlib.contextmanager
    def lease(self) -> Iterator[None]:
        """Hold while writing blobs that are tagged later (a pull, a build): gc waits,
        so freshly committed but not yet referenced blobs survive (containerd leases)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with locks.locked(self.path / ".gc.lock", shared=True):
            yield

    # Blobs -----------------------------------------------------------------------
    def blob_path(self, digest: Digest | str) -> Path:
        d = Digest.coerce(digest)
        return self.path / "blobs" / d.algorithm / d.hex

    def has_blob(self, digest: Digest | str) -> bool:
        """Present as a regular file (a planted symlink, FIFO or device is no blob)."""
        return is_regular(self.blob_path(digest))

    def open_blob(self, digest: Digest | str) -> BinaryIO:
        try:
            # A blob is a regular file: a planted symlink is not followed, a FIFO or device
            # is refused before it is opened (it would block or never end).
            return open_regular(self.blob_path(digest), f"blob {digest} in {self.path}")
        except FileNotFoundError as exc:
            raise BlobUnknown(f"blob {digest} not in the store {self.path}",
                              hint="pull the image again") from exc

    def read_blob(self, digest: Digest | str, limit: int = MAX_MANIFEST_BYTES) -> bytes:
        """The whole blob, verified against its digest; for documents, not layers."""
        d = Digest.coerce(digest)
        with self.open_blob(d) as f:
            return read_verified(f, d, limit, f"blob {d} in {self.path}",
                                 hint="run `ociimg fsck --remove`, then pull the image again")

    def put_blob(self, data: bytes, expected: Digest | None = None) -> Digest:
        """Store ``data`` (verified against ``expected`` first); returns its digest."""
        actual = Digest.of(data, expected.algorithm if expected else "sha256")
        if expected is not None and actual != expected:
            raise DigestMismatch(f"blob {expected}: content hashes to {actual}",
                                 hint="the data does not match its descriptor")
        if not self.has_blob(actual):
            self._write_new_blob(lambda f: (f.write(data), actual)[1])
        return actual

    def put_stream(self, stream: BinaryIO, expected: Digest | None = None,
                   size: int | None = None) -> tuple[Digest, int]:
        """Store a stream of unknown digest (e.g. a layer being generated);
        returns (digest, size). ``expected``/``size``, when given, are verified."""
        algorithm = expected.algorithm if expected else "sha256"
        result: list[tuple[Digest, int]] = []

        def copy(f: BinaryIO) -> Digest:  # the digest is known only once all is written
            writer = HashingWriter(f, algorithm)
            while chunk := stream.read(_CHUNK):
                writer.write(chunk)
            actual = writer.digest()
            if (expected is not None and actual != expected) or \
                    (size is not None and writer.count != size):
                raise DigestMismatch(f"blob {expected or actual}: got {writer.count} bytes "
                                     f"hashing to {actual}", hint="the stream was discarded")
            result.append((actual, writer.count))
            return actual

        self._write_new_blob(copy)
        return result[0]

    def _write_new_blob(self, fill: Callable[[BinaryIO], Digest]) -> None:
        """Write via a temp file in ingest/ (``fill`` writes and returns the digest), fsync,
        then link into blobs/ (umoci cas/dir PutBlob, containerd writer Commit)."""
        self.init()
        with self.lease():
            fd, tmp = tempfile.mkstemp(dir=self.ingest_dir, prefix=".put-")
            try:
                with os.fdopen(fd, "wb") as f:
                    actual = fill(f)
                    fsync_file(f)
                link_into_place(Path(tmp), self.blob_path(actual))
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)

    @contextlib.contextmanager
    def ingest(self, digest: Digest, size: int) -> Iterator[Ingest]:
        """A resumable writer for one blob; see ingest.py. ``.done`` if already here."""
        if size < 0:
            raise InvalidDocument(f"blob {digest}: negative size {size}")
        final = self.blob_path(digest)
        directory = self.ingest_dir / f"{digest.algorithm}-{digest.hex}"
        if final.exists():
            yield Ingest(directory, digest, size, final)
            return
        self.init()
        with self.lease(), locks.locked(directory / LOCK):
            ing = Ingest(directory, digest, size, final)
            try:
                yield ing
            finally:
                if ing.done:
                    ing.remove()  # still under the lock: waiters see a new inode and retry
                else:
                    ing.close()  # keep the partial for the next attempt

    # index.json and names --------------------------------------------------------
    def _load_index(self) -> dict:  # type: ignore[type-arg]
        try:
            raw = read_regular(self.index_path, MAX_MANIFEST_BYTES)
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        parse_index(raw, where=f"{self.index_path}")  # validates every descriptor
        return load_json(raw, str(self.index_path), MAX_MANIFEST_BYTES)  # type: ignore[no-any-return]

    def _write_index(self, doc: dict) -> None:  # type: ignore[type-arg]
        atomic_write(self.index_path, canonical_json(doc))

    def entries(self) -> list[Descriptor]:
        """Every descriptor in index.json (the gc roots), named or not."""
        doc = self._load_index()
        return [Descriptor.from_json(d, f"index.json.manifests[{i}]")
                for i, d in enumerate(doc.get("manifests", []))]

    def refs(self) -> list[tuple[str, Descriptor]]:
        return [(d.annotations[ANNOTATION_REF_NAME], d) for d in self.entries()
                if ANNOTATION_REF_NAME in d.annotations]

    def tag(self, name: str, desc: Descriptor) -> None:
        """Point ``name`` at ``desc`` (replacing an entry of the same name)."""
        check_ref_name(name)
        if not self.has_blob(desc.digest):
            raise BlobUnknown(f"tag {name}: manifest {desc.digest} is not in the store",
                              hint="store the manifest blob before tagging it")
        entry = desc.with_annotations({**desc.annotations, ANNOTATION_REF_NAME: name})
        self.init()
        with locks.locked(self.path / ".index.lock"):
            doc = self._load_index()
            kept = [d for d in doc.get("manifests", [])
                    if (d.get("annotations") or {}).get(ANNOTATION_REF_NAME) != name]
            doc["manifests"] = [*kept, entry.to_json()]
            self._write_index(doc)

    def untag(self, name: str) -> None:
        stored = self._stored_name(name)
        with locks.locked(self.path / ".index.lock"):
            doc = self._load_index()
            manifests = doc.get("manifests", [])
            kept = [d for d in manifests
                    if (d.get("annotations") or {}).get(ANNOTATION_REF_NAME) != stored]
            if len(kept) == len(manifests):
                raise self._not_found(name)
            doc["manifests"] = kept
            self._write_index(doc)

    def resolve(self, name: str) -> Descriptor:
        """A name as given, its normalised form (``busybox`` → docker.io/library/busybox:latest),
        ``repo@digest`` of a stored image, or a digest (prefix ≥ 12 hex) of a named image."""
        refs = self.refs()
        by_name = dict(refs)
        stored = self._stored_name(name, by_name)
        if stored in by_name:
            return by_name[stored]
        matches = self._match_digest(name, refs)
        if len({d.digest for d in matches}) == 1:
            return matches[0]
        if matches:
            raise ImageNotFound(f"image {name}: ambiguous digest prefix",
                                hint="give more digits of the digest")
        raise self._not_found(name)

    def _stored_name(self, name: str, by_name: dict[str, Descriptor] | None = None) -> str:
        by_name = dict(self.refs()) if by_name is None else by_name
        if name in by_name:
            return name
        try:
            return str(parse_reference(name))
        except InvalidReference:
            return name

    def _match_digest(self, name: str,
                      refs: list[tuple[str, Descriptor]]) -> list[Descriptor]:
        repo, at, digest_text = name.rpartition("@")
        if at:  # repo@digest: any stored name of that repository with that content
            try:
                ref = parse_reference(name)
            except InvalidReference:
                return []
            return [d for n, d in refs if d.digest == ref.digest and _same_repo(n, ref.name)]
        text = name.removeprefix("sha256:")
        if is_digest(name) or (len(text) >= _MIN_DIGEST_PREFIX and
                               all(c in "0123456789abcdef" for c in text)):
            return [d for _, d in refs if d.digest.hex.startswith(text)]
        return []

    def _not_found(self, name: str) -> ImageNotFound:
        return ImageNotFound(f"image {name} not found in the store {self.path}",
                             hint="pull it first, or list what is there with `ociimg images`")

    # Documents -------------------------------------------------------------------
    def read_manifest(self, desc: Descriptor) -> Manifest | Index:
        raw = self.read_blob(desc.digest, limit=MAX_MANIFEST_BYTES)
        if len(raw) != desc.size:
            raise InvalidDocument(f"manifest {desc.digest}: descriptor says {desc.size} bytes, "
                                  f"blob has {len(raw)}")
        return parse_manifest_or_index(raw, desc.media_type, where=f"manifest {desc.digest}")

    def children(self, desc: Descriptor) -> list[Descriptor]:
        """What a manifest (config, layers, subject) or index (manifests) points to;
        nothing for other blobs or when the document is not in the store. Something that
        is there but no regular file raises (it is not absent: gc must not sweep below it)."""
        if desc.media_type not in MANIFEST_TYPES | INDEX_TYPES or \
                not os.path.lexists(self.blob_path(desc.digest)):
            return []
        doc = self.read_manifest(desc)
        if isinstance(doc, Index):
            return list(doc.manifests)
        subject = [doc.subject] if doc.subject else []
        return [doc.config, *doc.layers, *subject]

    def walk(self, desc: Descriptor, on_error: Callable[[Descriptor, OciimgError], None]
             | None = None) -> Iterator[Descriptor]:
        """``desc`` and everything reachable from it, each digest once (depth first).
        A document that cannot be read raises, or with ``on_error`` is reported to it and
        its children skipped (listing and sizing must not fail for one bad image)."""
        seen: set[Digest] = set()
        stack = [desc]
        while stack:
            d = stack.pop()
            if d.digest in seen:
                continue
            seen.add(d.digest)
            yield d
            try:
                children = self.children(d)
            except OciimgError as exc:
                if on_error is None:
                    raise
                on_error(d, exc)
                continue
            stack.extend(reversed(children))

    def image_for(self, name: str, platform: Platform | None = None
                  ) -> tuple[Descriptor, Manifest, ImageConfig]:
        """The runnable image behind ``name``: an index is narrowed to ``platform``
        (default: this host) with the containers/image matching rules."""
        desc = self.resolve(name)
        doc = self.read_manifest(desc)
        if isinstance(doc, Index):
            desc = match_platform(doc, platform or Platform.host())
            if not self.has_blob(desc.digest):
                raise ImageNotFound(f"image {name}: the {desc.platform} manifest {desc.digest} "
                                    "was not pulled", hint="pull with --platform for it")
            doc = self.read_manifest(desc)
            if isinstance(doc, Index):
                raise InvalidDocument(f"image {name}: nested index {desc.digest} not supported")
        if doc.config.media_type not in (OCI_CONFIG, DOCKER_CONFIG):
            raise InvalidDocument(f"image {name}: config type {doc.config.media_type} is not "
                                  "a container image", hint="this is an artifact, not an image")
        config = parse_config(self.read_blob(doc.config.digest, limit=MAX_CONFIG_BYTES),
                              where=f"config {doc.config.digest}")
        if platform is not None:
            _check_platform(name, config.platform, platform)
        return desc, doc, config

    def images(self) -> list[ImageSummary]:
        out = []
        for name, desc in sorted(self.refs(), key=lambda r: r[0]):
            size = sum(d.size for d in self.walk(desc, on_error=lambda _d, _e: None)
                       if self.has_blob(d.digest))
            out.append(ImageSummary(name, desc.digest, desc.media_type, size))
        return out

    # Maintenance -----------------------------------------------------------------
    def gc(self, wait: bool = False) -> GCResult:
        """Remove blobs not reachable from index.json and stale ingests. Raises
        LockTimeout if a pull/build holds a lease, unless ``wait``."""
        return collect_garbage(self, wait=wait)

    def fsck(self, remove: bool = False) -> list[FsckProblem]:
        """Re-hash every blob; report corrupt, missing and mis-sized content."""
        return check_store(self, remove=remove)


def _same_repo(stored_name: str, repo_name: str) -> bool:
    try:
        return parse_reference(stored_name).name == repo_name
    except InvalidReference:
        return False


def _check_platform(name: str, have: Platform, want: Platform) -> None:
    h, w = have.normalized(), want.normalized()
    if (h.os, h.architecture) != (w.os, w.architecture) or \
            (w.variant and h.variant and h.variant != w.variant):
        raise NoMatchingPlatform(f"image {name} is for {h}, not {w}",
                                 hint="pull the image for the platform you need")
