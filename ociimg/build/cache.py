"""The step cache: what a filesystem step made, by a key of everything it depends on.

The key (:func:`step_key`) hashes the parent's committed chain (the filesystem the step
starts from, by content), the expanded instruction, the config fields and ARG values it
sees and, for COPY/ADD, the content digest of what it reads (never mtimes or the
context's path). An entry names the committed snapshot and the layer blob the step made,
and when: a rebuild that hits every step runs nothing and writes the same image.

Entries are small JSON files under ``<root>/build-cache/``. They hold no reference of
their own: gc keeps a step's blob and snapshot only while an image uses them, and an
entry whose blob or snapshot is gone is a miss (and is dropped).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ociimg.digest import Digest
from ociimg.spec import Descriptor, canonical_json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ociimg.layers.snapshots import SnapshotStore
    from ociimg.store import Store

CACHE_DIR = "build-cache"
FORMAT = 1


def step_key(**parts: Any) -> str:
    """A hex key over ``parts`` (JSON values), stable across runs and machines."""
    return Digest.of(canonical_json({"format": FORMAT, **parts})).hex


@dataclass(frozen=True)
class CachedStep:
    chain: Digest | None        # the committed snapshot after the step (None: empty tree)
    layer: Descriptor | None    # the layer blob; None when the step changed nothing
    diff_id: Digest | None
    created: str                # RFC 3339: the step's history time

    def to_json(self) -> dict[str, Any]:
        return {"chain": str(self.chain) if self.chain else None,
                "layer": self.layer.to_json() if self.layer else None,
                "diffID": str(self.diff_id) if self.diff_id else None,
                "created": self.created}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> CachedStep:
        return cls(Digest.parse(doc["chain"]) if doc.get("chain") else None,
                   Descriptor.from_json(doc["layer"], "build cache") if doc.get("layer") else None,
                   Digest.parse(doc["diffID"]) if doc.get("diffID") else None,
                   str(doc["created"]))


class StepCache:
    def __init__(self, root: Path) -> None:
        self.path = Path(root) / CACHE_DIR

    def _file(self, key: str) -> Path:
        return self.path / f"{key}.json"

    def get(self, key: str, store: Store, snapshots: SnapshotStore) -> CachedStep | None:
        """The entry for ``key`` if everything it names is still there."""
        try:
            entry = CachedStep.from_json(json.loads(self._file(key).read_bytes()))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, AttributeError):
            self.drop(key)
            return None
        if (entry.layer is not None and not store.has_blob(entry.layer.digest)) or \
                (entry.chain is not None and not snapshots.has(entry.chain)):
            self.drop(key)
            return None
        return entry

    def put(self, key: str, entry: CachedStep) -> None:
        """Temp file and rename, not fsynced: a lost entry only costs the step a rerun."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".entry-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(canonical_json(entry.to_json()))
            os.replace(tmp, self._file(key))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def drop(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._file(key))
