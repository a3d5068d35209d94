"""Our store is a plain OCI image layout: skopeo and umoci read what we write, and we read
what skopeo writes (including into our own store)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ociimg import spec
from ociimg.digest import Digest
from ociimg.spec import Platform
from ociimg.store import Store
from tests.conftest import need
from tests.storeimage import make_image, make_index

NAME = "docker.io/library/tiny:latest"
PINNED = "127.0.0.1:5000/ns/app@sha256:" + "a" * 64


def run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{argv}: {proc.stderr}"
    return proc.stdout


@pytest.fixture
def skopeo() -> str:
    need(shutil.which("skopeo") is not None, "skopeo missing: apt-get install skopeo")
    return "skopeo"


@pytest.fixture
def umoci() -> str:
    need(shutil.which("umoci") is not None, "umoci missing: apt-get install umoci")
    return "umoci"


@pytest.fixture
def our_store(tmp_path: Path) -> Store:
    store = Store.open(tmp_path / "ours")
    make_image(store, {"bin/hello": b"hello from ociimg\n"}, name=NAME)
    make_image(store, {"etc/app": b"pinned"}, name=PINNED)
    return store


def test_skopeo_copies_from_our_store(our_store: Store, skopeo: str, tmp_path: Path) -> None:
    other = tmp_path / "other"
    run(skopeo, "copy", "--quiet", "--preserve-digests", f"oci:{our_store.path}:{NAME}",
        f"oci:{other}:x")
    copied = Store(other)
    assert copied.resolve("x").digest == our_store.resolve(NAME).digest
    assert copied.fsck() == []
    # By default skopeo gzips our uncompressed layer on the way: a new manifest, same config.
    fresh = Store(tmp_path / "fresh")  # (into `other` skopeo would reuse the plain layer)
    run(skopeo, "copy", "--quiet", f"oci:{our_store.path}:{NAME}", f"oci:{fresh.path}:gz")
    _, manifest, config = fresh.image_for("gz")
    assert manifest.layers[0].media_type == spec.OCI_LAYER_GZIP
    assert config.digest == our_store.image_for(NAME)[2].digest
    inspected = json.loads(run(skopeo, "inspect", f"oci:{our_store.path}:{PINNED}"))
    assert inspected["Digest"] == str(our_store.resolve(PINNED).digest)
    assert inspected["Architecture"] == "amd64"


def test_umoci_lists_and_unpacks_our_store(our_store: Store, umoci: str,
                                           tmp_path: Path) -> None:
    listed = run(umoci, "ls", "--layout", str(our_store.path)).split()
    assert sorted(listed) == sorted([NAME, PINNED])
    run(umoci, "stat", "--image", f"{our_store.path}:{NAME}")
    bundle = tmp_path / "bundle"
    run(umoci, "unpack", "--rootless", "--image", f"{our_store.path}:{NAME}", str(bundle))
    assert (bundle / "rootfs" / "bin" / "hello").read_bytes() == b"hello from ociimg\n"


def test_we_read_a_layout_written_by_skopeo(fixture_layout: Path, skopeo: str,
                                            tmp_path: Path) -> None:
    dest = tmp_path / "by-skopeo"
    run(skopeo, "copy", "--quiet", "--all", f"oci:{fixture_layout}:multiarch",
        f"oci:{dest}:multi")
    run(skopeo, "copy", "--quiet", f"oci:{fixture_layout}:multilayer", f"oci:{dest}:layers")
    store = Store(dest)
    assert {n for n, _ in store.refs()} == {"multi", "layers"}
    assert store.resolve("multi").media_type in spec.INDEX_TYPES
    desc, manifest, config = store.image_for("multi", Platform("linux", "arm64"))
    assert config.platform.architecture == "arm64"
    _, manifest, config = store.image_for("layers")
    assert len(manifest.layers) == len(config.diff_ids) > 1
    assert store.fsck() == []
    assert store.gc().removed_blobs == 0


def test_skopeo_writes_into_our_store_and_we_keep_working(our_store: Store, skopeo: str,
                                                           fixture_layout: Path) -> None:
    name = "docker.io/library/busybox:latest"
    run(skopeo, "copy", "--quiet", f"oci:{fixture_layout}:busybox", f"oci:{our_store.path}:{name}")
    assert {n for n, _ in our_store.refs()} == {NAME, PINNED, name}
    _, _, config = our_store.image_for("busybox")
    assert config.diff_ids
    # Our writes after skopeo's, and gc, keep skopeo's image intact.
    arm = make_image(our_store, {"a": b"arm"}, arch="arm64")
    make_index(our_store, [arm], name="example.com/idx:v1")
    assert our_store.gc().removed_blobs == 0
    assert our_store.fsck() == []
    run(skopeo, "inspect", f"oci:{our_store.path}:{name}")
    digest = our_store.resolve(name).digest
    assert our_store.read_blob(digest) and isinstance(digest, Digest)
