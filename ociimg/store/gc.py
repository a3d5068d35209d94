"""Garbage collection and consistency checks for the store.

gc marks from index.json (every entry, named or not) through indexes, manifests,
configs, layers and subjects, then sweeps blobs/ and ingest/. It holds the gc lock
exclusively, so it never runs while a pull or build holds a lease (``Store.lease()``)
between committing blobs and tagging them, and the index lock, so no tag changes under
it. One bad image must not stop gc for all the others: a reachable document that cannot be
parsed keeps every blob whose digest its bytes mention (and gc follows those), and a
warning names the image; only when its bytes cannot be read at all is nothing swept.
"""

from __future__ import annotations

import contextlib
import json
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ociimg.digest import Digest
from ociimg.errors import OciimgError
from ociimg.fsutil import fsync_dir
from ociimg.spec import (
    ANNOTATION_REF_NAME,
    DOCKER_CONFIG,
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    parse_config,
)
from ociimg.store import locks
from ociimg.store.files import is_regular, open_regular
from ociimg.store.ingest import LOCK

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ociimg.store.layout import Store

_CHUNK = 1 << 20
_DIGEST_TEXT = re.compile(rb"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")
_OVERLAP = 200  # longer than any digest text: one split across two chunks is still found
_UNKNOWN_BLOB = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class GCResult:
    removed_blobs: int
    bytes_freed: int
    removed_ingests: int = 0
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FsckProblem:
    kind: Literal["corrupt", "missing", "size", "unreadable", "stray"]
    digest: Digest | None
    message: str
    path: Path | None = None
    removed: bool = False
    image: str | None = None

    def __str__(self) -> str:
        return self.message


def collect_garbage(store: Store, *, wait: bool = False) -> GCResult:
    if not store.path.is_dir():
        return GCResult(0, 0, 0)
    with locks.locked(store.path / ".gc.lock", blocking=wait), \
            locks.locked(store.path / ".index.lock"):
        marked, warnings, complete = mark_reachable(store)
        removed, freed = 0, 0
        for digest, path in _blob_files(store):
            if digest is None or digest in marked or not complete:
                continue
            st = path.lstat()
            if stat.S_ISDIR(st.st_mode):
                warnings.append(f"{path}: a directory, not a blob; left alone (see fsck)")
                continue
            path.unlink()  # a planted symlink, FIFO or device is removed, never its target
            freed += st.st_size
            removed += 1
        if removed:
            for algo_dir in (store.path / "blobs").iterdir():
                fsync_dir(algo_dir)
        return GCResult(removed, freed, _sweep_ingests(store), tuple(warnings))


def image_name(entry: Descriptor) -> str:
    """How warnings name an index.json entry: its ref name, else its digest."""
    return entry.annotations.get(ANNOTATION_REF_NAME) or f"(untagged) {entry.digest}"


def mark_reachable(store: Store) -> tuple[set[Digest], list[str], bool]:
    """(digests reachable from index.json, warnings, complete). A document that does not
    parse is salvaged: every digest its bytes mention is kept and followed. ``complete``
    is False when some document could not even be read, so no unmarked blob is known to
    be garbage."""
    marked: set[Digest] = set()
    warnings: list[str] = []
    complete = True
    for entry in store.entries():
        stack = [entry]
        while stack:
            desc = stack.pop()
            if desc.digest in marked:
                continue
            marked.add(desc.digest)
            try:
                stack.extend(store.children(desc))
            except OciimgError as exc:
                salvaged = _salvage(store, desc.digest)
                if salvaged is None:
                    complete = False
                    warnings.append(f"image {image_name(entry)}: {exc}; no blob was removed "
                                    "(what it references is unknown)")
                    continue
                warnings.append(f"image {image_name(entry)}: {exc}; kept the "
                                f"{len(salvaged)} blob(s) it mentions")
                stack.extend(salvaged)
    return marked, warnings, complete


def _salvage(store: Store, digest: Digest) -> list[Descriptor] | None:
    """The stored blobs whose digest appears in the bytes of an unparsable document;
    None if its bytes cannot be read."""
    found: set[bytes] = set()
    try:
        with open_regular(store.blob_path(digest), f"blob {digest}") as f:
            tail = b""
            while chunk := f.read(_CHUNK):
                window = tail + chunk
                found.update(_DIGEST_TEXT.findall(window))
                tail = window[-_OVERLAP:]
    except (OciimgError, OSError):
        return None
    out = []
    for text in sorted(found):
        d = Digest.parse(text.decode())
        if d != digest and store.has_blob(d):
            out.append(Descriptor(_sniff_media_type(store, d), d,
                                  store.blob_path(d).lstat().st_size))
    return out


def _sniff_media_type(store: Store, digest: Digest) -> str:
    """A salvaged blob's type from its content, so a manifest or index it names is
    followed in turn; anything else is a leaf."""
    if store.blob_path(digest).lstat().st_size > MAX_MANIFEST_BYTES:
        return _UNKNOWN_BLOB
    try:
        with open_regular(store.blob_path(digest)) as f:
            doc = json.loads(f.read(MAX_MANIFEST_BYTES))
    except (OciimgError, OSError, ValueError, RecursionError):
        return _UNKNOWN_BLOB
    if not isinstance(doc, dict):
        return _UNKNOWN_BLOB
    media_type = doc.get("mediaType")
    if media_type in MANIFEST_TYPES | INDEX_TYPES:
        return media_type  # type: ignore[no-any-return]
    if "manifests" in doc:
        return OCI_INDEX
    return OCI_MANIFEST if "layers" in doc and "config" in doc else _UNKNOWN_BLOB


