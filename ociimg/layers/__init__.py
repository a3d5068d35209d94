"""Layers: streams (compression), the safe tar applier, snapshots, overlay mounts.

Modules: ``compression`` (media type + magic → stream), ``paths`` (resolve inside a
root), ``apply`` (one tar → a tree, DIR or OVERLAY format), ``unpack`` (blobs →
verified trees, flattened rootfs), ``snapshots`` (chain-ID keyed overlay-format
layers), ``overlay`` (mounts), ``flatten`` (snapshots → one tree without overlayfs).
"""

from ociimg.layers.apply import ApplyOptions, ApplyResult, OnDiskFormat, apply_layer

__all__ = ["ApplyOptions", "ApplyResult", "OnDiskFormat", "apply_layer"]
