"""Find an image by what a user typed: a store name, an ``oci:`` layout, or a registry
reference (pulled into the store first when it is not there)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

# The resolved image is the containers stage's input: defined there, re-exported here.
from ociimg.containers.resolved import ResolvedImage, warn_unsafe_labels
from ociimg.errors import ImageNotFound, InvalidReference
from ociimg.events import NullProgress, Progress
from ociimg.reference import (
    LAYOUT_KINDS,
    LayoutReference,
    Reference,
    parse_image_name,
)
from ociimg.spec import Platform
from ociimg.store import Store
from ociimg.transports import find_store_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ociimg.registry import PullOptions


def store_name(store: Store, text: str) -> str:
    name = find_store_name(store, text)
    if name is None:
        raise ImageNotFound(f"image {text} not found in the store {store.path}",
                            hint="pull it first, or list what is there with `ociimg images`")
    return name


def resolve_image(text: str, root: Path, *, platform: Platform | None = None,
                  pull_options: PullOptions | None = None,
                  progress: Progress | None = None) -> ResolvedImage:
    """The image ``text`` names, in a store, for run and unpack: an ``oci:`` layout is
    used in place; an archive or ``dir:`` image is copied into the store first (as a
    registry image is pulled), so its layers become snapshots like any other."""
    progress = progress or NullProgress()
    want = platform or Platform.host()
    ref = _local_or_none(text)
    if ref is not None and ref.kind == "oci":
        store, name = Store(ref.path), ref.tag or _only_name(ref)
    elif ref is not None:
        from ociimg.transports import import_image

        store = Store.open(root)
        name = import_image(ref, store, want)
    else:
        store = Store.open(root)
        name = find_store_name(store, text)
        if name is None:
            name = _pull_missing(text, store, want, pull_options, progress)
    desc, manifest, config = store.image_for(name, want)
    return ResolvedImage(store, name, desc, manifest, config)


def _local_or_none(text: str) -> LayoutReference | None:
    if not text.startswith(tuple(f"{kind}:" for kind in LAYOUT_KINDS)):
        return None
    ref = parse_image_name(text)
    assert isinstance(ref, LayoutReference)
    return ref


def _only_name(ref: LayoutReference) -> str:
    """An oci: layout without a name: its one image's name (the error lists them)."""
    from ociimg.registry.copy import open_local, resolve_layout

    store = open_local(ref)
    desc = resolve_layout(store, ref)
    for name, d in store.refs():
        if d.digest == desc.digest:
            return name
    return str(desc.digest)


def _pull_missing(text: str, store: Store, platform: Platform,
                  options: PullOptions | None, progress: Progress) -> str:
    try:
        ref = parse_image_name(text)
    except InvalidReference as exc:
        raise ImageNotFound(f"image {text} not found in the store and not a valid reference "
                            f"({exc.message})") from exc
    assert isinstance(ref, Reference)
    # The registry client (requests, urllib3) only when pulling: ~25 ms of every
    # `ociimg run` of an image that is already present.
    from ociimg.registry import PullOptions, pull
    options = options or PullOptions()
    if options.platform is None:
        options = dataclasses.replace(options, platform=platform)
    result = pull(ref, store, options, progress)
    return str(result.reference)


__all__ = ["ResolvedImage", "find_store_name", "resolve_image", "store_name",
           "warn_unsafe_labels"]
