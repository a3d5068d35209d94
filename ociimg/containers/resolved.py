"""The image a container is made from, as the commands resolved it."""

from __future__ import annotations

from dataclasses import dataclass

from ociimg.digest import Digest
from ociimg.events import Progress
from ociimg.spec import Descriptor, ImageConfig, Manifest, chain_ids
from ociimg.store import Store


@dataclass(frozen=True)
class ResolvedImage:
    """An image found in a store (or an ``oci:`` layout) for one platform."""

    store: Store
    name: str
    descriptor: Descriptor
    manifest: Manifest
    config: ImageConfig

    def chain(self) -> list[Digest]:
        """Chain ids of its layers, bottom to top (the last is the rootfs's parent)."""
        return chain_ids(self.config.diff_ids)


def warn_unsafe_labels(image: ResolvedImage, progress: Progress) -> None:
    """Labels a runtime would act on are dropped from the annotations; say so."""
    from ociimg.bundle import unsafe_labels
    dropped = unsafe_labels(image.config)
    if dropped:
        progress.log(f"warning: image labels not copied to annotations (reserved for "
                     f"runtimes): {', '.join(dropped)}")
