"""The simple-signing payload cosign signs (sigstore ``pkg/signature/payload``)::

    {"critical": {"identity": {"docker-reference": "host/repo[:tag]"},
                  "image": {"docker-manifest-digest": "sha256:…"},
                  "type": "cosign container image signature"},
     "optional": null | {"creator": …, "timestamp": <int>, …}}

It is parsed only after its signature verified over the exact bytes, and strictly, as
containers/image does (``signature/internal/sigstore_payload.go``): exactly these keys
in ``critical``, ``optional`` an object or null, an integer ``timestamp``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ociimg.digest import Digest
from ociimg.errors import InvalidDocument, InvalidReference
from ociimg.reference import Reference, parse_reference
from ociimg.spec import load_json

PAYLOAD_TYPE = "cosign container image signature"
MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
MAX_PAYLOAD_BYTES = 4 << 20  # containers/image iolimits.MaxSignatureBodySize


@dataclass(frozen=True, slots=True)
class Payload:
    docker_reference: str
    manifest_digest: Digest
    optional: dict[str, Any] | None
    raw: bytes = field(repr=False)

    @property
    def reference(self) -> Reference:
        return parse_reference(self.docker_reference)

    def to_json(self) -> Any:
        return json.loads(self.raw)


def make_payload(docker_reference: str, digest: Digest,
                 optional: dict[str, Any] | None = None) -> bytes:
    """The bytes to sign; the key order of cosign's Go structs."""
    doc = {"critical": {"identity": {"docker-reference": docker_reference},
                        "image": {"docker-manifest-digest": str(digest)},
                        "type": PAYLOAD_TYPE},
           "optional": optional}
    return json.dumps(doc, separators=(",", ":")).encode()


def parse_payload(raw: bytes, where: str = "signature payload") -> Payload:
    doc = load_json(raw, where, MAX_PAYLOAD_BYTES)
    _refuse_duplicate_keys(raw, where)
    _exact_keys(doc, {"critical", "optional"}, where)
    critical = doc["critical"]
    _exact_keys(critical, {"identity", "image", "type"}, f"{where}.critical")
    if critical["type"] != PAYLOAD_TYPE:
        raise InvalidDocument(f"{where}.critical.type: {str(critical['type'])[:80]!r} is not "
                              f"{PAYLOAD_TYPE!r}")
    identity, image = critical["identity"], critical["image"]
    _exact_keys(identity, {"docker-reference"}, f"{where}.critical.identity")
    _exact_keys(image, {"docker-manifest-digest"}, f"{where}.critical.image")
    ref_text, digest_text = identity["docker-reference"], image["docker-manifest-digest"]
    if not isinstance(ref_text, str) or not isinstance(digest_text, str):
        raise InvalidDocument(f"{where}.critical: docker-reference and docker-manifest-digest "
                              "must be strings")
    try:
        parse_reference(ref_text)
    except InvalidReference as exc:
        raise InvalidDocument(f"{where}.critical.identity.docker-reference: {exc}") from None
    digest = Digest.parse(digest_text, where=f"{where}.critical.image.docker-manifest-digest")
    optional = doc["optional"]
    if optional is not None and not isinstance(optional, dict):
        raise InvalidDocument(f"{where}.optional: expected an object or null")
    timestamp = (optional or {}).get("timestamp")
    if timestamp is not None and (type(timestamp) is not int):
        raise InvalidDocument(f"{where}.optional.timestamp: not an integer")
    return Payload(ref_text, digest, optional, raw)


def _refuse_duplicate_keys(raw: bytes, where: str) -> None:
    """Go's paranoid parser in containers/image refuses {"a":1,"a":2}; json.loads keeps
    the last one, so a second "docker-manifest-digest" could hide behind the first."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            raise InvalidDocument(f"{where}: duplicate key in an object")
        return dict(items)

    json.loads(raw, object_pairs_hook=pairs)


def _exact_keys(doc: Any, keys: set[str], where: str) -> None:
    if not isinstance(doc, dict):
        raise InvalidDocument(f"{where}: expected an object")
    if set(doc) != keys:
        extra, missing = sorted(set(doc) - keys), sorted(keys - set(doc))
        raise InvalidDocument(f"{where}: unexpected keys {extra[:5]} / missing {missing}")
