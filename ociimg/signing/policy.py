"""containers' signature policy, ``policy.json`` (containers-policy.json(5)).

Parsed strictly into frozen values, as containers/image's ``policy_config.go`` does: an
unknown or duplicated field, an empty requirement list or a missing ``default`` rejects
the whole file. The scope that applies to an image is the most specific one that
exists (``docker/policyconfiguration/naming.go``): ``host/repo:tag`` (or ``@digest``),
the repository, each parent namespace, the host, ``*.domain`` wildcards (port
stripped), the transport's ``""``, then ``default``; more general scopes are then
ignored entirely. Every requirement of that scope must hold; a ``sigstoreSigned`` one
holds when at least one signature verifies and names an accepted identity.

No crypto is imported here: deciding that an image needs no signature (the common
``insecureAcceptAnything`` policy) stays cheap on every ``run``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ociimg.errors import InvalidDocument, InvalidReference
from ociimg.reference import LayoutReference, Reference, parse_reference

SYSTEM_POLICY = Path("/etc/containers/policy.json")
MAX_POLICY_BYTES = 1 << 20
REQUIREMENT_TYPES = ("insecureAcceptAnything", "reject", "signedBy", "sigstoreSigned")
IDENTITY_FIELDS = {"matchExact": set(), "matchRepoDigestOrExact": set(),
                   "matchRepository": set(), "exactReference": {"dockerReference"},
                   "exactRepository": {"dockerRepository"},
                   "remapIdentity": {"prefix", "signedPrefix"}}
_SIGSTORE_KEYS = ("keyPath", "keyPaths", "keyData", "keyDatas", "fulcio", "pki")
_REKOR_KEYS = ("rekorPublicKeyPath", "rekorPublicKeyPaths", "rekorPublicKeyData",
               "rekorPublicKeyDatas")
_FIELDS = {
    "insecureAcceptAnything": set(),
    "reject": set(),
    "signedBy": {"keyType", "keyPath", "keyPaths", "keyData", "signedIdentity"},
    "sigstoreSigned": {*_SIGSTORE_KEYS, *_REKOR_KEYS, "signedIdentity"},
}


@dataclass(frozen=True, slots=True)
class Identity:
    """signedIdentity: how the signed docker-reference must relate to the image's name."""

    type: str = "matchRepoDigestOrExact"
    value: str | None = None  # dockerReference / dockerRepository
    prefix: str | None = None
    signed_prefix: str | None = None


@dataclass(frozen=True, slots=True)
class Requirement:
    type: str
    keys: tuple[tuple[str, bytes | None], ...] = ()  # (where from, PEM); None: unreadable
    identity: Identity = Identity()
    unsupported: str | None = None  # what ociimg cannot check (fulcio, Rekor, GPG)

    def describe(self) -> str:
        if self.type != "sigstoreSigned":
            return self.type
        return f"sigstoreSigned with {', '.join(src for src, _ in self.keys) or 'no key'}"

    @property
    def accepts_anything(self) -> bool:
        return self.type == "insecureAcceptAnything"


@dataclass(frozen=True, slots=True)
class Policy:
    default: tuple[Requirement, ...]
    transports: dict[str, dict[str, tuple[Requirement, ...]]]
    source: str

    def demands_anything(self) -> bool:
        """False when every scope accepts anything: nothing to check, ever."""
        every = [self.default, *(r for scopes in self.transports.values()
                                 for r in scopes.values())]
        return not all(req.accepts_anything for reqs in every for req in reqs)

    def requirements_for(self, image: Reference | LayoutReference
                         ) -> tuple[str, tuple[Requirement, ...]]:
        """(the scope that applies, written as in the file, its requirements)."""
        transport = transport_of(image)
        scopes = self.transports.get(transport)
        if scopes is not None:
            for candidate in scope_candidates(image):
                if candidate in scopes:
                    return f'transports.{transport}["{candidate}"]', scopes[candidate]
            if "" in scopes:
                return f'transports.{transport}[""]', scopes[""]
        return "default", self.default


def transport_of(image: Reference | LayoutReference) -> str:
    return image.kind if isinstance(image, LayoutReference) else "docker"


