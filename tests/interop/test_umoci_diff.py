"""Differential test: our flattened unpack vs ``umoci unpack`` on the multilayer fixture.

Same tree, modes, owners, link targets, hardlinks, xattrs, contents and file mtimes,
compared by tree-walk manifest. Debian's umoci (0.4.7) refuses Docker-typed layers,
so the fixture's manifest is re-labelled OCI in a copy of the layout (same layer
blobs, only the manifest and index change).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from ociimg import spec
from ociimg.digest import Digest
from ociimg.layers.compression import open_decompressed
from ociimg.layers.unpack import unpack_rootfs
from ociimg.spec import parse_config, parse_manifest
from ociimg.store import Store
from tests.conftest import need
from tests.treewalk import diff_manifests, tree_manifest

_OCI_TYPES = {spec.DOCKER_LAYER_GZIP: spec.OCI_LAYER_GZIP}


def _oci_only_layout(src: Path, dest: Path, tag: str) -> None:
    """A layout holding ``tag`` with Docker layer media types relabelled as OCI."""
    shutil.copytree(src, dest, copy_function=os.link)
    index = json.loads((src / "index.json").read_bytes())
    desc = next(m for m in index["manifests"]
                if m.get("annotations", {}).get(spec.ANNOTATION_REF_NAME) == tag)
    manifest = json.loads(Store(src).read_blob(Digest.parse(desc["digest"])))
    for layer in manifest["layers"]:
        layer["mediaType"] = _OCI_TYPES.get(layer["mediaType"], layer["mediaType"])
    raw = json.dumps(manifest).encode()
    digest = Store(dest).put_blob(raw)
    index["manifests"] = [{**desc, "digest": str(digest), "size": len(raw)}]
    (dest / "index.json").unlink()  # a hardlink to the source's: never write through it
    (dest / "index.json").write_text(json.dumps(index))


@pytest.mark.parametrize("tag", ["multilayer", "busybox"])
def test_unpack_matches_umoci(root: None, fixture_layout: Path, tmp_path: Path, tag: str) -> None:
    need(shutil.which("umoci") is not None, "umoci is not installed")
    layout = tmp_path / "layout"
    _oci_only_layout(fixture_layout, layout, tag)
    store = Store(layout)
    manifest, config = _image(store, tag)

    ours = tmp_path / "ours"
    warnings = unpack_rootfs(store, manifest, config, ours, rootless=False)
    assert warnings == []
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(tmp_path / "bundle")],
                   check=True, capture_output=True)
    theirs = tmp_path / "bundle" / "rootfs"

    a, b = tree_manifest(ours), tree_manifest(theirs)
    a.pop(".")  # the bundle's rootfs dir itself is umoci's, not the image's
    b.pop(".")
    # Parent dirs no layer has an entry for are created "now" by both tools.
    named = _entry_names(store, manifest)
    for path, entry in [*a.items(), *b.items()]:
        if entry["type"] == "dir" and path not in named:
            entry.pop("mtime", None)
    assert diff_manifests(a, b) == []
    if tag == "multilayer":
        assert a["data/setuid-bin"]["mode"] == oct(0o4755)
        assert a["data/xattr.txt"]["xattrs"] == {"user.test": b"hello-xattr".hex()}
        assert a["data/owned-by-app.txt"]["uid"] == 1000


def _entry_names(store: Store, manifest) -> set[str]:  # type: ignore[no-untyped-def]
    names = set()
    for layer in manifest.layers:
        with store.open_blob(layer.digest) as f, tarfile.open(
                fileobj=open_decompressed(f, layer.media_type), mode="r|") as tf:
            names.update(m.name.strip("/").removeprefix("./") for m in tf)
    return names


def _image(store: Store, tag: str):  # type: ignore[no-untyped-def]
    index = json.loads(store.index_path.read_bytes())
    desc = next(m for m in index["manifests"]
                if m.get("annotations", {}).get(spec.ANNOTATION_REF_NAME) == tag)
    manifest = parse_manifest(store.read_blob(Digest.parse(desc["digest"])))
    return manifest, parse_config(store.read_blob(manifest.config.digest))
