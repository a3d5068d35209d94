"""The fixture images are valid OCI, self-consistent, deterministic and hold what they claim.

Checked with jsonschema against image-spec's own schemas and with hashlib/tarfile, never
with ociimg code: these fixtures are the ground truth other tests measure ociimg against.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import stat
import tarfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import zstandard

from tests import ocischema
from tests.conftest import load_build_images

builder = load_build_images()
TAGS = {"busybox", "busybox-zstd", "busybox-plain", "multilayer", "multilayer-oci", "multiarch",
        "docker-v2"}


# Helpers -----------------------------------------------------------------------------
def schema_validator(name: str) -> jsonschema.protocols.Validator:
    return ocischema.validator("image-spec", name)


def blob(layout: Path, digest: str) -> bytes:
    algo, hexdigest = digest.split(":", 1)
    return (layout / "blobs" / algo / hexdigest).read_bytes()


def verified(layout: Path, desc: dict[str, Any]) -> bytes:
    data = blob(layout, desc["digest"])
    assert len(data) == desc["size"], desc
    assert "sha256:" + hashlib.sha256(data).hexdigest() == desc["digest"]
    return data


def tagged(layout: Path) -> dict[str, dict[str, Any]]:
    index = json.loads((layout / "index.json").read_bytes())
    return {d["annotations"]["org.opencontainers.image.ref.name"]: d
            for d in index["manifests"]}


def walk_manifests(layout: Path, desc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every image manifest under ``desc`` (itself, or the children of an index)."""
    doc = json.loads(verified(layout, desc))
    if "manifests" in doc:
        return [m for child in doc["manifests"] for m in walk_manifests(layout, child)]
    return [doc]


def decompress(data: bytes, media_type: str) -> bytes:
    if media_type.endswith("gzip"):
        return gzip.decompress(data)
    if media_type.endswith("zstd"):
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def layer_members(layout: Path, desc: dict[str, Any]) -> list[tarfile.TarInfo]:
    raw = decompress(verified(layout, desc), desc["mediaType"])
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        return tar.getmembers()


def image(layout: Path, tag: str) -> tuple[dict[str, Any], dict[str, Any]]:
    manifest = json.loads(verified(layout, tagged(layout)[tag]))
    return manifest, json.loads(verified(layout, manifest["config"]))


def by_name(members: list[tarfile.TarInfo]) -> dict[str, tarfile.TarInfo]:
    return {m.name.rstrip("/"): m for m in members}


# Validity ----------------------------------------------------------------------------
def test_layout_files_valid_per_image_spec(fixture_layout: Path) -> None:
    layout_doc = json.loads((fixture_layout / "oci-layout").read_bytes())
    schema_validator("image-layout-schema.json").validate(layout_doc)
    index = json.loads((fixture_layout / "index.json").read_bytes())
    schema_validator("image-index-schema.json").validate(index)
    assert set(tagged(fixture_layout)) == TAGS


def test_every_manifest_and_config_valid_per_image_spec(fixture_layout: Path) -> None:
    manifest_schema = schema_validator("image-manifest-schema.json")
    config_schema = schema_validator("config-schema.json")
    index_schema = schema_validator("image-index-schema.json")
    seen = 0
    for desc in tagged(fixture_layout).values():
        if desc["mediaType"] == builder.OCI_INDEX:
            index_schema.validate(json.loads(verified(fixture_layout, desc)))
        for manifest in walk_manifests(fixture_layout, desc):
            manifest_schema.validate(manifest)
            config_schema.validate(json.loads(verified(fixture_layout, manifest["config"])))
            seen += 1
    assert seen >= 9  # 4 busybox encodings, 2 multilayer, 3 in multiarch (host one reused)


def test_schema_validation_can_fail(fixture_layout: Path) -> None:
    manifest, _ = image(fixture_layout, "busybox")
    manifest["layers"][0]["digest"] = "not-a-digest"
    with pytest.raises(jsonschema.ValidationError):
        schema_validator("image-manifest-schema.json").validate(manifest)


def test_every_blob_named_by_its_digest(fixture_layout: Path) -> None:
    blobs = list((fixture_layout / "blobs" / "sha256").iterdir())
    assert blobs
    for path in blobs:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name


def test_diff_ids_match_decompressed_layers(fixture_layout: Path) -> None:
    checked = set()
    for desc in tagged(fixture_layout).values():
        for manifest in walk_manifests(fixture_layout, desc):
            config = json.loads(verified(fixture_layout, manifest["config"]))
            diff_ids = config["rootfs"]["diff_ids"]
            assert len(diff_ids) == len(manifest["layers"])
            for layer, diff_id in zip(manifest["layers"], diff_ids, strict=True):
                raw = decompress(verified(fixture_layout, layer), layer["mediaType"])
                assert "sha256:" + hashlib.sha256(raw).hexdigest() == diff_id
                checked.add(layer["mediaType"])
    assert {builder.OCI_LAYER, builder.OCI_LAYER_GZIP, builder.OCI_LAYER_ZSTD,
            builder.DOCKER_LAYER_GZIP} <= checked


