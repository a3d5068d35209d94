"""Garbage collection and consistency checks for the store.

gc marks from index.json (every entry, named or not) through indexes, manifests,
configs, layers and subjects, then sweeps blobs/ and ingest/. It holds the gc lock
exclusively, so it never runs while a pull or build holds a lease (``Store.lease()``)
between committing blobs and tagging them, and the index lock, so no tag changes under
it. If a reachable document cannot be read, gc stops rather than sweep its children.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ociimg.digest import Digest
from ociimg.errors import OciimgError
from ociimg.fsutil import fsync_dir, remove_tree
from ociimg.spec import INDEX_TYPES, MANIFEST_TYPES
from ociimg.store import locks
from ociimg.store.ingest import LOCK

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ociimg.spec import Descriptor
    from ociimg.store.layout import Store

_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class GCResult:
    removed_blobs: int
    bytes_freed: int
    removed_ingests: int = 0


@dataclass(frozen=True, slots=True)
class FsckProblem:
    kind: Literal["corrupt", "missing", "size", "unreadable", "stray"]
    digest: Digest | None
    message: str
    path: Path | None = None
    removed: bool = False

    def __str__(self) -> str:
        return self.message

    @property
    def problem(self) -> str:
        """The one-line description (alias of ``message``; the CLI prints it)."""
        return self.message


def collect_garbage(store: Store, *, wait: bool = False) -> GCResult:
    if not store.path.is_dir():
        return GCResult(0, 0, 0)
    with locks.locked(store.path / ".gc.lock", blocking=wait), \
            locks.locked(store.path / ".index.lock"):
        marked = {d.digest for root in store.entries() for d in store.walk(root)}
        removed, freed = 0, 0
        for digest, path in _blob_files(store):
            if digest is None or digest in marked:
                continue
            freed += path.lstat().st_size
            path.unlink()  # a planted symlink is removed, never its target
            removed += 1
        if removed:
            for algo_dir in (store.path / "blobs").iterdir():
                fsync_dir(algo_dir)
        return GCResult(removed, freed, _sweep_ingests(store))


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
        if entry.is_dir():
            fd = locks.try_lock(entry / LOCK)
            if fd is None:
                continue
            try:
                remove_tree(entry)
            finally:
                locks.release_lock(fd)
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
        if digest is None or path.is_symlink() or not path.is_file():
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
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return Digest(algorithm, h.hexdigest())


def _check_references(store: Store, corrupt: set[Digest]) -> list[FsckProblem]:
    """Walk from index.json: top-level entries, configs and non-foreign layers must be here
    (an index's other-platform manifests need not be: pulls fetch one platform)."""
    problems: list[FsckProblem] = []
    seen: set[Digest] = set()
    try:
        stack: list[tuple[Descriptor, bool]] = [(d, True) for d in store.entries()]
    except OciimgError as exc:
        return [FsckProblem("unreadable", None, f"index.json: {exc}", store.index_path)]
    while stack:
        desc, required = stack.pop()
        if desc.digest in seen or desc.digest in corrupt:
            continue
        seen.add(desc.digest)
        path = store.blob_path(desc.digest)
        if not path.is_file():
            if required:
                problems.append(FsckProblem("missing", desc.digest,
                                            f"blob {desc.digest} ({desc.media_type}) is "
                                            "referenced but missing"))
            continue
        if path.stat().st_size != desc.size:
            problems.append(FsckProblem("size", desc.digest, f"blob {desc.digest}: "
                                        f"{path.stat().st_size} bytes, descriptor says "
                                        f"{desc.size}", path))
            continue
        stack.extend(_children_with_requirement(store, desc, problems))
    return problems


def _children_with_requirement(store: Store, desc: Descriptor,
                               problems: list[FsckProblem]) -> list[tuple[Descriptor, bool]]:
    if desc.media_type not in MANIFEST_TYPES | INDEX_TYPES:
        return []
    try:
        doc = store.read_manifest(desc)
    except OciimgError as exc:
        problems.append(FsckProblem("unreadable", desc.digest, f"manifest {desc.digest}: {exc}",
                                    store.blob_path(desc.digest)))
        return []
    if desc.media_type in INDEX_TYPES:
        return [(d, False) for d in doc.manifests]  # type: ignore[union-attr]
    out = [(doc.config, True)]  # type: ignore[union-attr]
    out += [(layer, not layer.urls) for layer in doc.layers]  # type: ignore[union-attr]
    if doc.subject:  # type: ignore[union-attr]
        out.append((doc.subject, False))  # type: ignore[union-attr]
    return out
