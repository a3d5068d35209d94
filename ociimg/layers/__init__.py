"""Layers: streams (compression), the safe tar applier, snapshots, overlay mounts.

Modules: ``compression`` (media type + magic → stream), ``paths`` (resolve inside a
root), ``ondisk`` (the on-disk format: plain dir or overlay upper), ``apply`` (one tar →
a tree; what differs by format is a ``formats``/``upperdir`` strategy object, the entry's
metadata ``entrymeta``, file contents ``filedata``), ``unpack`` (blobs → verified trees, flattened rootfs),
``snapshots`` (chain-ID keyed overlay-format layers; ``active``: writable snapshots by
key), ``overlay`` (Mount values, mounts), ``flatten`` (snapshots → one tree without
overlayfs), ``diff`` (active snapshot → changeset tar: ``changes``, ``lowertree``,
``tarwriter``).
"""

__all__ = ["ApplyOptions", "ApplyResult", "OnDiskFormat", "apply_layer"]


def __getattr__(name: str) -> object:
    # The applier (tarfile, the tar reader) loads on first use: `ociimg run` with its
    # snapshots present, and `from ociimg.layers import paths`, never need it.
    if name in __all__:
        from ociimg.layers import apply
        return getattr(apply, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
