"""The content store in tmp_path: verified atomic blobs, resumable ingests, refs, gc, fsck."""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from ociimg import spec
from ociimg.digest import Digest
from ociimg.errors import (
    BlobUnknown,
    DigestMismatch,
    ImageNotFound,
    InvalidDocument,
    InvalidReference,
    LockTimeout,
    NoMatchingPlatform,
)
from ociimg.spec import Descriptor, Platform
from ociimg.store import Store, locks
from tests import ocischema
from tests.storeimage import blob_files, make_image, make_index


# Helpers -------------------------------------------------------------------------------
def validate(doc: dict[str, Any], schema_file: str) -> None:
    ocischema.validate(doc, "image-spec", schema_file)


def ingest_entries(store: Store) -> list[Path]:
    return list(store.ingest_dir.iterdir()) if store.ingest_dir.exists() else []


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "root")


# Layout and blobs ----------------------------------------------------------------------
def test_open_creates_a_valid_oci_layout(store: Store) -> None:
    assert store.path.name == "store"
    validate(json.loads((store.path / "oci-layout").read_bytes()), "image-layout-schema.json")
    validate(json.loads(store.index_path.read_bytes()), "image-index-schema.json")
    assert (store.path / "blobs" / "sha256").is_dir()
    assert store.refs() == []


def test_put_blob_is_content_addressed_and_read_only(store: Store) -> None:
    d = store.put_blob(b"hello")
    assert d == Digest.of(b"hello")
    path = store.blob_path(d)
    assert path == store.path / "blobs" / "sha256" / d.hex
    assert path.read_bytes() == b"hello"
    assert path.stat().st_mode & 0o777 == 0o444
    assert store.has_blob(d) and store.read_blob(d) == b"hello"
    with store.open_blob(d) as f:
        assert f.read() == b"hello"
    assert ingest_entries(store) == []


def test_put_blob_with_wrong_expected_digest_writes_nothing(store: Store) -> None:
    with pytest.raises(DigestMismatch):
        store.put_blob(b"hello", expected=Digest.of(b"other"))
    assert blob_files(store) == set()
    assert ingest_entries(store) == []


def test_existing_blob_is_never_rewritten(store: Store) -> None:
    d = store.put_blob(b"same")
    before = store.blob_path(d).stat()
    assert store.put_blob(b"same", expected=d) == d
    with store.ingest(d, 4) as ing:
        assert ing.done
        ing.commit()
    after = store.blob_path(d).stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_put_stream(store: Store) -> None:
    data = os.urandom(3 << 20)
    d, size = store.put_stream(io.BytesIO(data))
    assert (d, size) == (Digest.of(data), len(data))
    assert store.blob_path(d).read_bytes() == data
    with pytest.raises(DigestMismatch):
        store.put_stream(io.BytesIO(b"abc"), expected=Digest.of(b"abd"))
    with pytest.raises(DigestMismatch):
        store.put_stream(io.BytesIO(b"abc"), size=4)
    assert blob_files(store) == {d.hex}
    assert ingest_entries(store) == []


def test_sha512_blobs(store: Store) -> None:
    d = Digest.of(b"x", "sha512")
    assert store.put_blob(b"x", expected=d) == d
    assert store.blob_path(d).parent.name == "sha512"
    assert store.read_blob(d) == b"x"


def test_missing_blob_and_hostile_digest(store: Store) -> None:
    with pytest.raises(BlobUnknown) as info:
        store.open_blob(Digest.of(b"nope"))
    assert info.value.hint
    with pytest.raises(InvalidDocument):
        store.blob_path("sha256:../../../etc/passwd")
    with pytest.raises(InvalidDocument):
        store.has_blob("sha256:" + "A" * 64)
    with pytest.raises(InvalidDocument):
        store.read_blob("sha256:../../../etc/passwd")


def test_read_blob_verifies_and_caps(store: Store) -> None:
    d = store.put_blob(b"x" * 100)
    assert store.read_blob(str(d)) == b"x" * 100  # a digest given as text is parsed
    with pytest.raises(InvalidDocument, match="limit"):
        store.read_blob(d, limit=99)
    _corrupt(store, d)
    with pytest.raises(DigestMismatch) as info:
        store.read_blob(d)
    assert "fsck" in (info.value.hint or "")