def _blob_files(store: Store) -> Iterator[tuple[Digest | None, Path]]:
    """Every file under blobs/<algo>/, with its digest (None if the name is not one)."""
    blobs = store.path / "blobs"
    if not blobs.is_dir():
        return
    for algo_dir in sorted(blobs.iterdir()):
        if not algo_dir.is_dir():
            continue
        for path in sorted(algo_dir.iterdir()):
            try:
                yield Digest.parse(f"{algo_dir.name}:{path.name}"), path
            except OciimgError:
                yield None, path


def _sweep_ingests(store: Store) -> int:
    """Remove partial downloads nobody is writing (their ingest lock is free)."""
    removed = 0
    if not store.ingest_dir.is_dir():
        return 0
    for entry in store.ingest_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():  # never lock or sweep through a link
            if not locks.remove_unless_locked(entry, entry / LOCK):
                continue
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()  # a put_blob temp file: writers hold a lease, so none runs
        removed += 1
    return removed


def check_store(store: Store, *, remove: bool = False) -> list[FsckProblem]:
    problems = list(_check_blobs(store, remove))
    problems += _check_references(store, {p.digest for p in problems if p.digest})
    return problems


def _check_blobs(store: Store, remove: bool) -> Iterator[FsckProblem]:
    for digest, path in _blob_files(store):
        if digest is None or not is_regular(path):
            yield FsckProblem("stray", digest, f"{path}: not a blob (bad name or not a "
                              "regular file)", path)
            continue
        actual = _hash_file(path, digest.algorithm)
        if actual == digest:
            continue
        if remove:
            path.unlink()
        yield FsckProblem("corrupt", digest, f"blob {digest}: content hashes to {actual}"
                          + (" (removed)" if remove else ""), path, removed=remove)


def _hash_file(path: Path, algorithm: str) -> Digest:
    h = Digest(algorithm, "").hasher()
    with open_regular(path) as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return Digest(algorithm, h.hexdigest())


def _check_references(store: Store, corrupt: set[Digest]) -> list[FsckProblem]:
    """Walk from index.json: top-level entries, configs and non-foreign layers must be here
    (an index's other-platform manifests need not be: pulls fetch one platform)."""
    problems: list[FsckProblem] = []
    seen: set[Digest] = set()
    try:
        stack: list[tuple[Descriptor, bool, str]] = [(d, True, image_name(d))
                                                     for d in store.entries()]
    except OciimgError as exc:
        return [FsckProblem("unreadable", None, f"index.json: {exc}", store.index_path)]
    while stack:
        desc, required, name = stack.pop()
        if desc.digest in seen or desc.digest in corrupt:
            continue
        seen.add(desc.digest)
        path = store.blob_path(desc.digest)
        if not is_regular(path):
            if required:
                problems.append(FsckProblem("missing", desc.digest,
                                            f"image {name}: blob {desc.digest} "
                                            f"({desc.media_type}) is referenced but missing",
                                            image=name))
            continue
        if path.stat().st_size != desc.size:
            problems.append(FsckProblem("size", desc.digest, f"image {name}: blob "
                                        f"{desc.digest}: {path.stat().st_size} bytes, "
                                        f"descriptor says {desc.size}", path, image=name))
            continue
        stack.extend((d, req, name) for d, req in
                     _children_with_requirement(store, desc, name, problems))
    return problems


def _children_with_requirement(store: Store, desc: Descriptor, name: str,
                               problems: list[FsckProblem]) -> list[tuple[Descriptor, bool]]:
    if desc.media_type in (OCI_CONFIG, DOCKER_CONFIG):
        _check_config(store, desc, name, problems)
        return []
    if desc.media_type not in MANIFEST_TYPES | INDEX_TYPES:
        return []
    try:
        doc = store.read_manifest(desc)
    except OciimgError as exc:
        problems.append(FsckProblem("unreadable", desc.digest, f"image {name}: {exc}",
                                    store.blob_path(desc.digest), image=name))
        return []
    if desc.media_type in INDEX_TYPES:
        return [(d, False) for d in doc.manifests]  # type: ignore[union-attr]
    out = [(doc.config, True)]  # type: ignore[union-attr]
    out += [(layer, not layer.urls) for layer in doc.layers]  # type: ignore[union-attr]
    if doc.subject:  # type: ignore[union-attr]
        out.append((doc.subject, False))  # type: ignore[union-attr]
    return out


def _check_config(store: Store, desc: Descriptor, name: str,
                  problems: list[FsckProblem]) -> None:
    where = f"config {desc.digest}"
    try:
        parse_config(store.read_blob(desc.digest, limit=MAX_CONFIG_BYTES), where=where)
    except OciimgError as exc:
        problems.append(FsckProblem("unreadable", desc.digest, f"image {name}: {exc}",
                                    store.blob_path(desc.digest), image=name))