def test_build_is_deterministic(tmp_path: Path, fixture_layout: Path) -> None:
    first = builder.build_all(tmp_path / "a")
    second = builder.build_all(tmp_path / "b")
    index = (first / "index.json").read_bytes()
    assert index == (second / "index.json").read_bytes()
    assert index == (fixture_layout / "index.json").read_bytes()  # the cache is not stale
    names = sorted(p.name for p in (first / "blobs" / "sha256").iterdir())
    assert names == sorted(p.name for p in (second / "blobs" / "sha256").iterdir())


def test_build_refuses_non_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "junk").write_text("x")
    with pytest.raises(builder.FixtureError, match="not empty"):
        builder.build_all(tmp_path)


def test_missing_busybox_names_the_package(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setattr(builder, "BUSYBOX", tmp_path / "no-busybox")
    with pytest.raises(builder.FixtureError, match="apt-get install busybox-static"):
        builder.build_all(tmp_path / "out")


# Contents ----------------------------------------------------------------------------
def test_busybox_image_contents(fixture_layout: Path) -> None:
    manifest, config = image(fixture_layout, "busybox")
    assert config["config"]["Cmd"] == ["/bin/sh"]
    assert config["architecture"] == builder.host_arch() and config["os"] == "linux"
    assert any(e.startswith("PATH=") for e in config["config"]["Env"])
    members = by_name(layer_members(fixture_layout, manifest["layers"][0]))
    assert members["bin/busybox"].isfile() and members["bin/busybox"].mode == 0o755
    for applet in ("sh", "echo", "cat", "ls", "true", "id", "hostname", "sleep", "mount"):
        assert members[f"bin/{applet}"].issym() and members[f"bin/{applet}"].linkname == "busybox"
    assert members["tmp"].mode == 0o1777 and members["root"].mode == 0o700
    assert (members["home/app"].uid, members["home/app"].gid) == (1000, 1000)
    assert all(m.mtime == builder.EPOCH for m in members.values())
    names = [m.name for m in layer_members(fixture_layout, manifest["layers"][0])]
    assert names == sorted(names)


def test_passwd_and_group_have_root_nobody_app(fixture_layout: Path) -> None:
    passwd = builder.PASSWD.decode().splitlines()
    assert "app:x:1000:1000:app user:/home/app:/bin/sh" in passwd
    assert any(line.startswith("nobody:x:65534:65534:") for line in passwd)
    groups = [line for line in builder.GROUP.decode().splitlines() if "app" in line.split(":")[3]]
    assert len(groups) >= 2  # supplementary groups for `app`


def test_busybox_encodings_share_one_diff_id(fixture_layout: Path) -> None:
    diff_ids = {tag: image(fixture_layout, tag)[1]["rootfs"]["diff_ids"]
                for tag in ("busybox", "busybox-zstd", "busybox-plain", "docker-v2")}
    assert len({tuple(v) for v in diff_ids.values()}) == 1
    types = {tag: image(fixture_layout, tag)[0]["layers"][0]["mediaType"] for tag in diff_ids}
    assert types == {"busybox": builder.OCI_LAYER_GZIP, "busybox-zstd": builder.OCI_LAYER_ZSTD,
                     "busybox-plain": builder.OCI_LAYER, "docker-v2": builder.DOCKER_LAYER_GZIP}
    zstd = verified(fixture_layout, image(fixture_layout, "busybox-zstd")[0]["layers"][0])
    assert zstd[:4] == b"\x28\xb5\x2f\xfd"


def test_docker_v2_uses_docker_media_types(fixture_layout: Path) -> None:
    desc = tagged(fixture_layout)["docker-v2"]
    manifest, _ = image(fixture_layout, "docker-v2")
    assert desc["mediaType"] == manifest["mediaType"] == builder.DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == builder.DOCKER_CONFIG


def test_multilayer_layer2_special_files(fixture_layout: Path) -> None:
    manifest, _ = image(fixture_layout, "multilayer")
    assert len(manifest["layers"]) >= 4
    m = by_name(layer_members(fixture_layout, manifest["layers"][1]))
    assert m["data/hardlink-dst.txt"].islnk()
    assert m["data/hardlink-dst.txt"].linkname == "data/hardlink-src.txt"
    assert m["data/symlink-rel"].issym() and m["data/symlink-abs"].linkname == "/data/hello.txt"
    assert m["data/setuid-bin"].mode & stat.S_ISUID and m["data/setuid-bin"].mode == 0o4755
    assert m["data/setgid-dir"].isdir() and m["data/setgid-dir"].mode == 0o2775
    assert m["data/xattr.txt"].pax_headers["SCHILY.xattr.user.test"] == "hello-xattr"
    assert m["data/fifo"].isfifo()
    assert len(builder.LONG_NAME) > 100 and m[builder.LONG_NAME].isfile()
    assert m["data/empty"].isfile() and m["data/empty"].size == 0
    assert (m["data/owned-by-app.txt"].uid, m["data/owned-by-app.txt"].gid) == (1000, 1000)


def test_multilayer_layer3_whiteouts(fixture_layout: Path) -> None:
    manifest, _ = image(fixture_layout, "multilayer")
    members = layer_members(fixture_layout, manifest["layers"][2])
    m = by_name(members)
    assert "data/.wh.to-delete.txt" in m and "data/.wh.dir-to-delete" in m
    names = [x.name.rstrip("/") for x in members]
    # The re-added file precedes the opaque marker: appliers must not let the marker
    # delete same-layer content.
    assert names.index("data/opaque/new.txt") < names.index("data/opaque/.wh..wh..opq")
    assert m["data/hardlink-l3.txt"].islnk() and m["data/hardlink-l3.txt"].linkname == \
        "data/hello.txt"
    assert m["data/file-becomes-dir"].isdir() and m["data/dir-becomes-file"].isfile()
    lower = by_name(layer_members(fixture_layout, manifest["layers"][1]))
    assert lower["data/file-becomes-dir"].isfile() and lower["data/dir-becomes-file"].isdir()


def test_multilayer_config_and_docker_layer(fixture_layout: Path) -> None:
    manifest, config = image(fixture_layout, "multilayer")
    assert manifest["layers"][3]["mediaType"] == builder.DOCKER_LAYER_GZIP
    c = config["config"]
    assert c["User"] == "app" and c["WorkingDir"] == "/app"
    assert c["Entrypoint"] == ["/app/run.sh"] and c["Cmd"] == ["default-arg"]
    assert c["StopSignal"] == "SIGQUIT" and "8080/tcp" in c["ExposedPorts"]
    assert "/data/vol" in c["Volumes"] and c["Labels"]
    top = by_name(layer_members(fixture_layout, manifest["layers"][3]))
    assert top["app/run.sh"].mode == 0o755


def test_multiarch_index(fixture_layout: Path) -> None:
    desc = tagged(fixture_layout)["multiarch"]
    index = json.loads(verified(fixture_layout, desc))
    platforms = {(m["platform"]["os"], m["platform"]["architecture"],
                  m["platform"].get("variant", "")): m for m in index["manifests"]}
    assert {("linux", "amd64", ""), ("linux", "arm64", "v8"), ("unknown", "unknown", "")} <= \
        set(platforms)
    host = next(m for m in index["manifests"] if m["platform"] == {
        "architecture": builder.host_arch(), "os": "linux"})
    assert host["digest"] == tagged(fixture_layout)["busybox"]["digest"]
    attestation = platforms[("unknown", "unknown", "")]
    assert attestation["annotations"]["vnd.docker.reference.type"] == "attestation-manifest"
    assert attestation["annotations"]["vnd.docker.reference.digest"] == host["digest"]
    for key, entry in platforms.items():
        if key[0] == "linux":
            config = json.loads(verified(fixture_layout, json.loads(
                verified(fixture_layout, entry))["config"]))
            assert config["architecture"] == key[1]


# The benchmark image -----------------------------------------------------------------
def test_build_big_small_scale(tmp_path: Path) -> None:
    first = builder.build_big(tmp_path / "a", total_mb=2, layers=3, files_per_layer=12)
    second = builder.build_big(tmp_path / "b", total_mb=2, layers=3, files_per_layer=12)
    assert (first / "index.json").read_bytes() == (second / "index.json").read_bytes()
    manifest, config = image(first, "big")
    assert len(manifest["layers"]) == 3
    total = 0
    for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
        raw = gzip.decompress(verified(first, layer))
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == diff_id
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            files = [m for m in tar.getmembers() if m.isfile()]
        assert len(files) == 12
        total += sum(m.size for m in files)
    assert total >= 2 * (1 << 20) * 0.99
    schema_validator("image-manifest-schema.json").validate(manifest)


def test_multilayer_oci_differs_only_in_top_layer_type(fixture_layout: Path) -> None:
    docker, config = image(fixture_layout, "multilayer")
    oci, oci_config = image(fixture_layout, "multilayer-oci")
    assert docker["config"] == oci["config"] and config == oci_config
    assert docker["layers"][:3] == oci["layers"][:3]
    assert oci["layers"][3] == {**docker["layers"][3], "mediaType": builder.OCI_LAYER_GZIP}