def test_refuses_foreign_layout_version(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "oci-layout").write_text('{"imageLayoutVersion": "9.9.9"}')
    with pytest.raises(InvalidDocument, match="9.9.9"):
        Store.open(tmp_path)


# Ingests -------------------------------------------------------------------------------
def test_ingest_resumes_after_an_interrupted_download(store: Store) -> None:
    data = os.urandom(100_000)
    d = Digest.of(data)
    with pytest.raises(ConnectionError), store.ingest(d, len(data)) as ing:
        assert (ing.done, ing.offset) == (False, 0)
        ing.write(data[:40_000])
        raise ConnectionError("connection reset")
    partial = store.ingest_dir / f"sha256-{d.hex}"
    assert (partial / "data").stat().st_size == 40_000
    assert json.loads((partial / "meta.json").read_bytes()) == {"digest": str(d),
                                                                "size": len(data)}
    assert not store.has_blob(d)
    with store.ingest(d, len(data)) as ing:
        assert ing.offset == 40_000
        ing.write(data[ing.offset:])
        assert ing.commit() == d
    assert store.blob_path(d).read_bytes() == data
    assert store.blob_path(d).stat().st_mode & 0o777 == 0o444
    assert ingest_entries(store) == []


def test_ingest_with_a_different_expected_size_starts_over(store: Store) -> None:
    data = b"0123456789"
    d = Digest.of(data)
    with store.ingest(d, 99) as ing:
        ing.write(data[:5])
    with store.ingest(d, len(data)) as ing:
        assert ing.offset == 0
        ing.write(data)
        ing.commit()
    assert store.read_blob(d) == data


def test_ingest_restart_truncates(store: Store) -> None:
    data = b"abcdef"
    d = Digest.of(data)
    with store.ingest(d, len(data)) as ing:
        ing.write(b"xyz")
        ing.restart()
        assert ing.offset == 0
        ing.write(data)
        ing.commit()
    assert store.read_blob(d) == data


@pytest.mark.parametrize("received", [b"abcdeX", b"abcde"])
def test_ingest_mismatch_discards_the_partial(store: Store, received: bytes) -> None:
    data = b"abcdef"
    d = Digest.of(data)
    with store.ingest(d, len(data)) as ing:
        ing.write(received)
        with pytest.raises(DigestMismatch) as info:
            ing.commit()
    assert str(d) in str(info.value) and info.value.hint
    assert not store.has_blob(d)
    assert blob_files(store) == set()
    assert not (store.ingest_dir / f"sha256-{d.hex}" / "data").exists()
    with store.ingest(d, len(data)) as ing:  # a fresh attempt starts at 0
        assert ing.offset == 0


def test_ingest_refuses_more_bytes_than_the_descriptor_says(store: Store) -> None:
    d = Digest.of(b"abc")
    with store.ingest(d, 3) as ing:
        ing.write(b"ab")
        with pytest.raises(DigestMismatch, match="more data"):
            ing.write(b"cd")
    assert blob_files(store) == set()
    assert not (store.ingest_dir / f"sha256-{d.hex}" / "data").exists()


def test_ingest_of_zero_bytes_and_negative_size(store: Store) -> None:
    d = Digest.of(b"")
    with store.ingest(d, 0) as ing:
        ing.commit()
    assert store.read_blob(d) == b""
    with pytest.raises(InvalidDocument, match="negative"), store.ingest(Digest.of(b"x"), -1):
        pass


def test_an_ingest_is_locked_while_in_use(store: Store) -> None:
    d = Digest.of(b"data")
    lock = store.ingest_dir / f"sha256-{d.hex}" / "lock"
    with store.ingest(d, 4) as ing:
        assert locks.try_lock(lock) is None
        ing.write(b"da")
    fd = locks.try_lock(lock)
    assert fd is not None
    locks.release_lock(fd)


def test_a_waiting_ingest_finds_the_blob_committed_by_the_first(store: Store) -> None:
    data = b"shared blob"
    d = Digest.of(data)
    started, results = threading.Event(), []

    def second() -> None:
        started.set()
        with store.ingest(d, len(data)) as ing:
            results.append(ing.done)

    with store.ingest(d, len(data)) as ing:
        t = threading.Thread(target=second)
        t.start()
        started.wait()
        ing.write(data)
        ing.commit()
    t.join()
    assert results == [True]
    assert store.read_blob(d) == data
    assert ingest_entries(store) == []


