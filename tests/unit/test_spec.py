"""OCI/Docker document parsing (distribution-spec spec.md, image-spec descriptor.md,
containers/image internal/iolimits) and schema validity
of what we write (image-spec JSON schemas)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jsonschema
import pytest

from ociimg import spec
from ociimg.digest import Digest
from ociimg.errors import InvalidDocument, NoMatchingPlatform
from ociimg.spec import Platform
from tests.ocischema import validate

A, B, C = "a" * 64, "b" * 64, "c" * 64


def validate_image_doc(doc: dict[str, Any], schema_file: str) -> None:
    validate(doc, "image-spec", schema_file)


# Documents ---------------------------------------------------------------------------
def desc(media_type: str = spec.OCI_LAYER_GZIP, hex_: str = A, size: int = 10,
         **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": f"sha256:{hex_}", "size": size, **extra}


def manifest_doc(**over: Any) -> dict[str, Any]:
    doc = {"schemaVersion": 2, "mediaType": spec.OCI_MANIFEST,
           "config": desc(spec.OCI_CONFIG, B, 100), "layers": [desc(), desc(hex_=C, size=20)]}
    doc.update(over)
    return doc


def index_doc(*platforms: dict[str, Any] | None, **over: Any) -> dict[str, Any]:
    manifests = []
    for i, p in enumerate(platforms):
        d = desc(spec.OCI_MANIFEST, f"{i:x}" * 64 if i < 16 else A, 500)
        if p is not None:
            d["platform"] = p
        manifests.append(d)
    doc = {"schemaVersion": 2, "mediaType": spec.OCI_INDEX, "manifests": manifests}
    doc.update(over)
    return doc


def config_doc(**over: Any) -> dict[str, Any]:
    doc = {"architecture": "amd64", "os": "linux",
           "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "User": "1000:1000",
                      "WorkingDir": "/w", "Labels": {"a": "b"}},
           "rootfs": {"type": "layers", "diff_ids": [f"sha256:{A}", f"sha256:{B}"]},
           "history": [{"created_by": "x"}], "created": "2024-01-02T03:04:05Z"}
    doc.update(over)
    return doc


def raw(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=3).encode()  # not canonical: digests must use these bytes


def test_parse_oci_manifest_keeps_raw_bytes_and_their_digest() -> None:
    data = raw(manifest_doc(annotations={"k": "v"}))
    m = spec.parse_manifest(data)
    assert m.media_type == spec.OCI_MANIFEST
    assert m.config.digest == Digest("sha256", B) and m.config.size == 100
    assert [layer.digest.hex for layer in m.layers] == [A, C]
    assert m.annotations == {"k": "v"}
    assert m.raw == data
    assert m.digest == Digest("sha256", hashlib.sha256(data).hexdigest())


def test_parse_docker_v2s2_manifest() -> None:
    doc = manifest_doc(mediaType=spec.DOCKER_MANIFEST, config=desc(spec.DOCKER_CONFIG, B, 5),
                       layers=[desc(spec.DOCKER_LAYER_GZIP)])
    m = spec.parse_manifest(raw(doc), spec.DOCKER_MANIFEST)
    assert m.media_type == spec.DOCKER_MANIFEST
    assert m.layers[0].media_type == spec.DOCKER_LAYER_GZIP


def test_parse_docker_manifest_list_and_oci_index() -> None:
    amd = {"os": "linux", "architecture": "amd64"}
    for mt in (spec.DOCKER_LIST, spec.OCI_INDEX):
        idx = spec.parse_index(raw(index_doc(amd, mediaType=mt)), mt)
        assert idx.media_type == mt
        assert idx.manifests[0].platform == Platform("linux", "amd64")


def test_parse_manifest_or_index_dispatches_on_body_then_content_type() -> None:
    amd = {"os": "linux", "architecture": "amd64"}
    assert isinstance(spec.parse_manifest_or_index(raw(index_doc(amd))), spec.Index)
    assert isinstance(spec.parse_manifest_or_index(raw(manifest_doc())), spec.Manifest)
    no_type = index_doc(amd)
    del no_type["mediaType"]
    assert isinstance(spec.parse_manifest_or_index(raw(no_type), spec.OCI_INDEX), spec.Index)
    assert isinstance(spec.parse_manifest_or_index(raw(no_type)), spec.Index)


def test_missing_media_type_is_guessed_from_shape() -> None:
    doc = manifest_doc()
    del doc["mediaType"]
    assert spec.parse_manifest(raw(doc)).media_type == spec.OCI_MANIFEST


@pytest.mark.parametrize("body_type,declared,schema_version", [
    (spec.DOCKER_SCHEMA1_SIGNED, None, 1),
    (spec.DOCKER_SCHEMA1, None, 1),
    (None, spec.DOCKER_SCHEMA1_SIGNED, 1),
    (None, None, 1),
    (spec.DOCKER_SCHEMA1, spec.DOCKER_SCHEMA1, 2),
])
def test_schema1_is_refused_with_a_hint(body_type: str | None, declared: str | None,
                                        schema_version: int) -> None:
    doc: dict[str, Any] = {"schemaVersion": schema_version, "name": "x", "tag": "latest",
                           "fsLayers": [], "history": []}
    if body_type:
        doc["mediaType"] = body_type
    with pytest.raises(InvalidDocument, match="schema1") as info:
        spec.parse_manifest_or_index(raw(doc), declared)
    assert info.value.hint


def test_content_type_must_match_body_media_type() -> None:
    with pytest.raises(InvalidDocument, match="does not match body mediaType"):
        spec.parse_manifest(raw(manifest_doc()), spec.DOCKER_MANIFEST)
    with pytest.raises(InvalidDocument, match="does not match"):
        spec.parse_index(raw(index_doc(mediaType=spec.OCI_INDEX)), spec.DOCKER_LIST)


def test_content_type_parameters_are_ignored() -> None:
    m = spec.parse_manifest(raw(manifest_doc()), f"{spec.OCI_MANIFEST}; charset=utf-8")
    assert m.media_type == spec.OCI_MANIFEST
    doc = manifest_doc()
    del doc["mediaType"]
    declared = f"{spec.OCI_MANIFEST} ;charset=utf-8"
    assert spec.parse_manifest_or_index(raw(doc), declared).media_type == spec.OCI_MANIFEST


def test_a_manifest_is_not_an_index_and_vice_versa() -> None:
    with pytest.raises(InvalidDocument, match="unexpected"):
        spec.parse_index(raw(manifest_doc()))
    with pytest.raises(InvalidDocument, match="unexpected"):
        spec.parse_manifest(raw(index_doc(mediaType=spec.OCI_INDEX)))


@pytest.mark.parametrize("mutate,where", [
    (lambda d: d["layers"][1].update(size=-1), "manifest.layers[1].size: negative"),
    (lambda d: d["layers"][0].update(size="10"), "manifest.layers[0].size: wrong type"),
    (lambda d: d["layers"][0].update(size=True), "manifest.layers[0].size: wrong type"),
    (lambda d: d["layers"][0].update(size=1.5), "manifest.layers[0].size: wrong type"),
    (lambda d: d["layers"][0].update(digest=f"sha256:{A.upper()}"), "layers[0].digest"),
    (lambda d: d["layers"][0].update(digest="sha256:abc"), "layers[0].digest"),
    (lambda d: d["layers"][0].update(digest=f"sha512:{A}"), "layers[0].digest"),
    (lambda d: d["layers"][0].update(digest=f"sha256:{A}\n"), "layers[0].digest"),
    (lambda d: d["layers"][0].update(digest=f"sha256:../../{A[6:]}"), "layers[0].digest"),
    (lambda d: d["layers"][0].update(digest=f"md5:{A}"), "layers[0].digest"),
    (lambda d: d["layers"][0].update(digest=5), "layers[0].digest"),
    (lambda d: d["layers"][0].pop("mediaType"), "manifest.layers[0].mediaType: missing"),
    (lambda d: d["config"].pop("digest"), "manifest.config.digest: missing"),
    (lambda d: d.pop("config"), "manifest.config: missing"),
    (lambda d: d.pop("layers"), "manifest.layers: missing"),
    (lambda d: d.update(layers={}), "manifest.layers: wrong type"),
    (lambda d: d["layers"].append("x"), "manifest.layers[2]: expected an object"),
    (lambda d: d.update(annotations={"a": 1}), "annotations"),
    (lambda d: d.update(schemaVersion=3), "schemaVersion"),
    (lambda d: d.update(mediaType=7), "mediaType"),
])
def test_malformed_manifests_name_the_json_path(mutate: Any, where: str) -> None:
    doc = manifest_doc()
    mutate(doc)
    with pytest.raises(InvalidDocument) as info:
        spec.parse_manifest(raw(doc))
    assert where in str(info.value)


@pytest.mark.parametrize("data", [b"", b"not json", b"[]", b'"x"', b"\xff\xfe", b"null"])
def test_non_object_documents_are_refused(data: bytes) -> None:
    for parse in (spec.parse_manifest, spec.parse_index, spec.parse_config):
        with pytest.raises(InvalidDocument):
            parse(data)


def test_size_caps() -> None:
    big = manifest_doc(annotations={"pad": "x" * spec.MAX_MANIFEST_BYTES})
    with pytest.raises(InvalidDocument, match="limit"):
        spec.parse_manifest(raw(big))
    with pytest.raises(InvalidDocument, match="limit"):
        spec.parse_manifest_or_index(raw(big))
    big_config = config_doc(pad="x" * spec.MAX_CONFIG_BYTES)
    with pytest.raises(InvalidDocument, match="limit"):
        spec.parse_config(raw(big_config))
    just_fits = manifest_doc(annotations={"p": ""})
    just_fits["annotations"]["p"] = "x" * (spec.MAX_MANIFEST_BYTES - len(raw(just_fits)))
    assert len(raw(just_fits)) == spec.MAX_MANIFEST_BYTES
    spec.parse_manifest(raw(just_fits))


def test_unknown_fields_survive_to_json() -> None:
    layer = desc(**{"x-layer": {"deep": [1, 2]}})
    doc = manifest_doc(layers=[layer], **{"x-top": "kept"})
    m = spec.parse_manifest(raw(doc))
    out = m.to_json()
    assert out["x-top"] == "kept"
    assert out["layers"][0]["x-layer"] == {"deep": [1, 2]}
    assert out == doc
    idx_doc = index_doc({"os": "linux", "architecture": "arm", "variant": "v7",
                         "os.features": ["f"]}, **{"x-idx": 1})
    assert spec.parse_index(raw(idx_doc)).to_json() == idx_doc
    cfg = config_doc(**{"x-cfg": True, "os.version": "10"})
    assert spec.parse_config(raw(cfg)).to_json() == cfg


def test_parse_config_fields() -> None:
    c = spec.parse_config(raw(config_doc()))
    assert c.platform == Platform("linux", "amd64")
    assert c.env == ["PATH=/bin"] and c.cmd == ["sh"] and c.entrypoint == []
    assert c.user == "1000:1000" and c.working_dir == "/w" and c.labels == {"a": "b"}
    assert c.diff_ids == (Digest("sha256", A), Digest("sha256", B))
    assert c.created == "2024-01-02T03:04:05Z"


def test_config_with_null_fields_is_accepted() -> None:
    c = spec.parse_config(raw(config_doc(config={"Entrypoint": None, "Cmd": None,
                                                 "Env": None})))
    assert c.entrypoint == [] and c.cmd == [] and c.env == []
    c = spec.parse_config(raw(config_doc(config=None)))
    assert c.config == {}


@pytest.mark.parametrize("mutate,where", [
    (lambda d: d["rootfs"].update(type="other"), "rootfs.type"),
    (lambda d: d.pop("rootfs"), "config.rootfs: missing"),
    (lambda d: d["rootfs"]["diff_ids"].append("sha256:XYZ"), "rootfs.diff_ids[2]"),
    (lambda d: d["config"].update(Env="PATH=/bin"), "config.config.Env"),
    (lambda d: d["config"].update(Cmd=["sh", 1]), "config.config.Cmd"),
    (lambda d: d["config"].update(User=0), "config.config.User"),
    (lambda d: d["config"].update(Labels={"a": 1}), "Labels"),
    (lambda d: d.pop("os"), "config.os: missing"),
])
def test_malformed_configs(mutate: Any, where: str) -> None:
    doc = config_doc()
    mutate(doc)
    with pytest.raises(InvalidDocument) as info:
        spec.parse_config(raw(doc))
    assert where in str(info.value)


# Platforms ---------------------------------------------------------------------------
def _index(*plats: tuple[str, str, str | None], attest: bool = False) -> spec.Index:
    ps = [{"os": o, "architecture": a, **({"variant": v} if v else {})} for o, a, v in plats]
    doc = index_doc(*ps)
    if attest:
        doc["manifests"].append(desc(spec.OCI_MANIFEST, "e" * 64, 300,
                                     platform={"os": "unknown", "architecture": "unknown"}))
        doc["manifests"].append(desc(spec.OCI_MANIFEST, "f" * 64, 300,
                                     platform={"os": "linux", "architecture": "amd64"},
                                     annotations={"vnd.docker.reference.type":
                                                  "attestation-manifest"}))
    return spec.parse_index(raw(doc))


@pytest.mark.parametrize("available,want,picked", [
    ([("linux", "amd64", None), ("linux", "arm64", None)], "linux/amd64", 0),
    ([("linux", "amd64", None), ("linux", "arm64", None)], "linux/arm64", 1),
    ([("linux", "amd64", None), ("linux", "arm64", "v8")], "linux/arm64", 1),
    ([("linux", "arm64", None)], "linux/arm64/v8", 0),
    ([("linux", "arm", "v6"), ("linux", "arm", "v7")], "linux/arm/v7", 1),
    ([("linux", "arm", "v5"), ("linux", "arm", "v6")], "linux/arm/v7", 1),  # v7 → v6
    ([("linux", "arm", "v5")], "linux/arm/v8", 0),  # v8 → … → v5
    ([("linux", "arm", None)], "linux/arm/v7", 0),
    ([("linux", "arm", "v7"), ("linux", "arm", "v6")], "linux/arm", 0),  # arm means v7
    ([("linux", "ppc64le", None), ("linux", "s390x", None)], "linux/s390x", 1),
    ([("windows", "amd64", None), ("linux", "amd64", None)], "linux/amd64", 1),
])
def test_match_platform(available: list[tuple[str, str, str | None]], want: str,
                        picked: int) -> None:
    idx = _index(*available)
    assert spec.match_platform(idx, Platform.parse(want)) is idx.manifests[picked]


@pytest.mark.parametrize("available,want", [
    ([("linux", "arm", "v7")], "linux/arm/v6"),  # never fall *up* to a newer variant
    ([("linux", "arm64", None)], "linux/amd64"),
    ([("windows", "amd64", None)], "linux/amd64"),
])
def test_no_platform_match(available: list[tuple[str, str, str | None]], want: str) -> None:
    with pytest.raises(NoMatchingPlatform):
        spec.match_platform(_index(*available), Platform.parse(want))


def test_attestations_are_skipped_and_the_error_lists_what_exists() -> None:
    idx = _index(("linux", "arm64", None), ("linux", "arm", "v7"), attest=True)
    with pytest.raises(NoMatchingPlatform) as info:
        spec.match_platform(idx, Platform("linux", "amd64"))
    msg = str(info.value)
    assert "linux/arm64" in msg and "linux/arm/v7" in msg
    assert "unknown" not in msg
    assert info.value.hint and "--platform" in info.value.hint
    # unknown/unknown is never selected, even when asked for
    with pytest.raises(NoMatchingPlatform):
        spec.match_platform(idx, Platform("unknown", "unknown"))


def test_attestation_annotated_entry_is_not_selected() -> None:
    idx = _index(("linux", "arm64", None), attest=True)
    assert idx.manifests[-1].is_attestation and idx.manifests[-2].is_attestation
    with pytest.raises(NoMatchingPlatform):
        spec.match_platform(idx, Platform("linux", "amd64"))


def test_nested_index_entries_are_not_picked() -> None:
    doc = index_doc({"os": "linux", "architecture": "amd64"})
    doc["manifests"][0]["mediaType"] = spec.OCI_INDEX
    with pytest.raises(NoMatchingPlatform):
        spec.match_platform(spec.parse_index(raw(doc)), Platform("linux", "amd64"))


@pytest.mark.parametrize("text,expected", [
    ("linux/amd64", Platform("linux", "amd64")),
    ("linux/arm64/v8", Platform("linux", "arm64")),
    ("linux/x86_64", Platform("linux", "amd64")),
    ("linux/arm/v6", Platform("linux", "arm", "v6")),
])
def test_platform_parse(text: str, expected: Platform) -> None:
    assert Platform.parse(text) == expected


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "a/b/c/d", ""])
def test_platform_parse_rejects(text: str) -> None:
    with pytest.raises(InvalidDocument):
        Platform.parse(text)


# Chain IDs ---------------------------------------------------------------------------
def test_chain_ids_follow_the_image_spec_formula() -> None:
    d1, d2, d3 = Digest("sha256", A), Digest("sha256", B), Digest("sha256", C)
    ids = spec.chain_ids([d1, d2, d3])
    assert ids[0] == d1
    # config.md: ChainID(L1) = Digest(ChainID(L0) + " " + DiffID(L1)), over the full
    # "algorithm:hex" strings; the literal pins it against accidental change.
    assert ids[1].hex == hashlib.sha256(f"sha256:{A} sha256:{B}".encode()).hexdigest()
    assert ids[1].hex == "ccd722928bd92476ba1745586fed6e45a102504185ad88cd89e01ff116fd146c"
    assert ids[2].hex == hashlib.sha256(f"{ids[1]} sha256:{C}".encode()).hexdigest()
    assert spec.chain_ids([]) == []
    assert spec.chain_ids((d2,)) == [d2]


# Documents we write are valid per the image-spec schemas -----------------------------
def test_written_manifest_is_schema_valid() -> None:
    m = spec.parse_manifest(raw(manifest_doc(annotations={"org.example": "1"})))
    validate_image_doc(m.to_json(), "image-manifest-schema.json")
    validate_image_doc(json.loads(spec.canonical_json(m.to_json())), "image-manifest-schema.json")


def test_written_index_is_schema_valid() -> None:
    idx = _index(("linux", "amd64", None), ("linux", "arm", "v7"), attest=True)
    validate_image_doc(idx.to_json(), "image-index-schema.json")


def test_written_config_is_schema_valid() -> None:
    validate_image_doc(spec.parse_config(raw(config_doc())).to_json(), "config-schema.json")


def test_written_descriptor_is_schema_valid() -> None:
    d = spec.Descriptor.from_json(desc(urls=["https://example.com/x"],
                                       annotations={"a": "b"}), "d")
    validate_image_doc(d.to_json(), "content-descriptor.json")


def test_schema_validation_can_fail() -> None:
    # Guard against a validator that accepts everything (e.g. unresolved $refs ignored).
    bad = manifest_doc()
    bad["layers"][0]["size"] = "10"  # checked through a $ref into defs.json
    with pytest.raises(jsonschema.ValidationError):
        validate_image_doc(bad, "image-manifest-schema.json")
    bad = manifest_doc()
    bad["layers"][0]["digest"] = "sha256"  # defs-descriptor.json digest pattern
    with pytest.raises(jsonschema.ValidationError):
        validate_image_doc(bad, "image-manifest-schema.json")
    bad = manifest_doc()
    bad["config"]["mediaType"] = "not a media type"
    with pytest.raises(jsonschema.ValidationError):
        validate_image_doc(bad, "image-manifest-schema.json")