def scope_candidates(image: Reference | LayoutReference) -> list[str]:
    """Most specific first (naming.go DockerReferenceIdentity + Namespaces; the oci
    transport's directory and its parents)."""
    if isinstance(image, LayoutReference):
        path = str(Path(image.path).absolute())
        out = [f"{path}:{image.tag}"] if image.tag else []
        while path and path != "/":
            out.append(path)
            path = path.rsplit("/", 1)[0]
        return out
    out = [identity_string(image)]
    name = image.name
    while True:
        out.append(name)
        if "/" not in name:
            break
        name = name.rsplit("/", 1)[0]
    host = name.split(":", 1)[0] if not name.startswith("[") else name
    while "." in host:
        host = host.split(".", 1)[1]
        out.append(f"*.{host}")
    return out


def identity_string(ref: Reference) -> str:
    """host/repo@digest when pinned, else host/repo:tag (the name being evaluated)."""
    return f"{ref.name}@{ref.digest}" if ref.digest else f"{ref.name}:{ref.tag or 'latest'}"


# Loading ---------------------------------------------------------------------
def policy_path(explicit: Path | None) -> Path | None:
    """``--policy``; else $HOME/.config/containers/policy.json if it exists, else
    /etc/containers/policy.json if it exists (the per-user file wins, buildah#2426)."""
    if explicit is not None:
        return explicit
    home = os.environ.get("HOME")
    user = Path(home) / ".config/containers/policy.json" if home else None
    for path in (user, SYSTEM_POLICY):
        if path is not None and path.is_file():
            return path
    return None


def load_policy(explicit: Path | None = None) -> Policy | None:
    """The policy to enforce; None when there is no file or it accepts everything."""
    path = policy_path(explicit)
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise InvalidDocument(f"policy {path}: cannot read ({exc.strerror})") from None
    policy = parse_policy(raw, str(path))
    return policy if explicit is not None or policy.demands_anything() else None


def parse_policy(raw: bytes, source: str = "policy.json") -> Policy:
    where = f"policy {source}"
    if len(raw) > MAX_POLICY_BYTES:
        raise InvalidDocument(f"{where}: larger than {MAX_POLICY_BYTES} bytes")
    doc = _strict_json(raw, where)
    _only(doc, {"default", "transports"}, where)
    if "default" not in doc:
        raise InvalidDocument(f"{where}: Default policy is missing",
                              hint='add "default": [{"type": "reject"}] (or another rule)')
    default = _requirements(doc["default"], f"{where}: default")
    transports: dict[str, dict[str, tuple[Requirement, ...]]] = {}
    raw_transports = doc.get("transports", {})
    if not isinstance(raw_transports, dict):
        raise InvalidDocument(f"{where}: transports must be an object")
    for transport, scopes in raw_transports.items():
        if not isinstance(scopes, dict):
            raise InvalidDocument(f"{where}: transports.{transport} must be an object")
        transports[transport] = {}
        for scope, reqs in scopes.items():
            at = f'{where}: transports.{transport}["{scope}"]'
            if transport == "docker":
                _check_docker_scope(scope, at)
            transports[transport][scope] = _requirements(reqs, at)
    return Policy(default, transports, source)


