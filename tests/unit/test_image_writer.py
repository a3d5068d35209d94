"""The image writer: layers compressed and hashed in one pass, config/manifest valid against
the image-spec schemas, the tag written last, nothing half-written left looking valid."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import pytest
import zstandard

from ociimg import spec
from ociimg.digest import Digest
from ociimg.errors import (
    BlobUnknown,
    DigestMismatch,
    ImageNotFound,
    InvalidArgument,
    InvalidDocument,
    InvalidReference,
)
from ociimg.image import (
    HistoryEntry,
    NewLayer,
    copy_blobs,
    parse_change,
    write_image,
)
from ociimg.spec import Descriptor, Platform, parse_config, parse_manifest
from ociimg.store import Store
from tests import ocischema
from tests.layerimage import build_image, tar_of

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "root")


def blob_files(store: Store) -> set[str]:
    return {p.name for p in (store.path / "blobs" / "sha256").iterdir()}


def read_image(store: Store, name: str) -> tuple[dict, dict, spec.Manifest]:
    desc = store.resolve(name)
    raw = store.read_blob(desc.digest)
    manifest = parse_manifest(raw)
    config = json.loads(store.read_blob(manifest.config.digest))
    return json.loads(raw), config, manifest


def validate(manifest: dict, config: dict) -> None:
    ocischema.validate(manifest, "image-spec", "image-manifest-schema.json")
    ocischema.validate(config, "image-spec", "config-schema.json")


def test_scratch_image_with_one_layer_is_valid_and_tagged(store: Store) -> None:
    tar = tar_of({"etc/": None, "etc/hello": b"hi\n"})
    desc = write_image(store, base_config=None, base_layers=[],
                       new_layers=[NewLayer(io.BytesIO(tar))],
                       history=[HistoryEntry(created_by="test", comment="one layer")],
                       tag="example.com/new:1", created=WHEN,
                       platform=Platform("linux", "amd64"))
    manifest_doc, config, manifest = read_image(store, "example.com/new:1")
    validate(manifest_doc, config)
    assert desc.digest == manifest.digest and desc.media_type == spec.OCI_MANIFEST
    assert config["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(tar).hexdigest()}"]
    assert config["created"] == "2026-01-02T03:04:05Z"
    assert config["history"] == [{"created": "2026-01-02T03:04:05Z", "created_by": "test",
                                  "comment": "one layer"}]
    (layer,) = manifest.layers
    assert layer.media_type == spec.OCI_LAYER_GZIP
    with store.open_blob(layer.digest) as f:
        blob = f.read()
    assert len(blob) == layer.size and gzip.decompress(blob) == tar
    # Deterministic gzip: header mtime 0, no FNAME flag.
    assert blob[3] & 0x08 == 0 and blob[4:8] == b"\0\0\0\0"


def test_base_image_layers_history_and_changes_carry_over(store: Store) -> None:
    manifest, config = build_image(store, [tar_of({"a": b"1"}), tar_of({"b": b"2"})])
    base_history = ({"created_by": "base 1"}, {"created_by": "base 2"})
    config = parse_config(json.dumps({
        **json.loads(config.raw), "history": list(base_history), "container": "abc",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "Labels": {"old": "1"}},
    }).encode())

    def produce(sink: BinaryIO) -> None:  # SnapshotStore.diff's shape: writes to a sink
        sink.write(tar_of({"c": b"3" * 3_000_000}))

    changes = [parse_change(c) for c in ('ENV A=$PATH:/x', 'LABEL new=2', 'CMD ["ls"]',
                                         "EXPOSE 80")]
    write_image(store, base_config=config, base_layers=list(manifest.layers),
                new_layers=[NewLayer(produce)],
                history=[HistoryEntry(created_by="/bin/sh", author="me"),
                         HistoryEntry(created_by="LABEL new=2", empty_layer=True)],
                config_changes=changes, tag="example.com/derived:latest", created=WHEN,
                author="me")
    manifest_doc, new_config, new_manifest = read_image(store, "example.com/derived:latest")
    validate(manifest_doc, new_config)
    assert new_manifest.layers[:2] == manifest.layers
    assert len(new_config["rootfs"]["diff_ids"]) == 3
    assert new_config["rootfs"]["diff_ids"][:2] == [str(d) for d in config.diff_ids]
    assert [h.get("created_by") for h in new_config["history"]] == [
        "base 1", "base 2", "/bin/sh", "LABEL new=2"]
    assert new_config["history"][3]["empty_layer"] is True
    assert new_config["author"] == "me" and "container" not in new_config
    runtime = new_config["config"]
    assert runtime["Env"] == ["PATH=/bin", "A=/bin:/x"]
    assert runtime["Labels"] == {"old": "1", "new": "2"}
    assert runtime["Cmd"] == ["ls"] and runtime["ExposedPorts"] == {"80/tcp": {}}
    # The store reads it back as a runnable image.
    _, _, parsed = store.image_for("example.com/derived:latest", Platform("linux", "amd64"))
    assert parsed.cmd == ["ls"]


def test_docker_base_layers_are_described_with_oci_types(store: Store) -> None:
    manifest, config = build_image(store, [tar_of({"a": b"1"})])
    docker_layer = Descriptor(spec.DOCKER_LAYER_GZIP, manifest.layers[0].digest,
                              manifest.layers[0].size)
    write_image(store, base_config=config, base_layers=[docker_layer], new_layers=[],
                history=[], tag="x:1", created=WHEN)
    manifest_doc, config_doc, new_manifest = read_image(store, "x:1")
    validate(manifest_doc, config_doc)
    assert new_manifest.layers[0].media_type == spec.OCI_LAYER_GZIP


def test_same_input_gives_the_same_image(store: Store) -> None:
    tar = tar_of({"f": b"x" * 100_000})
    digests = {write_image(store, base_config=None, base_layers=[],
                           new_layers=[NewLayer(io.BytesIO(tar))],
                           history=[HistoryEntry(created_by="t")], tag=None, created=WHEN,
                           platform=Platform("linux", "arm64")).digest
               for _ in range(2)}
    assert len(digests) == 1


def test_zstd_layers(store: Store) -> None:
    tar = tar_of({"z": b"zz" * 1000})
    write_image(store, base_config=None, base_layers=[], new_layers=[NewLayer(io.BytesIO(tar))],
                history=[HistoryEntry()], tag="z:1", compression="zstd", created=WHEN)
    manifest_doc, config, manifest = read_image(store, "z:1")
    validate(manifest_doc, config)
    assert manifest.layers[0].media_type == spec.OCI_LAYER_ZSTD
    with store.open_blob(manifest.layers[0].digest) as f:
        assert zstandard.ZstdDecompressor().decompressobj().decompress(f.read()) == tar


def test_a_failing_producer_leaves_no_blob_and_no_tag(store: Store) -> None:
    before = blob_files(store)

    def produce(sink: BinaryIO) -> None:
        sink.write(b"\0" * (3 << 20))  # several chunks reach the compressor first
        raise OSError(5, "I/O error while walking the upper dir")

    with pytest.raises(OSError, match="walking the upper dir"):
        write_image(store, base_config=None, base_layers=[], new_layers=[NewLayer(produce)],
                    history=[HistoryEntry()], tag="broken:1", created=WHEN)
    assert blob_files(store) == before
    assert not any(store.ingest_dir.iterdir())
    with pytest.raises(ImageNotFound):
        store.resolve("broken:1")


def test_a_failing_consumer_stops_the_producer(store: Store, monkeypatch) -> None:
    written = []

    def produce(sink: BinaryIO) -> None:
        for _ in range(1000):  # 1 GiB if nobody stopped it
            sink.write(b"\1" * (1 << 20))
            written.append(1)

    def fail(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Store, "put_stream", lambda self, stream, **k: (stream.read(1), fail()))
    with pytest.raises(OSError, match="No space"):
        write_image(store, base_config=None, base_layers=[], new_layers=[NewLayer(produce)],
                    history=[HistoryEntry()], tag="broken:1", created=WHEN)
    assert len(written) < 20


@pytest.mark.parametrize("kwargs, error", [
    ({"history": []}, InvalidArgument),  # one layer, no history entry for it
    ({"tag": "Bad Name!"}, InvalidReference),
    ({"compression": "bzip2"}, InvalidArgument),
    ({"config_changes": [parse_change("EXPOSE $NOPE")]}, InvalidArgument),  # expands to ""
])
def test_bad_arguments_write_nothing(store: Store, kwargs: dict, error: type) -> None:
    before = blob_files(store)
    args = {"base_config": None, "base_layers": [],
            "new_layers": [NewLayer(io.BytesIO(tar_of({"a": b"1"})))],
            "history": [HistoryEntry()], "tag": "ok:1", "created": WHEN, **kwargs}
    with pytest.raises(error):
        write_image(store, **args)
    assert blob_files(store) == before


def test_base_layers_must_be_in_the_store(tmp_path: Path, store: Store) -> None:
    other = Store.open(tmp_path / "other")
    manifest, config = build_image(other, [tar_of({"a": b"1"})])
    with pytest.raises(BlobUnknown, match="not in the store"):
        write_image(store, base_config=config, base_layers=list(manifest.layers),
                    new_layers=[], history=[], tag="x:1", created=WHEN)
    with pytest.raises(InvalidDocument, match="diff_ids"):
        write_image(store, base_config=config, base_layers=[], new_layers=[], history=[],
                    tag="x:1", created=WHEN)
    assert copy_blobs(other, store, manifest.layers) == 1
    write_image(store, base_config=config, base_layers=list(manifest.layers), new_layers=[],
                history=[], tag="x:1", created=WHEN)
    assert copy_blobs(other, store, manifest.layers) == 0


def test_copy_blobs_verifies_what_it_copies(tmp_path: Path, store: Store) -> None:
    other = Store.open(tmp_path / "other")
    manifest, _ = build_image(other, [tar_of({"a": b"1"})])
    layer = manifest.layers[0]
    path = other.blob_path(layer.digest)
    path.chmod(0o644)
    path.write_bytes(b"tampered")
    with pytest.raises(DigestMismatch):
        copy_blobs(other, store, [layer])
    assert not store.has_blob(layer.digest)


def test_naive_time_is_refused(store: Store) -> None:
    with pytest.raises(InvalidArgument, match="time zone"):
        write_image(store, base_config=None, base_layers=[], new_layers=[], history=[],
                    tag=None, created=datetime(2026, 1, 1))


def test_diff_id_of_a_layer_is_of_the_uncompressed_bytes(store: Store) -> None:
    tar = tar_of({"big": bytes(range(256)) * 20_000})
    write_image(store, base_config=None, base_layers=[], new_layers=[NewLayer(io.BytesIO(tar))],
                history=[HistoryEntry()], tag="d:1", created=WHEN)
    _, config, _ = read_image(store, "d:1")
    assert Digest.parse(config["rootfs"]["diff_ids"][0]) == Digest.of(tar)
