"""The rows of ``ociimg images``: one per stored name, with docker's columns.

SIZE is the image's uncompressed size (what docker and podman show): each layer's
uncompressed length is read from the compressed blob's own metadata — gzip's ISIZE
trailer (RFC 1952 §2.3.1: the length modulo 2^32, so it is lifted to the first value
not below the compressed length) or a zstd frame's Frame_Content_Size (RFC 8878
§3.1.1.1.2) — without decompressing; a layer that records neither counts its
compressed size.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ociimg import spec
from ociimg.digest import Digest
from ociimg.errors import InvalidArgument, OciimgError
from ociimg.filters import labels_match, parse_filters
from ociimg.store import Store


@dataclass(frozen=True)
class ImageRow:
    name: str                 # as stored; a digest for an unnamed image
    repository: str           # "<none>" for an unnamed image
    tag: str
    digest: Digest            # of the manifest or index the name points at
    media_type: str
    image_id: Digest | None   # the config digest (docker's image ID) for this platform
    created: datetime | None
    size: int                 # uncompressed, the layers present here
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def dangling(self) -> bool:
        return self.repository == "<none>"

    def fields(self, *, no_trunc: bool = False) -> dict[str, Any]:
        """The template fields (docker's names)."""
        image_id = str(self.image_id or self.digest)
        return {"Repository": self.repository, "Tag": self.tag,
                "ID": image_id if no_trunc else image_id.removeprefix("sha256:")[:12],
                "Digest": str(self.digest),
                "CreatedSince": created_since(self.created),
                "CreatedAt": self.created.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")
                if self.created else "<unknown>",
                "Size": human_size(self.size), "Labels": self.labels, "Name": self.name}


def image_rows(store: Store, platform: spec.Platform | None = None) -> list[ImageRow]:
    rows = []
    for name, desc in sorted(store.refs(), key=lambda r: r[0]):
        repository, tag = split_name(name)
        image_id, created, size, labels = None, None, 0, {}
        try:
            _d, manifest, config = store.image_for(name, platform or spec.Platform.host())
            image_id, created = manifest.config.digest, _created(config)
            size = sum(uncompressed_size(store, layer) for layer in manifest.layers)
            labels = config.labels
        except OciimgError:  # an artifact, another platform, a partial pull: listed anyway
            size = sum(d.size for d in store.walk(desc, on_error=lambda _d, _e: None)
                       if store.has_blob(d.digest))
        rows.append(ImageRow(name, repository, tag, desc.digest, desc.media_type, image_id,
                             created, size, labels))
    return rows


def split_name(name: str) -> tuple[str, str]:
    """(repository, tag) of a stored name; an unnamed (digest) image is <none> <none>."""
    if name.startswith(("sha256:", "sha512:")):
        return "<none>", "<none>"
    repo, at, _digest = name.partition("@")
    if at:
        return repo, "<none>"
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        return name[:colon], name[colon + 1:]
    return name, "<none>"


def filter_rows(rows: list[ImageRow], filters: list[str], store: Store) -> list[ImageRow]:
    """docker's ``--filter``: reference=GLOB, dangling=true|false, before=IMAGE,
    since=IMAGE, label=KEY[=VALUE]. Several of one key: any matches, except labels, which
    must all hold (dockerd's rule); keys: all."""
    by_key = parse_filters(filters, ("reference", "dangling", "before", "since", "label"))
    for key, values in by_key.items():
        if key == "label":
            rows = [r for r in rows if labels_match(r.labels, values)]
        else:
            rows = [r for r in rows if any(_matches(r, key, v, rows, store) for v in values)]
    return rows


def _matches(row: ImageRow, key: str, value: str, rows: list[ImageRow], store: Store) -> bool:
    if key == "reference":
        names = {row.repository, row.name, f"{row.repository}:{row.tag}",
                 row.repository.removeprefix("docker.io/").removeprefix("library/")}
        return not row.dangling and any(fnmatch.fnmatchcase(n, value) for n in names)
    if key == "dangling":
        if value not in ("true", "false", "1", "0"):
            raise InvalidArgument(f"images: dangling={value[:20]!r}: use true or false")
        return row.dangling == (value in ("true", "1"))
    reference = _reference_time(value, rows, store)
    if row.created is None:
        return False
    return row.created < reference if key == "before" else row.created > reference


def _reference_time(text: str, rows: list[ImageRow], store: Store) -> datetime:
    from ociimg.commands.resolve import store_name

    name = store_name(store, text)
    for row in rows:
        if row.name == name and row.created is not None:
            return row.created
    raise InvalidArgument(f"images: {text[:80]} has no creation time to compare with")


def _created(config: spec.ImageConfig) -> datetime | None:
    text = config.to_json().get("created")
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def uncompressed_size(store: Store, layer: spec.Descriptor) -> int:
    """A layer's uncompressed length from its blob's metadata (see the module doc)."""
    try:
        with store.open_blob(layer.digest) as f:
            head = f.read(18)
            if head[:2] == b"\x1f\x8b" and layer.size >= 18:
                f.seek(layer.size - 4)
                isize = int.from_bytes(f.read(4), "little")
                while isize < layer.size - 18:
                    isize += 1 << 32
                return isize
            if head[:4] == b"\x28\xb5\x2f\xfd":
                return _zstd_content_size(head) or layer.size
    except (OSError, OciimgError):
        pass
    return layer.size


def _zstd_content_size(head: bytes) -> int | None:
    descriptor = head[4]
    fcs_flag, single = descriptor >> 6, (descriptor >> 5) & 1
    pos = 5 + (0 if single else 1) + (0, 1, 2, 4)[descriptor & 3]
    width = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if width == 0 or pos + width > len(head):
        return None
    value = int.from_bytes(head[pos:pos + width], "little")
    return value + 256 if width == 2 else value


def created_since(when: datetime | None, now: datetime | None = None) -> str:
    """docker's "N units ago" (go-units HumanDuration)."""
    if when is None:
        return "<unknown>"
    seconds = ((now or datetime.now(UTC)) - when).total_seconds()
    if seconds < 1:
        return "Less than a second ago"
    for limit, unit, div in ((60, "second", 1), (3600, "minute", 60), (172800, "hour", 3600),
                             (1209600, "day", 86400), (5259600, "week", 604800),
                             (63115200, "month", 2629800)):
        if seconds < limit:
            n = int(seconds // div)
            if unit == "hour" and n < 2:
                return "About an hour ago"
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return f"{int(seconds // 31557600)} years ago"


def human_size(n: int) -> str:
    """docker's units.HumanSize: decimal units, 3 significant digits."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.3g}{unit}"
        size /= 1000
    return f"{n}B"