def _strict_json(raw: bytes, where: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise ValueError(f"duplicate field {dup!r}")
        return dict(items)
    try:
        doc = json.loads(raw, object_pairs_hook=pairs)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidDocument(f"{where}: not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(doc, dict):
        raise InvalidDocument(f"{where}: expected a JSON object")
    return doc


def _only(doc: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise InvalidDocument(f"{where}: unknown field {unknown[0][:60]!r}",
                              hint="see containers-policy.json(5)")


def _check_docker_scope(scope: str, where: str) -> None:
    """Scopes are fully expanded (docker.io/library/busybox, never busybox); a
    wildcard is *.domain without a port."""
    if scope == "":
        return
    if scope.startswith("*."):
        if ":" in scope or "/" in scope or not scope[2:]:
            raise InvalidDocument(f"{where}: invalid wildcard scope (*.domain, no port or "
                                  "path)")
        return
    try:
        ref = parse_reference(scope if "/" in scope else f"{scope}/x")
    except InvalidReference as exc:
        raise InvalidDocument(f"{where}: invalid scope ({exc.message})") from None
    if "/" in scope and scope not in (ref.name, identity_string(ref)):
        raise InvalidDocument(f"{where}: scope is not fully expanded (use {ref.name!r})",
                              hint="scopes name registries in full: docker.io/library/busybox")
    if "/" not in scope and ref.domain != scope:
        raise InvalidDocument(f"{where}: {scope!r} is not a registry host",
                              hint="scopes name registries in full: docker.io/library/busybox")


def _requirements(value: Any, where: str) -> tuple[Requirement, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidDocument(f"{where}: expected a non-empty list of requirements")
    return tuple(_requirement(r, f"{where}[{i}]") for i, r in enumerate(value))


def _requirement(doc: Any, where: str) -> Requirement:
    if not isinstance(doc, dict) or doc.get("type") not in REQUIREMENT_TYPES:
        got = doc.get("type") if isinstance(doc, dict) else doc
        raise InvalidDocument(f"{where}: unknown requirement type {str(got)[:60]!r}",
                              hint="one of " + ", ".join(REQUIREMENT_TYPES))
    kind = doc["type"]
    _only(doc, {"type", *_FIELDS[kind]}, where)
    if kind in ("insecureAcceptAnything", "reject"):
        return Requirement(kind)
    identity = _identity(doc.get("signedIdentity"), f"{where}.signedIdentity")
    if kind == "signedBy":
        return Requirement(kind, identity=identity,
                           unsupported="signedBy (GPG simple signing) is not supported")
    sources = [k for k in _SIGSTORE_KEYS if k in doc]
    if len(sources) != 1:
        raise InvalidDocument(f"{where}: exactly one of {', '.join(_SIGSTORE_KEYS)} is "
                              "required")
    unsupported = None
    if sources[0] in ("fulcio", "pki"):
        unsupported = f"{sources[0]} (certificate-based) verification is not supported"
    elif any(k in doc for k in _REKOR_KEYS):
        unsupported = "Rekor (transparency log) verification is not supported"
    keys = () if unsupported else _keys(doc, sources[0], where)
    return Requirement(kind, keys, identity, unsupported)


def _keys(doc: dict[str, Any], field: str, where: str) -> tuple[tuple[str, bytes | None], ...]:
    value = doc[field]
    many = field.endswith("s")
    items = value if many else [value]
    if not isinstance(items, list) or not items or not all(isinstance(v, str) for v in items):
        raise InvalidDocument(f"{where}.{field}: expected "
                              f"{'a non-empty list of strings' if many else 'a string'}")
    if field.startswith("keyData"):
        out = []
        for i, text in enumerate(items):
            try:
                out.append((f"{field}[{i}]" if many else field,
                            base64.b64decode(text, validate=True)))
            except (binascii.Error, ValueError):
                raise InvalidDocument(f"{where}.{field}: not valid base64") from None
        return tuple(out)
    # A key file that cannot be read fails every verification (containers/image loads
    # all verifiers before trying any): recorded, refused at evaluation.
    return tuple((path, _read_key(path)) for path in items)


def _read_key(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(64 << 10)
    except OSError:
        return None


def _identity(doc: Any, where: str) -> Identity:
    if doc is None:
        return Identity()
    if not isinstance(doc, dict) or doc.get("type") not in IDENTITY_FIELDS:
        got = doc.get("type") if isinstance(doc, dict) else doc
        raise InvalidDocument(f"{where}: unknown type {str(got)[:60]!r}",
                              hint="one of " + ", ".join(IDENTITY_FIELDS))
    kind = doc["type"]
    fields = IDENTITY_FIELDS[kind]
    _only(doc, {"type", *fields}, where)
    missing = [f for f in fields if not isinstance(doc.get(f), str) or not doc.get(f)]
    if missing:
        raise InvalidDocument(f"{where}: {kind} needs {missing[0]}")
    if kind == "exactReference":
        ref = _named(doc["dockerReference"], f"{where}.dockerReference")
        if not ref_has_tag_or_digest(doc["dockerReference"]):
            raise InvalidDocument(f"{where}.dockerReference: needs a tag or digest")
        return Identity(kind, value=identity_string(ref))
    if kind == "exactRepository":
        return Identity(kind, value=_named(doc["dockerRepository"],
                                           f"{where}.dockerRepository").name)
    if kind == "remapIdentity":
        return Identity(kind, prefix=doc["prefix"], signed_prefix=doc["signedPrefix"])
    return Identity(kind)


def _named(text: str, where: str) -> Reference:
    try:
        return parse_reference(text)
    except InvalidReference as exc:
        raise InvalidDocument(f"{where}: {exc.message}") from None


def ref_has_tag_or_digest(text: str) -> bool:
    return "@" in text or ":" in text.rsplit("/", 1)[-1]
