"""``ociimg diff IMAGE1 IMAGE2``: files added, changed and removed between two images'
merged trees, compared by content digest (mtimes are ignored: a rebuild that only
touches times changes nothing here)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ociimg.commands.imagefs import Entry, MergedTree, merged_tree
from ociimg.commands.imagesource import OpenedImage

Signature = tuple[str, int, int, int, str | None, str]


def signature(entry: Entry | None) -> Signature:
    if entry is None:  # an implicit parent dir
        return ("dir", 0o755, 0, 0, None, "")
    if entry.kind == "hardlink":  # the same content as its target: a file
        return ("file", entry.mode, entry.uid, entry.gid, entry.digest, "")
    return (entry.kind, entry.mode, entry.uid, entry.gid, entry.digest, entry.linkname)


def _flat(tree: MergedTree) -> Iterator[tuple[str, Signature]]:
    for path, node in tree.walk():
        if path:
            yield path, signature(node.entry)


def _reasons(old: Signature, new: Signature) -> list[str]:
    names = ("type", "mode", "uid", "gid", "content", "link target")
    return [name for name, a, b in zip(names, old, new, strict=True) if a != b]


def image_diff(old: OpenedImage, new: OpenedImage) -> list[dict[str, Any]]:
    """``kind`` (A, C, D as ``docker diff``), ``path`` and, for C, what differs; sorted
    by path. Two merged trees are held (one node per path), file contents streamed."""
    before = dict(_flat(merged_tree(old, hash_data=True)))
    changes: list[dict[str, Any]] = []
    for path, sig in _flat(merged_tree(new, hash_data=True)):
        was = before.pop(path, None)
        if was is None:
            changes.append({"kind": "A", "path": "/" + path})
        elif was != sig:
            changes.append({"kind": "C", "path": "/" + path, "changed": _reasons(was, sig)})
    changes.extend({"kind": "D", "path": "/" + p} for p in before)
    changes.sort(key=lambda c: c["path"])
    return changes
