"""docker-archive files are attackers: each hostile shape is one clear error, nothing is
written outside the store, and nothing of a bad archive is tagged. The archives are
built here from the format's description (moby image/tarexport, containers/image
docker/internal/tarfile): legacy ``<id>/layer.tar`` with shared-layer symlinks, skopeo's
``<diffid>.tar`` and Docker ≥ 25's OCI layout plus manifest.json."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from ociimg import spec
from ociimg.digest import Digest
from ociimg.errors import DigestMismatch, InvalidDocument, OciimgError, UnsafeArchive
from ociimg.registry import archive as archive_module
from ociimg.registry.dockerarchive import DockerArchive
from ociimg.store import Store
from ociimg.transports import load_archive
from tests.storeimage import tar_layer
from tests.treewalk import diff_manifests, make_canary, tree_manifest

LAYER = tar_layer({"etc/hello": b"hello\n"})
LAYER2 = tar_layer({"etc/other": b"other\n"})


def config_for(*layers: bytes) -> bytes:
    return spec.canonical_json({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [str(Digest.of(x)) for x in layers]}})


def add(tar: tarfile.TarFile, name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE,
        link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def write_archive(path: Path, members: list[tuple], manifest: object | None = None) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            add(tar, *member[:2], **(member[2] if len(member) > 2 else {}))
        if manifest is not None:
            add(tar, "manifest.json", json.dumps(manifest).encode())
    return path


def legacy(path: Path, **override: object) -> Path:
    """A `docker save` (≤ 24) archive of two images sharing their base layer: the second
    image's layer.tar for it is a symlink to the first's, as moby's saveLayer writes."""
    c1, c2 = config_for(LAYER), config_for(LAYER, LAYER2)
    h1, h2 = Digest.of(c1).hex, Digest.of(c2).hex
    members = [("aaaa" * 16 + "/layer.tar", LAYER),
               ("bbbb" * 16 + "/layer.tar", b"", {"kind": tarfile.SYMTYPE,
                                                  "link": "../" + "aaaa" * 16 + "/layer.tar"}),
               ("cccc" * 16 + "/layer.tar", LAYER2),
               ("aaaa" * 16 + "/VERSION", b"1.0"), ("aaaa" * 16 + "/json", b"{}"),
               (f"{h1}.json", c1), (f"{h2}.json", c2), ("repositories", b"{}")]
    manifest = [{"Config": f"{h1}.json", "RepoTags": ["one:1"],
                 "Layers": ["aaaa" * 16 + "/layer.tar"]},
                {"Config": f"{h2}.json", "RepoTags": ["example.com/two:2", "two:latest"],
                 "Layers": ["bbbb" * 16 + "/layer.tar", "cccc" * 16 + "/layer.tar"]}]
    manifest[0].update(override)  # type: ignore[arg-type]
    return write_archive(path, members, manifest)