# Names ---------------------------------------------------------------------------------
def test_tag_resolve_untag(store: Store) -> None:
    a = make_image(store, {"a": b"1"}, name="docker.io/library/busybox:latest")
    store.tag("docker.io/library/busybox:1.36", a)
    b = make_image(store, {"b": b"2"}, name="127.0.0.1:5000/x:v1")
    assert [n for n, _ in store.refs()] == ["docker.io/library/busybox:latest",
                                            "docker.io/library/busybox:1.36",
                                            "127.0.0.1:5000/x:v1"]
    assert store.resolve("busybox").digest == a.digest
    assert store.resolve("busybox:1.36").digest == a.digest
    assert store.resolve("docker.io/library/busybox:latest").digest == a.digest
    assert store.resolve("127.0.0.1:5000/x:v1").digest == b.digest
    assert store.resolve(f"busybox@{a.digest}").digest == a.digest
    assert store.resolve(a.digest.hex[:12]).digest == a.digest
    assert store.resolve(str(b.digest)).digest == b.digest
    with pytest.raises(ImageNotFound):
        store.resolve(f"127.0.0.1:5000/x@{a.digest}")  # right digest, other repository
    with pytest.raises(ImageNotFound):
        store.resolve(a.digest.hex[:6])  # too short to be taken as a digest
    store.untag("busybox:1.36")
    assert store.resolve("busybox").digest == a.digest
    with pytest.raises(ImageNotFound) as info:
        store.resolve("busybox:1.36")
    assert info.value.hint
    with pytest.raises(ImageNotFound):
        store.untag("busybox:1.36")


def test_tag_replaces_an_entry_of_the_same_name(store: Store) -> None:
    a = make_image(store, {"a": b"1"}, name="example.com/app:v1")
    b = make_image(store, {"b": b"2"}, name="example.com/app:v1")
    assert [(n, d.digest) for n, d in store.refs()] == [("example.com/app:v1", b.digest)]
    assert store.resolve("example.com/app:v1").digest != a.digest


def test_tag_refuses_bad_names_and_missing_blobs(store: Store) -> None:
    a = make_image(store, {"a": b"1"})
    with pytest.raises(InvalidReference):
        store.tag("bad name", a)
    with pytest.raises(InvalidReference):
        store.tag("[::1]:5000/x:latest", a)
    missing = make_image(store, {"m": b"0"}, put=False)
    with pytest.raises(BlobUnknown):
        store.tag("example.com/missing:v1", missing)
    assert store.refs() == []


def test_index_json_stays_schema_valid_and_keeps_unknown_fields(store: Store) -> None:
    doc = json.loads(store.index_path.read_bytes())
    doc["annotations"] = {"org.example.keep": "yes"}
    doc["x-extension"] = [1]
    store.index_path.write_text(json.dumps(doc))
    a = make_image(store, {"a": b"1"}, name="example.com/app:v1")
    store.tag("example.com/app:v2", a.with_annotations({"org.example.desc": "kept"}))
    out = json.loads(store.index_path.read_bytes())
    validate(out, "image-index-schema.json")
    assert out["annotations"] == {"org.example.keep": "yes"} and out["x-extension"] == [1]
    names = {m["annotations"][spec.ANNOTATION_REF_NAME]: m for m in out["manifests"]}
    assert names["example.com/app:v2"]["annotations"]["org.example.desc"] == "kept"
    assert names["example.com/app:v1"]["platform"] == {"architecture": "amd64", "os": "linux"}


def test_untagged_index_entries_are_not_refs_but_are_roots(store: Store) -> None:
    a = make_image(store, {"a": b"1"})
    doc = json.loads(store.index_path.read_bytes())
    doc["manifests"].append(a.to_json())  # as `skopeo copy … oci:DIR` without a name writes
    store.index_path.write_text(json.dumps(doc))
    assert store.refs() == [] and store.entries() == [a]
    assert store.gc().removed_blobs == 0


