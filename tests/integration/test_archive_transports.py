"""The transport grammar against a real registry and the runtime: docker:// read in place
(no store, no layer download unless asked), push from an archive, pull and run from one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ociimg.digest import Digest
from ociimg.transports import parse_transport
from tests.integration.cli_helpers import ociimg

NAME = "docker.io/library/busybox:latest"


@pytest.fixture
def saved(fixture_layout: Path, tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "root"
    ociimg(root, "copy", f"oci:{fixture_layout}:busybox", f"oci:{root}/store:{NAME}")
    archive = tmp_path / "bb.tar"
    ociimg(root, "save", "-o", str(archive), NAME)
    return root, archive


def test_push_from_an_archive_then_read_the_registry_in_place(registry, saved, tmp_path):
    root, archive = saved
    dest = f"{registry.host}/transports/busybox:v1"
    out = ociimg(root, "push", f"docker-archive:{archive}", dest, "--json").stdout
    pushed = json.loads(out)["digest"]
    with parse_transport(f"docker://{dest}") as source:
        assert str(source.top.digest) == pushed
        assert Digest.of(source.raw_manifest()) == source.top.digest
        _desc, manifest = source.manifest()
        config = source.config()
        with source.open_blob(manifest.layers[0].digest, manifest.layers[0].size) as f:
            assert Digest.of(f.read()) == config.diff_ids[0]  # uncompressed in the archive
    # inspect reads it without a store: the root is never created
    fresh = tmp_path / "fresh"
    doc = json.loads(ociimg(fresh, "inspect", "--json", f"docker://{dest}").stdout)
    assert doc["digest"] == pushed
    assert not (fresh / "store").exists() or not any((fresh / "store" / "blobs").rglob("*"))


def test_pull_and_run_from_archives(saved, tmp_path):
    root, archive = saved
    other = tmp_path / "other"
    assert ociimg(other, "pull", f"docker-archive:{archive}").stdout == f"{NAME}\n"
    proc = ociimg(tmp_path / "runner", "run", "--rm", f"docker-archive:{archive}",
                  "busybox", "echo", "from-an-archive", timeout=180)
    assert proc.stdout == "from-an-archive\n"


def test_copy_into_docker_archives_from_a_layout_and_a_registry(registry, saved, fixture_layout,
                                                                tmp_path):
    root, archive = saved
    named = tmp_path / "named.tar"
    ociimg(root, "copy", f"oci:{fixture_layout}:multilayer", f"docker-archive:{named}:tools/m:2")
    dest = f"{registry.host}/transports/frombb:v1"
    ociimg(root, "push", f"docker-archive:{archive}", dest)
    pulled = tmp_path / "from-registry.tar"
    ociimg(root, "copy", f"docker://{dest}", f"docker-archive:{pulled}")
    other = tmp_path / "other"
    assert ociimg(other, "load", "-i", str(named)).stdout == "Loaded image: docker.io/tools/m:2\n"
    assert ociimg(other, "load", "-i", str(pulled)).stdout == f"Loaded image: {dest}\n"
    with parse_transport(f"docker-archive:{pulled}") as a, \
            parse_transport(f"docker-archive:{archive}") as b:
        assert a.config().diff_ids == b.config().diff_ids
