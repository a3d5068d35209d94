"""oci-archive read in place, pushed to a real docker-registry (issue 8, item 12), and
an incomplete image never pushed (item 15)."""

from __future__ import annotations

import gzip
import os
import shutil

import pytest

from ociimg import spec
from ociimg.errors import BlobUnknown
from ociimg.reference import LayoutReference, parse_reference
from ociimg.registry import CopyOptions, PullOptions, copy, pull
from ociimg.store import Store

ALL = CopyOptions(all_platforms=True)


@pytest.mark.parametrize("compress", [False, True])
def test_archive_pushed_to_registry_keeps_its_digest(registry, fixture_layout, tmp_path,
                                                     compress):
    want = dict(Store(fixture_layout).refs())["multiarch"].digest
    tar = tmp_path / "img.tar"
    copy(LayoutReference("oci", fixture_layout, "multiarch"),
         LayoutReference("oci-archive", tar, "m"), ALL)
    if compress:
        with open(tar, "rb") as f, gzip.open(tmp_path / "img.tar.gz", "wb") as g:
            shutil.copyfileobj(f, g)
        tar = tmp_path / "img.tar.gz"
    dest = parse_reference(f"{registry.host}/archive/gz{int(compress)}:v1")
    assert copy(LayoutReference("oci-archive", tar, "m"), dest, ALL) == want
    result = pull(dest, Store(tmp_path / "store"), PullOptions(all_platforms=True))
    assert result.descriptor.digest == want
    assert Store(tmp_path / "store").fsck() == []


def test_incomplete_layout_is_not_pushed(registry, fixture_layout, tmp_path):
    layout = tmp_path / "layout"
    shutil.copytree(fixture_layout, layout)
    store = Store(layout)
    manifest = store.read_manifest(store.resolve("multilayer"))
    assert isinstance(manifest, spec.Manifest)
    os.unlink(store.blob_path(manifest.layers[0].digest))
    dest = parse_reference(f"{registry.host}/archive/incomplete:v1")
    with pytest.raises(BlobUnknown, match=str(manifest.layers[0].digest)):
        copy(LayoutReference("oci", layout, "multilayer"), dest, ALL)
    assert registry_has_no_tag(registry.host, "archive/incomplete")


def registry_has_no_tag(host: str, repo: str) -> bool:
    import urllib.error
    import urllib.request
    try:
        urllib.request.urlopen(f"http://{host}/v2/{repo}/manifests/v1", timeout=10)
    except urllib.error.HTTPError as exc:
        return exc.code == 404
    return False
