"""Typed, strictly parsed OCI and Docker v2 documents.

Every document keeps ``raw`` (the exact bytes received: digests are computed over
these, never over a re-serialisation) and ``extra`` (unknown fields, so a rewrite
keeps them). Errors name the JSON path: ``manifest.layers[2].digest: …``.
"""

from __future__ import annotations

import json
import platform as _platform
import re
from dataclasses import dataclass, field
from typing import Any

from ociimg.digest import Digest
from ociimg.errors import InvalidDocument, NoMatchingPlatform

# Media types -----------------------------------------------------------------
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})
LAYER_TYPES = frozenset({
    OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_LAYER_NONDIST, OCI_LAYER_NONDIST_GZIP,
    OCI_LAYER_NONDIST_ZSTD, DOCKER_LAYER_GZIP, DOCKER_LAYER_FOREIGN,
})
# What a client sends as Accept when resolving a tag (distribution-spec content negotiation).
MANIFEST_ACCEPT = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

# Caps on JSON documents read from the network or disk (containers/image iolimits).
MAX_MANIFEST_BYTES = 4 << 20
MAX_CONFIG_BYTES = 4 << 20
# Nesting cap for JSON documents: real ones nest fewer than ten levels; the cap keeps every
# later json.dumps/copy of a document (index.json rewrites, inspect) far from the
# interpreter's recursion limit.
MAX_JSON_DEPTH = 100
MAX_SIZE = 2**63 - 1  # descriptor sizes are int64 (image-spec descriptor.md)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


# Helpers ---------------------------------------------------------------------
def load_json(raw: bytes, what: str, limit: int) -> Any:
    """Parse a JSON document from an untrusted source: size and nesting capped, NaN and
    Infinity refused (not JSON), lone UTF-16 surrogates (``"\\ud800"``, which no UTF-8
    text can hold) replaced by U+FFFD as Go's encoding/json does, so every string can be
    printed and written back. Every failure is an InvalidDocument naming ``what``."""
    if len(raw) > limit:
        raise InvalidDocument(f"{what}: {len(raw)} bytes exceeds the {limit}-byte limit")
    try:
        doc = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise InvalidDocument(f"{what}: JSON nested deeper than {MAX_JSON_DEPTH} levels"
                              ) from None
    except (ValueError, UnicodeDecodeError, TypeError) as exc:
        raise InvalidDocument(f"{what}: not valid JSON ({exc})") from exc
    return _clean(doc, what)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _clean_str(text: str) -> str:
    return _LONE_SURROGATE.sub("\ufffd", text)


