"""The simple-signing payload: built as cosign builds it, parsed strictly (after the
signature verified) as containers/image parses it."""

from __future__ import annotations

import json

import pytest

from ociimg.digest import Digest
from ociimg.errors import InvalidDocument
from ociimg.signing.payload import PAYLOAD_TYPE, make_payload, parse_payload

DIGEST = Digest.of(b"manifest")


def good(**critical_changes: object) -> dict:  # type: ignore[type-arg]
    doc = {"critical": {"identity": {"docker-reference": "127.0.0.1:5000/app:1"},
                        "image": {"docker-manifest-digest": str(DIGEST)},
                        "type": PAYLOAD_TYPE},
           "optional": None}
    doc["critical"].update(critical_changes)  # type: ignore[attr-defined]
    return doc


def test_made_payload_has_cosign_shape_and_round_trips() -> None:
    raw = make_payload("127.0.0.1:5000/app:1", DIGEST)
    assert json.loads(raw) == good()
    assert raw.startswith(b'{"critical":{"identity":{"docker-reference":')
    parsed = parse_payload(raw)
    assert parsed.docker_reference == "127.0.0.1:5000/app:1"
    assert parsed.manifest_digest == DIGEST
    assert parsed.optional is None and parsed.raw == raw


def test_optional_with_integer_timestamp_is_kept() -> None:
    doc = good()
    doc["optional"] = {"creator": "x", "timestamp": 1700000000}
    assert parse_payload(json.dumps(doc).encode()).optional == doc["optional"]


def _variant(name: str) -> bytes:
    doc = good()
    if name == "extra-top":
        doc["extra"] = 1
    elif name == "no-optional":
        del doc["optional"]
    elif name == "extra-critical":
        doc["critical"]["more"] = {}
    elif name == "wrong-type":
        doc["critical"]["type"] = "atomic container signature"
    elif name == "digest-not-digest":
        doc["critical"]["image"]["docker-manifest-digest"] = "sha256:1234"
    elif name == "reference-bad":
        doc["critical"]["identity"]["docker-reference"] = "UPPER/Case"
    elif name == "reference-int":
        doc["critical"]["identity"]["docker-reference"] = 5
    elif name == "identity-extra":
        doc["critical"]["identity"]["x"] = "y"
    elif name == "optional-list":
        doc["optional"] = []
    elif name == "timestamp-float":
        doc["optional"] = {"timestamp": 1.5}
    elif name == "timestamp-string":
        doc["optional"] = {"timestamp": "1700000000"}
    elif name == "top-list":
        return b"[]"
    elif name == "deep":
        return b"[" * 100000 + b"]" * 100000
    elif name == "duplicate-digest":
        text = json.dumps(good())
        other = str(Digest.of(b"other"))
        return text.replace('"docker-manifest-digest": ',
                            f'"docker-manifest-digest": "{other}", '
                            '"docker-manifest-digest": ').encode()
    return json.dumps(doc).encode()


@pytest.mark.parametrize("name", ["extra-top", "no-optional", "extra-critical", "wrong-type",
                                  "digest-not-digest", "reference-bad", "reference-int",
                                  "identity-extra", "optional-list", "timestamp-float",
                                  "timestamp-string", "top-list", "deep", "duplicate-digest"])
def test_strict_parse_refuses(name: str) -> None:
    with pytest.raises(InvalidDocument):
        parse_payload(_variant(name))


def test_huge_payload_is_refused_by_size() -> None:
    doc = good()
    doc["optional"] = {"pad": "x" * (5 << 20)}
    with pytest.raises(InvalidDocument, match="limit"):
        parse_payload(json.dumps(doc).encode())