# Documents -----------------------------------------------------------------------------
def test_image_for_a_manifest_and_images(store: Store) -> None:
    a = make_image(store, {"bin/sh": b"#!"}, name="example.com/app:v1")
    desc, manifest, config = store.image_for("example.com/app:v1")
    assert desc.digest == a.digest
    assert manifest.layers[0].media_type == spec.OCI_LAYER
    assert config.cmd == ["/bin/sh"]
    with pytest.raises(NoMatchingPlatform):
        store.image_for("example.com/app:v1", Platform("linux", "arm64"))
    [summary] = store.images()
    assert (summary.name, summary.digest) == ("example.com/app:v1", a.digest)
    assert summary.size == sum(store.blob_path(d.digest).stat().st_size
                               for d in store.walk(a))


def test_image_for_an_index_picks_the_platform(store: Store) -> None:
    amd = make_image(store, {"a": b"amd"}, arch="amd64")
    arm = make_image(store, {"a": b"arm"}, arch="arm64")
    absent = make_image(store, {"a": b"ppc"}, arch="ppc64le", put=False)
    idx = make_index(store, [amd, arm, absent], name="example.com/multi:v1")
    assert store.image_for("example.com/multi:v1", Platform("linux", "arm64"))[0].digest \
        == arm.digest
    assert store.image_for("example.com/multi:v1", Platform.parse("linux/amd64"))[2] \
        .platform.architecture == "amd64"
    with pytest.raises(ImageNotFound, match="not pulled"):
        store.image_for("example.com/multi:v1", Platform("linux", "ppc64le"))
    with pytest.raises(NoMatchingPlatform, match="linux/arm64"):
        store.image_for("example.com/multi:v1", Platform("linux", "s390x"))
    walked = [d.digest for d in store.walk(idx)]
    assert len(walked) == len(set(walked)) == 1 + 3 + 2 * 2  # index, 3 manifests, 2×(cfg+layer)


def test_image_for_refuses_an_artifact(store: Store) -> None:
    cfg = store.put_blob(b"{}")
    raw = spec.canonical_json({"schemaVersion": 2, "mediaType": spec.OCI_MANIFEST,
                               "config": {"mediaType": spec.OCI_EMPTY, "digest": str(cfg),
                                          "size": 2}, "layers": []})
    store.tag("example.com/sig:v1", Descriptor(spec.OCI_MANIFEST, store.put_blob(raw), len(raw)))
    with pytest.raises(InvalidDocument, match="not a container image"):
        store.image_for("example.com/sig:v1")


# gc --------------------------------------------------------------------------------------
def test_gc_removes_only_unreferenced_blobs_and_reports_bytes(store: Store) -> None:
    keep = make_image(store, {"keep": b"k" * 1000}, name="example.com/keep:v1")
    drop = make_image(store, {"drop": b"d" * 5000})
    kept = {d.digest.hex for d in store.walk(keep)}
    dropped = {d.digest.hex for d in store.walk(drop)}
    stray = store.put_blob(b"stray")
    with pytest.raises(OSError), store.ingest(Digest.of(b"partial"), 7) as ing:
        ing.write(b"par")
        raise OSError("interrupted")
    expected_bytes = sum(store.blob_path(Digest("sha256", h)).stat().st_size
                         for h in dropped) + 5
    result = store.gc()
    assert result.removed_blobs == len(dropped) + 1
    assert result.bytes_freed == expected_bytes
    assert result.removed_ingests == 1
    assert blob_files(store) == kept
    assert not store.has_blob(stray)
    assert ingest_entries(store) == []
    assert store.fsck() == []
    assert store.gc().removed_blobs == 0


def test_gc_keeps_index_children_and_subjects(store: Store) -> None:
    amd = make_image(store, {"a": b"amd"}, arch="amd64")
    arm = make_image(store, {"a": b"arm"}, arch="arm64")
    make_index(store, [amd, arm], name="example.com/multi:v1")
    subject = make_image(store, {"s": b"subject"})
    cfg = store.put_blob(b"{}")
    sig = spec.canonical_json({"schemaVersion": 2, "mediaType": spec.OCI_MANIFEST,
                               "config": {"mediaType": spec.OCI_EMPTY, "digest": str(cfg),
                                          "size": 2},
                               "layers": [], "subject": subject.to_json()})
    store.tag("example.com/multi:sig", Descriptor(spec.OCI_MANIFEST, store.put_blob(sig),
                                                  len(sig)))
    before = blob_files(store)
    assert store.gc().removed_blobs == 0
    assert blob_files(store) == before


