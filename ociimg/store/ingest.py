"""Resumable blob ingests: bytes land in ingest/<algo>-<hex>/ until they are verified.

Like containerd's content writer (plugins/content/local/writer.go): data is appended to
a partial file; ``commit()`` checks size and digest, fsyncs, makes the file read-only,
links it into blobs/ and fsyncs the directory. A partial left by a failed or killed
download stays for the next attempt, which continues from ``offset``. One process at a
time owns an ingest (flock on ingest/<algo>-<hex>/lock).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import BinaryIO

from ociimg.digest import Digest
from ociimg.errors import DigestMismatch
from ociimg.fsutil import atomic_write, fsync_dir, remove_tree

DATA = "data"
META = "meta.json"
LOCK = "lock"
BLOB_MODE = 0o444  # blobs are immutable once committed (containerd does the same)
_HASH_CHUNK = 1 << 20


def link_into_place(tmp: Path, final: Path) -> bool:
    """Make ``tmp`` (complete, fsynced) the blob at ``final`` without ever replacing an
    existing blob. Returns False if the blob was already there."""
    os.chmod(tmp, BLOB_MODE)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(tmp, final)
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    fsync_dir(final.parent)
    return True


def fsync_file(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())


class Ingest:
    """One partial blob. Use through ``Store.ingest(digest, size)``."""

    def __init__(self, directory: Path, digest: Digest, size: int, final: Path) -> None:
        self.directory = directory
        self.digest = digest
        self.size = size
        self._final = final
        self.committed = False
        self.done = final.exists()
        self._file: BinaryIO | None = None
        self._hash = digest.hasher()
        self.offset = 0
        if not self.done:
            self._open_partial()

    # Setup ---------------------------------------------------------------------
    def _open_partial(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._read_meta() != {"digest": str(self.digest), "size": self.size}:
            # A partial for a different expected size is useless: start afresh.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / DATA)
            atomic_write(self.directory / META, json.dumps(
                {"digest": str(self.digest), "size": self.size}).encode())
        fd = os.open(self.directory / DATA,
                     os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        self._file = os.fdopen(fd, "a+b")
        self._file.seek(0)
        while chunk := self._file.read(_HASH_CHUNK):
            self._hash.update(chunk)
            self.offset += len(chunk)
        if self.offset > self.size:
            self.restart()

    def _read_meta(self) -> dict[str, object] | None:
        try:
            meta = json.loads((self.directory / META).read_bytes())
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    # Writing -------------------------------------------------------------------
    def write(self, data: bytes) -> int:
        f = self._require_open()
        if self.offset + len(data) > self.size:
            self.discard()
            raise DigestMismatch(
                f"blob {self.digest}: more data than the expected {self.size} bytes",
                hint="the registry sent a different blob; the partial download was discarded")
        f.write(data)
        self._hash.update(data)
        self.offset += len(data)
        return len(data)

    def restart(self) -> None:
        """Throw away what was received so far (e.g. the server ignored a Range request)."""
        f = self._require_open()
        f.seek(0)
        f.truncate(0)
        self._hash = self.digest.hasher()
        self.offset = 0

    def commit(self) -> Digest:
        """Verify size and digest, then move the blob into place (never overwriting)."""
        if self.done:
            return self.digest
        f = self._require_open()
        fsync_file(f)
        actual = Digest(self.digest.algorithm, self._hash.hexdigest())
        if self.offset != self.size or actual != self.digest:
            got = f"{self.offset} bytes" if self.offset != self.size else str(actual)
            self.discard()
            raise DigestMismatch(f"blob {self.digest}: verification failed (got {got}, "
                                 f"expected {self.size} bytes)",
                                 hint="the download was discarded; pull again")
        f.close()
        self._file = None
        link_into_place(self.directory / DATA, self._final)
        self.committed = self.done = True
        return self.digest

    def discard(self) -> None:
        """Remove the partial entirely."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.directory / DATA)
        self._hash = self.digest.hasher()
        self.offset = 0

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.flush()
            self._file.close()
            self._file = None

    def remove(self) -> None:
        """Delete the ingest directory (after commit, while still holding its lock)."""
        self.close()
        remove_tree(self.directory)

    def _require_open(self) -> BinaryIO:
        if self._file is None:
            # Misuse by the caller, not a property of the data: a bug, so no OciimgError.
            state = "already committed" if self.done else "closed"
            raise RuntimeError(f"ingest {self.digest}: {state}")
        return self._file
