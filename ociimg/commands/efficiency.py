"""``ociimg du``: per-layer sizes and the bytes an image wastes on files that later
layers overwrite or delete, computed as dive computes them (wagoodman/dive
filetree/efficiency.go): every path touched by more than one layer counts with the
sum of the sizes of all its versions (a deleted dir with the size of what it held),
and the efficiency score is the sum of each path's smallest version over that sum."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ociimg.commands.history import history_rows
from ociimg.commands.imagefs import Entry, Node, merged_tree, subtree_size
from ociimg.commands.imagesource import OpenedImage


@dataclass
class PathUse:
    count: int = 0
    cumulative: int = 0
    smallest: int = -1

    def add(self, size: int) -> None:
        self.count += 1
        self.cumulative += size
        if self.smallest < 0 or size < self.smallest:
            self.smallest = size


@dataclass
class LayerUse:
    index: int
    digest: str
    compressed: int
    size: int = 0  # the sum of its files' sizes (dive's layer size)
    entries: int = 0
    created_by: str = ""


@dataclass
class Usage:
    layers: list[LayerUse]
    paths: dict[str, PathUse] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(layer.size for layer in self.layers)

    @property
    def wasted(self) -> int:
        return sum(u.cumulative for u in self.paths.values() if u.count > 1)

    @property
    def wasted_fraction(self) -> float:
        return self.wasted / self.total if self.total else 0.0

    @property
    def score(self) -> float:
        seen = sum(u.cumulative for u in self.paths.values())
        least = sum(max(u.smallest, 0) for u in self.paths.values())
        return least / seen if seen else 1.0

    def offenders(self, limit: int = 20) -> list[tuple[str, PathUse]]:
        worst = [(p, u) for p, u in self.paths.items() if u.count > 1 and u.cumulative > 0]
        worst.sort(key=lambda pu: (-pu[1].cumulative, pu[0]))
        return worst[:limit]

    def to_json(self, limit: int = 20) -> dict[str, Any]:
        return {
            "layers": [{"index": u.index, "digest": u.digest, "compressedSize": u.compressed,
                        "size": u.size, "entries": u.entries, "createdBy": u.created_by}
                       for u in self.layers],
            "size": self.total, "wastedBytes": self.wasted,
            "wastedPercent": round(100 * self.wasted_fraction, 2),
            "efficiency": round(self.score, 4),
            "worst": [{"path": "/" + p, "count": u.count, "totalSize": u.cumulative}
                      for p, u in self.offenders(limit)],
        }


def image_usage(image: OpenedImage) -> Usage:
    made_by = [r["createdBy"] for r in reversed(history_rows(image.manifest, image.config))
               if not r["emptyLayer"]]
    layers = [LayerUse(i, str(d.digest), d.size, created_by=made_by[i] if i < len(made_by)
                       else "") for i, d in enumerate(image.manifest.layers)]
    usage = Usage(layers)

    def on_entry(layer: int, entry: Entry) -> None:
        layers[layer].entries += 1
        layers[layer].size += entry.size if entry.kind == "file" else 0
        if entry.kind not in ("whiteout", "opaque"):
            usage.paths.setdefault(entry.path, PathUse()).add(
                entry.size if entry.kind == "file" else 0)

    def on_delete(path: str, node: Node, _layer: int, replaced: bool) -> None:
        if not replaced:
            usage.paths.setdefault(path, PathUse()).add(subtree_size(node))

    merged_tree(image, on_entry=on_entry, on_delete=on_delete)
    return usage