def _clean(doc: Any, what: str) -> Any:
    """Check the depth and replace lone surrogates, iteratively (no recursion to exhaust)."""
    if isinstance(doc, str):
        return _clean_str(doc)
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise InvalidDocument(f"{what}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(node, dict):
            if any(_LONE_SURROGATE.search(k) for k in node):
                items = [(_clean_str(k), v) for k, v in node.items()]
                node.clear()
                node.update(items)
            for k, v in node.items():
                if isinstance(v, str):
                    node[k] = _clean_str(v)
                elif isinstance(v, (dict, list)):
                    stack.append((v, depth + 1))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                if isinstance(v, str):
                    node[i] = _clean_str(v)
                elif isinstance(v, (dict, list)):
                    stack.append((v, depth + 1))
    return doc


def _load(raw: bytes, what: str, limit: int) -> dict[str, Any]:
    doc = load_json(raw, what, limit)
    if not isinstance(doc, dict):
        raise InvalidDocument(f"{what}: expected a JSON object")
    return doc


def _get(doc: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str,
         *, required: bool = True, default: Any = None) -> Any:
    if key not in doc or doc[key] is None:
        if required:
            raise InvalidDocument(f"{where}.{key}: missing")
        return default
    value = doc[key]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise InvalidDocument(f"{where}.{key}: wrong type {type(value).__name__}")
    return value


def _str_map(doc: dict[str, Any], key: str, where: str) -> dict[str, str]:
    value = _get(doc, key, dict, where, required=False, default={})
    for k, v in value.items():
        if not isinstance(v, str):
            raise InvalidDocument(f"{where}.{key}[{k!r}]: not a string")
    return dict(value)


def _extra(doc: dict[str, Any], known: set[str]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in known}


# Platform --------------------------------------------------------------------
_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
           "armv7l": "arm", "armv6l": "arm", "i386": "386", "i686": "386",
           "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os/arch[/variant]``, as in ``--platform linux/arm64/v8``."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidDocument(f"platform {text!r}: expected os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None).normalized()

    @classmethod
    def host(cls) -> Platform:
        machine = _platform.machine()
        arch = _GOARCH.get(machine, machine)
        variant = {"armv7l": "v7", "armv6l": "v6"}.get(machine)
        return cls("linux", arch, variant)

    @classmethod
    def from_json(cls, doc: dict[str, Any], where: str) -> Platform:
        return cls(
            os=_get(doc, "os", str, where),
            architecture=_get(doc, "architecture", str, where),
            variant=_get(doc, "variant", str, where, required=False),
            os_version=_get(doc, "os.version", str, where, required=False),
            os_features=tuple(_get(doc, "os.features", list, where, required=False, default=[])),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        return out

    def normalized(self) -> Platform:
        arch = _GOARCH.get(self.architecture, self.architecture)
        variant = self.variant
        if arch == "arm64" and variant in (None, "v8"):
            variant = None
        return Platform(self.os, arch, variant, self.os_version, self.os_features)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def _variant_candidates(want: Platform) -> list[str | None]:
    """arm variants fall back v8 → v7 → v6 → v5 (containers/image platform_matcher)."""
    if want.architecture != "arm":
        return [want.variant]
    order = ["v8", "v7", "v6", "v5"]
    start = order.index(want.variant) if want.variant in order else 1
    return [*order[start:], None]


# Descriptor ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    platform: Platform | None = field(default=None, compare=False, hash=False)
    urls: tuple[str, ...] = field(default=(), compare=False, hash=False)
    artifact_type: str | None = field(default=None, compare=False, hash=False)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    _KNOWN = {"mediaType", "digest", "size", "annotations", "platform", "urls", "artifactType"}

    @classmethod
    def from_json(cls, doc: Any, where: str) -> Descriptor:
        if not isinstance(doc, dict):
            raise InvalidDocument(f"{where}: expected an object")
        size = _get(doc, "size", int, where)
        if size < 0:
            raise InvalidDocument(f"{where}.size: negative size {size}")
        if size > MAX_SIZE:
            raise InvalidDocument(f"{where}.size: {str(size)[:20]}… is out of range")
        plat = doc.get("platform")
        return cls(
            media_type=_get(doc, "mediaType", str, where),
            digest=Digest.parse(_get(doc, "digest", str, where), where=f"{where}.digest"),
            size=size,
            annotations=_str_map(doc, "annotations", where),
            platform=(Platform.from_json(plat, f"{where}.platform")
                      if isinstance(plat, dict) else None),
            urls=tuple(_get(doc, "urls", list, where, required=False, default=[])),
            artifact_type=_get(doc, "artifactType", str, where, required=False),
            extra=_extra(doc, cls._KNOWN),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest),
                               "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform:
            out["platform"] = self.platform.to_json()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        out.update(self.extra)
        return out

    def with_annotations(self, annotations: dict[str, str]) -> Descriptor:
        return Descriptor(self.media_type, self.digest, self.size, dict(annotations),
                          self.platform, self.urls, self.artifact_type, self.extra)

    @property
    def is_attestation(self) -> bool:
        p = self.platform
        return (p is not None and p.os == "unknown" and p.architecture == "unknown") or \
            self.annotations.get("vnd.docker.reference.type") == "attestation-manifest"


# Documents -------------------------------------------------------------------
def _check_media_type(doc: dict[str, Any], where: str, allowed: frozenset[str],
                      declared: str | None) -> str:
    if declared:
        # distribution-spec: Content-Type parameters (charset=…) are not part of the type.
        declared = declared.split(";", 1)[0].strip() or None
    body_type = doc.get("mediaType")
    if body_type is not None and not isinstance(body_type, str):
        raise InvalidDocument(f"{where}.mediaType: not a string")
    if body_type in SCHEMA1_TYPES or declared in SCHEMA1_TYPES or doc.get("schemaVersion") == 1:
        raise InvalidDocument(f"{where}: Docker schema1 manifests are not supported",
                              hint="re-push the image with a current client (schema2 or OCI)")
    if doc.get("schemaVersion") != 2:
        raise InvalidDocument(
            f"{where}.schemaVersion: expected 2, got {doc.get('schemaVersion')!r}")
    media_type = body_type or declared
    if declared and body_type and declared != body_type:
        raise InvalidDocument(
            f"{where}: Content-Type {declared} does not match body mediaType {body_type}")
    if media_type is None:
        # OCI allows a missing mediaType; guess from shape.
        media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if media_type not in allowed:
        raise InvalidDocument(f"{where}.mediaType: unexpected {media_type}")
    return media_type


@dataclass(frozen=True, slots=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: dict[str, str]
    subject: Descriptor | None
    artifact_type: str | None
    raw: bytes = field(repr=False)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    _KNOWN = {"schemaVersion", "mediaType", "config", "layers", "annotations", "subject",
              "artifactType"}

    @property
    def digest(self) -> Digest:
        return Digest.of(self.raw)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type,
                               "config": self.config.to_json(),
                               "layers": [d.to_json() for d in self.layers]}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.subject:
            out["subject"] = self.subject.to_json()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        out.update(self.extra)
        return out


@dataclass(frozen=True, slots=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: dict[str, str]
    raw: bytes = field(repr=False)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    _KNOWN = {"schemaVersion", "mediaType", "manifests", "annotations"}

    @property
    def digest(self) -> Digest:
        return Digest.of(self.raw)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type,
                               "manifests": [d.to_json() for d in self.manifests]}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        out.update(self.extra)
        return out

    def platforms(self) -> list[Platform]:
        return [d.platform for d in self.manifests if d.platform and not d.is_attestation]


def parse_manifest(raw: bytes, media_type: str | None = None, where: str = "manifest") -> Manifest:
    doc = _load(raw, where, MAX_MANIFEST_BYTES)
    mt = _check_media_type(doc, where, MANIFEST_TYPES, media_type)
    layers = _get(doc, "layers", list, where)
    subject = doc.get("subject")
    return Manifest(
        media_type=mt,
        config=Descriptor.from_json(_get(doc, "config", dict, where), f"{where}.config"),
        layers=tuple(Descriptor.from_json(d, f"{where}.layers[{i}]") for i, d in enumerate(layers)),
        annotations=_str_map(doc, "annotations", where),
        subject=Descriptor.from_json(subject, f"{where}.subject") if subject else None,
        artifact_type=_get(doc, "artifactType", str, where, required=False),
        raw=raw,
        extra=_extra(doc, Manifest._KNOWN),
    )


def parse_index(raw: bytes, media_type: str | None = None, where: str = "index") -> Index:
    doc = _load(raw, where, MAX_MANIFEST_BYTES)
    mt = _check_media_type(doc, where, INDEX_TYPES, media_type)
    manifests = _get(doc, "manifests", list, where)
    return Index(
        media_type=mt,
        manifests=tuple(Descriptor.from_json(d, f"{where}.manifests[{i}]")
                        for i, d in enumerate(manifests)),
        annotations=_str_map(doc, "annotations", where),
        raw=raw,
        extra=_extra(doc, Index._KNOWN),
    )


def parse_manifest_or_index(raw: bytes, media_type: str | None = None,
                            where: str = "manifest") -> Manifest | Index:
    """Parse a document fetched by tag: the body (or Content-Type) says which it is."""
    doc = _load(raw, where, MAX_MANIFEST_BYTES)
    if not isinstance(doc.get("mediaType"), (str, type(None))):
        raise InvalidDocument(f"{where}.mediaType: not a string")
    body_type = doc.get("mediaType") or (media_type or "").split(";", 1)[0].strip() or None
    if body_type in INDEX_TYPES or (body_type is None and "manifests" in doc):
        return parse_index(raw, media_type, where)
    return parse_manifest(raw, media_type, where)


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """The image config (image-spec config.md); ``config`` is the runtime part (``Config``)."""

    platform: Platform
    config: dict[str, Any]
    diff_ids: tuple[Digest, ...]
    history: tuple[dict[str, Any], ...]
    created: str | None
    author: str | None
    raw: bytes = field(repr=False)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    _KNOWN = {"architecture", "os", "variant", "os.version", "os.features", "config", "rootfs",
              "history", "created", "author"}

    @property
    def digest(self) -> Digest:
        return Digest.of(self.raw)

    # Typed accessors for the runtime part of the config.
    @property
    def env(self) -> list[str]:
        return list(self.config.get("Env") or [])

    @property
    def entrypoint(self) -> list[str]:
        return list(self.config.get("Entrypoint") or [])

    @property
    def cmd(self) -> list[str]:
        return list(self.config.get("Cmd") or [])

    @property
    def working_dir(self) -> str:
        return self.config.get("WorkingDir") or ""

    @property
    def user(self) -> str:
        return self.config.get("User") or ""

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.get("Labels") or {})

    @property
    def stop_signal(self) -> str | None:
        return self.config.get("StopSignal")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.created:
            out["created"] = self.created
        if self.author:
            out["author"] = self.author
        out.update(self.platform.to_json())
        out["config"] = dict(self.config)
        out["rootfs"] = {"type": "layers", "diff_ids": [str(d) for d in self.diff_ids]}
        if self.history:
            out["history"] = [dict(h) for h in self.history]
        out.update(self.extra)
        return out


_CONFIG_LIST_FIELDS = ("Env", "Entrypoint", "Cmd")
_CONFIG_STR_FIELDS = ("User", "WorkingDir", "StopSignal")


def parse_config(raw: bytes, where: str = "config") -> ImageConfig:
    doc = _load(raw, where, MAX_CONFIG_BYTES)
    rootfs = _get(doc, "rootfs", dict, where)
    if rootfs.get("type") != "layers":
        raise InvalidDocument(f"{where}.rootfs.type: expected 'layers'")
    diff_ids = _get(rootfs, "diff_ids", list, f"{where}.rootfs")
    cfg = _get(doc, "config", dict, where, required=False, default={})
    for key in _CONFIG_LIST_FIELDS:
        value = cfg.get(key)
        if value is not None and (not isinstance(value, list)
                                  or not all(isinstance(v, str) for v in value)):
            raise InvalidDocument(f"{where}.config.{key}: expected a list of strings")
    for key in _CONFIG_STR_FIELDS:
        if cfg.get(key) is not None and not isinstance(cfg[key], str):
            raise InvalidDocument(f"{where}.config.{key}: expected a string")
    for key in ("Labels",):
        if cfg.get(key) is not None:
            _str_map(cfg, key, f"{where}.config")
    history = _get(doc, "history", list, where, required=False, default=[])
    return ImageConfig(
        platform=Platform(
            os=_get(doc, "os", str, where),
            architecture=_get(doc, "architecture", str, where),
            variant=_get(doc, "variant", str, where, required=False),
            os_version=_get(doc, "os.version", str, where, required=False),
            os_features=tuple(_get(doc, "os.features", list, where, required=False, default=[])),
        ),
        config=cfg,
        diff_ids=tuple(Digest.parse(d, where=f"{where}.rootfs.diff_ids[{i}]")
                       for i, d in enumerate(diff_ids)),
        history=tuple(h for h in history if isinstance(h, dict)),
        created=_get(doc, "created", str, where, required=False),
        author=_get(doc, "author", str, where, required=False),
        raw=raw,
        extra=_extra(doc, ImageConfig._KNOWN),
    )


def match_platform(index: Index, want: Platform) -> Descriptor:
    """Pick the manifest for ``want``; arm variants fall back; attestations are skipped."""
    want = want.normalized()
    candidates = [d for d in index.manifests
                  if d.platform and not d.is_attestation and d.media_type not in INDEX_TYPES]
    for variant in _variant_candidates(want):
        for d in candidates:
            p = d.platform.normalized()  # type: ignore[union-attr]
            if p.os == want.os and p.architecture == want.architecture and \
                    (p.variant == variant or (variant is None and want.variant is None)):
                return d
    available = ", ".join(sorted({str(p) for p in index.platforms()})) or "none"
    raise NoMatchingPlatform(f"no image for platform {want} (available: {available})",
                             hint="choose one with --platform OS/ARCH[/VARIANT]")


def canonical_json(doc: dict[str, Any]) -> bytes:
    """The bytes we write for documents we create (sorted keys, compact). What cannot be
    written as UTF-8 JSON (a lone surrogate, NaN) is an InvalidDocument, never half a file."""
    try:
        return json.dumps(doc, separators=(",", ":"), sort_keys=True, ensure_ascii=False,
                          allow_nan=False).encode()
    except UnicodeEncodeError as exc:
        raise InvalidDocument(f"document: text {exc.object[exc.start:exc.end]!r} is not "
                              "valid Unicode (a lone surrogate)") from None
    except (ValueError, RecursionError) as exc:
        raise InvalidDocument(f"document: cannot be written as JSON ({exc})") from None


def chain_ids(diff_ids: tuple[Digest, ...] | list[Digest]) -> list[Digest]:
    """image-spec config.md: ChainID(L0) = DiffID(L0);
    ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    out: list[Digest] = []
    for d in diff_ids:
        out.append(d if not out else Digest.of(f"{out[-1]} {d}".encode()))
    return out


def check_layers(manifest: Manifest, config: ImageConfig) -> None:
    """A manifest and its config describe the same number of layers."""
    if len(manifest.layers) != len(config.diff_ids):
        raise InvalidDocument(f"manifest {manifest.digest}: {len(manifest.layers)} layers but "
                              f"the config lists {len(config.diff_ids)} diff_ids")