@pytest.fixture
def guarded(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A store and a canary beside it; afterwards the canary must be unchanged and
    nothing may exist beside them but the archive."""
    canary = make_canary(tmp_path / "canary")
    before = tree_manifest(canary)
    store = Store(tmp_path / "store")
    store.init()
    yield store, tmp_path
    assert diff_manifests(before, tree_manifest(canary)) == []
    assert {p.name for p in tmp_path.iterdir()} <= {"canary", "store", "a.tar"}


def test_legacy_archive_with_shared_layer_link_loads(guarded) -> None:  # type: ignore[no-untyped-def]
    store, tmp = guarded
    loaded = load_archive(legacy(tmp / "a.tar"), store)
    assert [n for n, _ in loaded] == ["docker.io/library/one:1", "example.com/two:2",
                                      "docker.io/library/two:latest"]
    _d, manifest, config = store.image_for("example.com/two:2")
    assert [layer.digest for layer in manifest.layers] == list(config.diff_ids)
    with store.open_blob(manifest.layers[0].digest) as f:
        assert f.read() == LAYER


def test_docker25_oci_layout_with_manifest_json_loads(guarded) -> None:  # type: ignore[no-untyped-def]
    store, tmp = guarded
    config = config_for(LAYER)
    blob = {Digest.of(x).hex: x for x in (config, LAYER)}
    members = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
               ("index.json", b'{"schemaVersion":2,"manifests":[]}'),
               *((f"blobs/sha256/{h}", data) for h, data in blob.items())]
    write_archive(tmp / "a.tar", members, [{
        "Config": f"blobs/sha256/{Digest.of(config).hex}", "RepoTags": ["new:25"],
        "Layers": [f"blobs/sha256/{Digest.of(LAYER).hex}"]}])
    assert [n for n, _ in load_archive(tmp / "a.tar", store)] == ["docker.io/library/new:25"]


@pytest.mark.parametrize("members, match", [
    ([("../../etc/evil", b"x")], "unexpected entry"),
    ([("/etc/evil", b"x")], "unexpected entry"),
    ([("dev", b"", {"kind": tarfile.CHRTYPE})], "unexpected entry"),
    ([("manifest.json", b"[]"), ("manifest.json", b"[]")], "appears twice"),
    ([("aaaa" * 16 + "/layer.tar", b"", {"kind": tarfile.FIFOTYPE})], "unexpected entry"),
])
def test_hostile_members(guarded, members, match) -> None:  # type: ignore[no-untyped-def]
    store, tmp = guarded
    write_archive(tmp / "a.tar", members)
    with pytest.raises(UnsafeArchive, match=match):
        load_archive(tmp / "a.tar", store)
    assert store.refs() == []


@pytest.mark.parametrize("link, kind, match", [
    ("/etc/passwd", tarfile.SYMTYPE, "points outside"),
    ("../../../etc/passwd", tarfile.SYMTYPE, "points outside"),
    ("../etc/passwd", tarfile.LNKTYPE, "points outside"),
    ("dddd" * 16 + "/layer.tar", tarfile.LNKTYPE, "more than 8 links"),  # a loop
])
def test_links_never_leave_the_archive(guarded, link, kind, match) -> None:  # type: ignore[no-untyped-def]
    store, tmp = guarded
    config = config_for(LAYER)
    loop = "dddd" * 16 + "/layer.tar"
    members = [("aaaa" * 16 + "/layer.tar", b"", {"kind": kind, "link": link}),
               (loop, b"", {"kind": tarfile.LNKTYPE, "link": "aaaa" * 16 + "/layer.tar"}),
               (f"{Digest.of(config).hex}.json", config)]
    write_archive(tmp / "a.tar", members, [{"Config": f"{Digest.of(config).hex}.json",
                                            "RepoTags": ["x:1"],
                                            "Layers": ["aaaa" * 16 + "/layer.tar"]}])
    with pytest.raises(UnsafeArchive, match=match):
        load_archive(tmp / "a.tar", store)
    assert store.refs() == []


@pytest.mark.parametrize("override, error, match", [
    ({"Layers": ["../../../etc/passwd"]}, UnsafeArchive, "points outside"),
    ({"Layers": ["/etc/passwd"]}, UnsafeArchive, "points outside"),
    ({"Layers": ["ffff" * 16 + "/layer.tar"]}, InvalidDocument, "not in the archive"),
    ({"Config": "../" + "ab" * 32 + ".json"}, UnsafeArchive, "points outside"),
    ({"Layers": []}, InvalidDocument, "0 layers, the config has 1"),
    ({"Config": 7}, InvalidDocument, "Config: expected a str"),
    ({"RepoTags": ["UPPER/case"]}, OciimgError, "lowercase"),
])
def test_manifest_json_pointing_elsewhere(guarded, override, error, match) -> None:  # type: ignore[no-untyped-def]
    store, tmp = guarded
    with pytest.raises(error, match=match):
        load_archive(legacy(tmp / "a.tar", **override), store)
    assert store.refs() == []


def test_config_that_does_not_hash_to_its_name(guarded) -> None:  # type: ignore[no-untyped-def]
    store, tmp = guarded
    config = config_for(LAYER)
    name = f"{'ab' * 32}.json"
    write_archive(tmp / "a.tar", [("aaaa" * 16 + "/layer.tar", LAYER), (name, config)],
                  [{"Config": name, "RepoTags": ["x:1"], "Layers": ["aaaa" * 16 + "/layer.tar"]}])
    with pytest.raises(DigestMismatch, match="hashes to"):
        load_archive(tmp / "a.tar", store)


def test_layer_that_does_not_match_its_diff_id_tags_nothing(guarded) -> None:  # type: ignore[no-untyped-def]
    """The second image's layer was altered: the first image (fine) is not tagged
    either, and the altered bytes are not in the store."""
    store, tmp = guarded
    archive = legacy(tmp / "a.tar")
    data = archive.read_bytes()
    at = data.index(b"other\n")
    archive.write_bytes(data[:at] + b"OTHER\n" + data[at + 6:])
    with pytest.raises(DigestMismatch):
        load_archive(archive, store)
    assert store.refs() == []
    assert not store.has_blob(Digest.of(LAYER2))
    altered = tar_layer({"etc/other": b"OTHER\n"})
    assert not store.has_blob(Digest.of(altered))


def test_member_count_and_document_size_are_bounded(guarded, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    store, tmp = guarded
    monkeypatch.setattr(archive_module, "MAX_MEMBERS", 5)
    with pytest.raises(UnsafeArchive, match="more than 5 entries"):
        load_archive(legacy(tmp / "a.tar"), store)
    monkeypatch.undo()
    write_archive(tmp / "a.tar", [("manifest.json", b" " * (spec.MAX_MANIFEST_BYTES + 1))])
    with pytest.raises(InvalidDocument, match="larger than"):
        load_archive(tmp / "a.tar", store)


def test_truncated_archive_is_one_error(guarded) -> None:  # type: ignore[no-untyped-def]
    store, tmp = guarded
    archive = legacy(tmp / "a.tar")
    archive.write_bytes(archive.read_bytes()[:1500])
    with pytest.raises(InvalidDocument, match="truncated"):
        load_archive(archive, store)
    assert store.refs() == []


def test_gzipped_docker_archive_is_read_in_place(tmp_path: Path) -> None:
    import gzip

    archive = legacy(tmp_path / "a.tar")
    (tmp_path / "a.tar.gz").write_bytes(gzip.compress(archive.read_bytes()))
    assert len(DockerArchive(tmp_path / "a.tar.gz").images) == 2


def test_dir_destination_never_replaces_a_foreign_directory(tmp_path: Path) -> None:
    from ociimg.errors import InvalidReference
    from ociimg.reference import LayoutReference
    from ociimg.registry import copy
    from tests.storeimage import make_image

    store = Store(tmp_path / "store")
    make_image(store, {"a": b"b"}, name="x:1")
    home = tmp_path / "home"
    home.mkdir()
    (home / "precious").write_text("keep me")
    for target in (home, home / "precious"):
        with pytest.raises(InvalidReference):
            copy(LayoutReference("oci", store.path, "x:1"), LayoutReference("dir", target))
    assert (home / "precious").read_text() == "keep me"
    copy(LayoutReference("oci", store.path, "x:1"), LayoutReference("dir", tmp_path / "img"))
    copy(LayoutReference("oci", store.path, "x:1"), LayoutReference("dir", tmp_path / "img"))


def test_one_big_config_named_by_many_entries_is_bounded(guarded) -> None:  # type: ignore[no-untyped-def]
    store, tmp = guarded
    config = json.loads(config_for(LAYER))
    config["padding"] = "x" * (3 << 20)
    raw = spec.canonical_json(config)
    name = f"{Digest.of(raw).hex}.json"
    entry = {"Config": name, "RepoTags": [], "Layers": ["aaaa" * 16 + "/layer.tar"]}
    write_archive(tmp / "a.tar", [("aaaa" * 16 + "/layer.tar", LAYER), (name, raw)],
                  [entry] * 100)
    with pytest.raises(UnsafeArchive, match="exceed"):
        load_archive(tmp / "a.tar", store)
    write_archive(tmp / "a.tar", [("aaaa" * 16 + "/layer.tar", LAYER)], [entry] * 5000)
    with pytest.raises(UnsafeArchive, match="5000 images"):
        load_archive(tmp / "a.tar", store)
    assert store.refs() == []
