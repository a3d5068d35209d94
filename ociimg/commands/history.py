"""An image's history (``docker history``): one row per config history step, newest
first, each non-empty step matched with the layer it made."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ociimg.spec import ImageConfig, Manifest

_NOP = "/bin/sh -c #(nop) "


def history_rows(manifest: Manifest, config: ImageConfig,
                 unpacked: Mapping[str, int | None] | None = None) -> list[dict[str, Any]]:
    """``created``, ``createdBy``, ``size`` (the layer blob's compressed size; 0 for an
    empty layer), ``uncompressedSize`` (from ``unpacked`` by layer digest: None when not
    known), ``comment``, ``layer`` (digest or None), newest first. Steps beyond the
    layers, or layers beyond the steps (images without history), still get a row."""
    unpacked = unpacked or {}
    rows: list[dict[str, Any]] = []
    layers = list(manifest.layers)
    li = 0
    for step in config.history:
        empty = bool(step.get("empty_layer"))
        layer = None if empty or li >= len(layers) else layers[li]
        if layer is not None:
            li += 1
        rows.append({"created": _text(step.get("created")),
                     "createdBy": _text(step.get("created_by")),
                     "size": layer.size if layer else 0,
                     "uncompressedSize": unpacked.get(str(layer.digest)) if layer else 0,
                     "comment": _text(step.get("comment")),
                     "emptyLayer": empty,
                     "layer": str(layer.digest) if layer else None})
    for layer in layers[li:]:  # no history entries for these
        rows.append({"created": "", "createdBy": "", "size": layer.size,
                     "uncompressedSize": unpacked.get(str(layer.digest)), "comment": "",
                     "emptyLayer": False, "layer": str(layer.digest)})
    rows.reverse()
    return rows


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def short_created_by(text: str) -> str:
    """Docker's display form: the ``#(nop)`` shell prefix of metadata steps dropped."""
    return text.removeprefix(_NOP).strip() if text.startswith(_NOP) else text