def test_gc_waits_for_leases(store: Store) -> None:
    make_image(store, {"x": b"unreferenced yet"})
    before = blob_files(store)
    with store.lease():
        with pytest.raises(LockTimeout) as info:
            store.gc()
        assert info.value.hint
    assert blob_files(store) == before
    assert store.gc().removed_blobs == 3


def test_gc_keeps_the_blobs_of_a_corrupt_manifest_and_names_it(store: Store) -> None:
    a = make_image(store, {"a": b"1"}, name="example.com/app:v1")
    path = store.blob_path(a.digest)
    path.chmod(0o644)
    path.write_bytes(path.read_bytes().replace(b'"schemaVersion":2', b'"schemaVersion":3'))
    before = blob_files(store)
    result = store.gc()
    assert blob_files(store) == before
    [warning] = result.warnings
    assert "example.com/app:v1" in warning and str(a.digest) in warning


# fsck --------------------------------------------------------------------------------------
def _corrupt(store: Store, digest: Digest) -> None:
    path = store.blob_path(digest)
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_fsck_finds_and_removes_a_corrupt_blob(store: Store) -> None:
    a = make_image(store, {"big": os.urandom(10_000)}, name="example.com/app:v1")
    layer = store.image_for("example.com/app:v1")[1].layers[0]
    assert store.fsck() == []
    _corrupt(store, layer.digest)
    [problem] = store.fsck()
    assert (problem.kind, problem.digest, problem.removed) == ("corrupt", layer.digest, False)
    assert store.has_blob(layer.digest)
    [problem] = store.fsck(remove=True)
    assert problem.removed and not store.has_blob(layer.digest)
    [problem] = store.fsck()
    assert (problem.kind, problem.digest) == ("missing", layer.digest)
    assert store.has_blob(a.digest)


def test_fsck_reports_wrong_sizes_stray_files_and_missing_roots(store: Store) -> None:
    a = make_image(store, {"a": b"1"})
    store.tag("example.com/app:v1", Descriptor(a.media_type, a.digest, a.size + 1))
    (store.path / "blobs" / "sha256" / "not-a-digest").write_bytes(b"")
    gone = make_image(store, {"g": b"gone"}, name="example.com/gone:v1")
    store.blob_path(gone.digest).unlink()
    kinds = sorted((p.kind, str(p.digest)) for p in store.fsck())
    assert kinds == sorted([("size", str(a.digest)), ("stray", "None"),
                            ("missing", str(gone.digest))])


# Hostile stores ---------------------------------------------------------------------------
def test_index_json_with_a_traversal_digest_is_refused(store: Store) -> None:
    doc = json.loads(store.index_path.read_bytes())
    doc["manifests"].append({"mediaType": spec.OCI_MANIFEST, "size": 1,
                             "digest": "sha256:../../../../etc/passwd"})
    store.index_path.write_text(json.dumps(doc))
    with pytest.raises(InvalidDocument, match="digest"):
        store.refs()
    with pytest.raises(InvalidDocument):
        store.gc()
    [problem] = store.fsck()
    assert problem.kind == "unreadable" and "index.json" in problem.message


def test_planted_symlink_blob_is_not_followed(store: Store, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    canary.write_bytes(b"outside the store")
    d = Digest.of(b"outside the store")
    store.blob_path(d).symlink_to(canary)
    with pytest.raises(InvalidDocument, match="symbolic link"):
        store.open_blob(d)
    [problem] = store.fsck(remove=True)
    assert problem.kind == "stray"
    result = store.gc()
    assert result.removed_blobs == 1
    assert not os.path.lexists(store.blob_path(d))
    assert canary.read_bytes() == b"outside the store"


def test_planted_symlink_in_an_ingest_is_not_written_through(store: Store,
                                                            tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    canary.write_bytes(b"keep")
    d = Digest.of(b"data")
    partial = store.ingest_dir / f"sha256-{d.hex}"
    partial.mkdir()
    (partial / "meta.json").write_text(json.dumps({"digest": str(d), "size": 4}))
    (partial / "data").symlink_to(canary)
    with pytest.raises(InvalidDocument, match="not a regular file"), store.ingest(d, 4):
        pass
    assert canary.read_bytes() == b"keep"
