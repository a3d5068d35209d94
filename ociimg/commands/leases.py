"""Snapshot leases for bundles made by ``unpack --overlay``.

A container keeps its snapshots through the ``snapshots`` list in its meta.json, which
``gc`` reads. A mounted overlay bundle lives outside ROOT/containers, so it records the
same thing in ROOT/leases/<id>.json (containerd's leases: a named reference that keeps
content alive) from before its mount is handed out until ``ociimg umount``. While the
bundle is being made, the containers' creation lock keeps gc out, exactly as for ``run``.

A lease whose bundle no longer names it (the bundle was deleted or replaced) protects
nothing any more and is dropped by gc; a bundle that is merely unmounted (a reboot) keeps
its lease until ``ociimg umount`` releases it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from ociimg.digest import Digest
from ociimg.errors import OciimgError
from ociimg.fsutil import atomic_write
from ociimg.store.files import read_regular

MARKER = ".ociimg-overlay.json"
_MAX_RECORD = 1 << 20


def leases_dir(root: Path) -> Path:
    return root / "leases"


def add_lease(root: Path, bundle: Path, snapshots: list[Digest]) -> str:
    """Record that ``bundle`` uses ``snapshots``; returns the lease id."""
    lease_id = secrets.token_hex(16)
    leases_dir(root).mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(leases_dir(root) / f"{lease_id}.json", json.dumps({
        "id": lease_id, "bundle": str(bundle), "snapshots": [str(d) for d in snapshots],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode(), mode=0o600)
    return lease_id


def release_lease(root: Path, lease_id: str) -> None:
    if _valid_id(lease_id):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(leases_dir(root) / f"{lease_id}.json")


def read_marker(bundle: Path) -> dict[str, Any] | None:
    """The overlay marker of a bundle made by ``unpack --overlay``; None if absent or
    unreadable (then the bundle is not ours, or no longer)."""
    try:
        doc = json.loads(read_regular(bundle / MARKER, _MAX_RECORD))
    except (OciimgError, OSError, ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def active_leases(root: Path) -> list[dict[str, Any]]:
    """Every lease whose bundle still names it, shaped like a container meta (its
    ``snapshots`` list is what gc keeps). Stale ones are removed."""
    out: list[dict[str, Any]] = []
    directory = leases_dir(root)
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.json")):
        try:
            lease = json.loads(read_regular(path, _MAX_RECORD))
        except FileNotFoundError:
            continue
        except (OciimgError, OSError, ValueError, RecursionError):
            # What it protects is unknown: gc then keeps every snapshot (see maintenance).
            out.append({"snapshots": [], "unreadable": str(path)})
            continue
        if not isinstance(lease, dict) or not isinstance(lease.get("bundle"), str):
            continue
        marker = read_marker(Path(lease["bundle"]))
        if marker is None or marker.get("lease") != lease.get("id"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # the bundle is gone or another lease's now
            continue
        out.append(lease)
    return out


def _valid_id(lease_id: object) -> bool:
    return isinstance(lease_id, str) and len(lease_id) == 32 and \
        all(c in "0123456789abcdef" for c in lease_id)
