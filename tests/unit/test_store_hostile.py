"""A store or ``oci:`` layout that someone else shaped: bad documents in one image must not
break the others, and planted FIFOs, devices and symlinks are refused without blocking."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ociimg import spec
from ociimg.digest import Digest
from ociimg.errors import BlobUnknown, InvalidDocument
from ociimg.spec import Descriptor
from ociimg.store import Store
from tests.clirun import ociimg
from tests.conftest import need
from tests.storeimage import blob_files, make_image, store_image, tar_layer

DEEP = b'{"a":' * 100_000 + b"1" + b"}" * 100_000


def blobs_of(store: Store, desc: Descriptor, manifest: bytes | None = None) -> set[str]:
    raw = manifest or store.blob_path(desc.digest).read_bytes()
    doc = json.loads(raw)
    return {desc.digest.hex, Digest.parse(doc["config"]["digest"]).hex,
            *(Digest.parse(x["digest"]).hex for x in doc["layers"])}


class Blocked(Exception):
    pass


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """A FIFO opened or read in this process would block forever: fail instead."""
    def fail(_signum: int, _frame: object) -> None:
        raise Blocked("blocked for 20 s (a FIFO or device was opened or read)")
    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(20)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "root")


# Item 16: one bad image does not break gc, rmi, images or fsck ------------------------------
@pytest.mark.parametrize("config", [b"this is not json", DEEP, b'{"rootfs": 5}'],
                         ids=["not-json", "deep", "wrong-type"])
def test_rmi_and_gc_of_other_images_work_beside_a_bad_config(tmp_path: Path,
                                                              config: bytes) -> None:
    root = tmp_path / "root"
    store = Store.open(root)
    # A well-formed manifest whose config blob is ``config`` (not a valid config).
    bad = store_image(store, tar_layer({"bad": b"layer of the bad image"}), config,
                      name="example.com/bad:v1")
    bad_blobs = blobs_of(store, bad)
    good = make_image(store, {"g": b"good"}, name="example.com/good:v1")
    good_blobs = blobs_of(store, good)

    result = ociimg(root, "rmi", "example.com/good:v1")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "example.com/bad:v1" in result.stderr  # the warning names the bad image
    assert not good_blobs & blob_files(store)
    assert bad_blobs <= blob_files(store)

    result = ociimg(root, "images", "--format", "{{.Repository}}:{{.Tag}}")
    assert result.returncode == 0 and "example.com/bad:v1" in result.stdout, result.stderr

    result = ociimg(root, "fsck")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "example.com/bad:v1" in result.stdout and "config" in result.stdout


def test_rmi_images_and_fsck_work_beside_an_unparsable_manifest(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = Store.open(root)
    bad = make_image(store, {"b": b"bad"})
    manifest = store.blob_path(bad.digest).read_bytes()
    wrapped = manifest[:-1] + b',"x":' + DEEP + b"}"
    store.tag("example.com/deep:v1", Descriptor(spec.OCI_MANIFEST, store.put_blob(wrapped),
                                                len(wrapped)))
    kept = blobs_of(store, bad, manifest) - {bad.digest.hex}
    good = make_image(store, {"g": b"good"}, name="example.com/good:v1")
    good_blobs = blobs_of(store, good)

    result = ociimg(root, "rmi", "example.com/good:v1")
    assert result.returncode == 0, result.stderr
    assert "warning: image example.com/deep:v1" in result.stderr
    assert not good_blobs & blob_files(store) and kept <= blob_files(store)
    result = ociimg(root, "images", "--format", "{{.Repository}}:{{.Tag}}")
    assert result.returncode == 0 and "example.com/deep:v1" in result.stdout, result.stderr
    result = ociimg(root, "fsck")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "image example.com/deep:v1" in result.stdout and "nested" in result.stdout


def test_gc_keeps_what_an_unparsable_manifest_mentions(store: Store) -> None:
    """A manifest that no longer parses (here: nested 100k deep around its real fields)
    keeps every blob its bytes name; the untagged garbage beside it still goes."""
    good = make_image(store, {"a": b"1"})
    manifest = store.blob_path(good.digest).read_bytes()
    wrapped = manifest[:-1] + b',"x":' + DEEP + b"}"
    desc = Descriptor(spec.OCI_MANIFEST, store.put_blob(wrapped), len(wrapped))
    store.tag("example.com/deep:v1", desc)
    garbage = make_image(store, {"z": b"garbage"})
    kept = blobs_of(store, desc, manifest) - {good.digest.hex} | {desc.digest.hex}

    result = store.gc()
    assert kept <= blob_files(store)
    assert good.digest.hex not in blob_files(store)  # the unwrapped manifest was garbage
    assert garbage.digest.hex not in blob_files(store)
    [warning] = result.warnings
    assert "example.com/deep:v1" in warning and "nested" in warning


def test_gc_keeps_everything_when_a_manifest_cannot_be_read(store: Store) -> None:
    a = make_image(store, {"a": b"1"}, name="example.com/app:v1")
    path = store.blob_path(a.digest)
    path.unlink()
    os.mkfifo(path)
    garbage = make_image(store, {"z": b"garbage"})
    before = blob_files(store)
    result = store.gc()
    assert result.removed_blobs == 0 and blob_files(store) == before
    assert garbage.digest.hex in before
    assert "example.com/app:v1" in result.warnings[0]


# Item 14: FIFOs, devices, sockets, symlinks and directories in a layout -------------------
def _plant(path: Path, kind: str) -> None:
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    elif os.path.lexists(path):
        path.chmod(0o644)
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "zero-link":
        path.symlink_to("/dev/zero")
    elif kind == "dir":
        path.mkdir()
    elif kind == "chardev":
        need(os.geteuid() == 0, "mknod of a character device needs root")
        os.mknod(path, stat.S_IFCHR | 0o644, os.makedev(1, 5))  # /dev/zero
    elif kind == "socket":  # bound in a short directory (sun_path holds 107 bytes), moved
        import socket
        import tempfile

        with tempfile.TemporaryDirectory() as short, socket.socket(socket.AF_UNIX) as s:
            s.bind(f"{short}/s")
            os.rename(f"{short}/s", path)


KINDS = ["fifo", "zero-link", "dir", "socket", "chardev"]


def _layout_with_image(tmp_path: Path) -> tuple[Path, Descriptor, Descriptor]:
    layout = Store(tmp_path / "layout")
    layout.init()
    desc = make_image(layout, {"f": b"data"}, name="v1")
    config = json.loads(layout.blob_path(desc.digest).read_bytes())["config"]
    return layout.path, desc, Descriptor.from_json(config, "config")


def _one_line_error(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("ociimg: error:"), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", ["index.json", "manifest", "config"])
def test_layout_files_that_are_not_regular_are_refused_without_blocking(
        tmp_path: Path, kind: str, which: str) -> None:
    path, manifest, config = _layout_with_image(tmp_path)
    target = {"index.json": path / "index.json",
              "manifest": path / "blobs" / "sha256" / manifest.digest.hex,
              "config": path / "blobs" / "sha256" / config.digest.hex}[which]
    _plant(target, kind)
    # A FIFO or /dev/zero blocked (or filled memory) before: the timeout fails the test.
    _one_line_error(ociimg(tmp_path / "root", "inspect", f"oci:{path}:v1", timeout=30))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", ["oci-layout", "index.json"])
def test_store_files_that_are_not_regular_are_refused_without_blocking(
        tmp_path: Path, kind: str, which: str) -> None:
    store = Store.open(tmp_path / "root")
    _plant(store.path / which, kind)
    _one_line_error(ociimg(tmp_path / "root", "images", timeout=30))


@pytest.mark.parametrize("kind", KINDS)
def test_store_blob_that_is_not_regular_is_no_blob(store: Store, kind: str) -> None:
    d = Digest.of(b"planted")
    _plant(store.blob_path(d), kind)
    assert not store.has_blob(d)
    with pytest.raises((InvalidDocument, BlobUnknown)):
        store.read_blob(d)
    [problem] = store.fsck()
    assert problem.kind == "stray"
    result = store.gc()  # unreferenced: removed (a directory is only reported)
    assert os.path.lexists(store.blob_path(d)) == (kind == "dir")
    assert bool(result.warnings) == (kind == "dir")


@pytest.mark.parametrize("kind", ["fifo", "zero-link", "dir"])
def test_store_lock_and_ingest_files_that_are_not_regular_are_refused(store: Store,
                                                                      kind: str) -> None:
    _plant(store.path / ".index.lock", kind)
    with pytest.raises(InvalidDocument, match="lock"):
        make_image(store, {"x": b"1"}, name="example.com/x:v1")
    (store.path / ".index.lock").unlink() if kind != "dir" else \
        (store.path / ".index.lock").rmdir()
    d = Digest.of(b"data")
    partial = store.ingest_dir / f"sha256-{d.hex}"
    partial.mkdir()
    (partial / "meta.json").write_text(json.dumps({"digest": str(d), "size": 4}))
    _plant(partial / "data", kind)
    with pytest.raises(InvalidDocument), store.ingest(d, 4):
        pass


def test_gc_does_not_sweep_through_a_symlink_in_ingest(store: Store, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"x")
    (store.ingest_dir / "sha256-planted").symlink_to(outside)
    store.gc()
    assert sorted(p.name for p in outside.iterdir()) == ["keep"]  # no lock file made there
    assert not os.path.lexists(store.ingest_dir / "sha256-planted")
