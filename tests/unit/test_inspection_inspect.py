"""inspect's text and --format output, and attached artifacts: Docker attestation
manifests inside an index and OCI referrers in a layout, listed and extracted (a
hostile title never picks where a file is written)."""

from __future__ import annotations

import json
from pathlib import Path

from ociimg import spec
from ociimg.digest import Digest
from ociimg.spec import Descriptor, Platform
from ociimg.store import Store
from tests.clirun import ociimg
from tests.layerimage import compress
from tests.storeimage import make_index, tar_layer
from tests.treewalk import tree_manifest

CONFIG = {"Cmd": ["/bin/sh", "-c", "echo hi"], "Entrypoint": ["tini", "--"],
          "ExposedPorts": {"80/tcp": {}, "53/udp": {}}, "Volumes": {"/data": {}},
          "StopSignal": "SIGQUIT", "Labels": {"evil": "\x1b[2Jcleared\nforged: line"}}


def put_json(store: Store, doc: dict) -> Descriptor:
    raw = spec.canonical_json(doc)
    return Descriptor(doc.get("mediaType", spec.OCI_CONFIG), store.put_blob(raw), len(raw))


def image(store: Store) -> Descriptor:
    layer = compress(tar_layer({"a": b"x" * 3000}), "gzip")
    config = put_json(store, {
        "architecture": "amd64", "os": "linux", "config": CONFIG,
        "rootfs": {"type": "layers", "diff_ids": [str(Digest.of(tar_layer({"a": b"x" * 3000})))]},
        "history": [{"created": "2024-05-01T00:00:00Z", "created_by": "COPY a /"}]})
    manifest = put_json(store, {
        "schemaVersion": 2, "mediaType": spec.OCI_MANIFEST,
        "config": {"mediaType": spec.OCI_CONFIG, "digest": str(config.digest),
                   "size": config.size},
        "layers": [{"mediaType": spec.OCI_LAYER_GZIP, "digest": str(store.put_blob(layer)),
                    "size": len(layer)}]})
    return Descriptor(spec.OCI_MANIFEST, manifest.digest, manifest.size,
                      platform=Platform("linux", "amd64"))


def attestation(store: Store, subject: Descriptor, titles: list[str]) -> Descriptor:
    empty = put_json(store, {})
    layers = []
    for title in titles:
        blob = json.dumps({"_type": "https://in-toto.io/Statement/v0.1", "t": title}).encode()
        layers.append({"mediaType": "application/vnd.in-toto+json",
                       "digest": str(store.put_blob(blob)), "size": len(blob),
                       "annotations": {"in-toto.io/predicate-type": "https://spdx.dev/Document",
                                       "org.opencontainers.image.title": title}})
    doc = put_json(store, {"schemaVersion": 2, "mediaType": spec.OCI_MANIFEST,
                           "config": {"mediaType": spec.OCI_EMPTY, "digest": str(empty.digest),
                                      "size": empty.size}, "layers": layers})
    return Descriptor(spec.OCI_MANIFEST, doc.digest, doc.size,
                      {"vnd.docker.reference.type": "attestation-manifest",
                       "vnd.docker.reference.digest": str(subject.digest)},
                      platform=Platform("unknown", "unknown"))


def make_root(tmp_path: Path) -> tuple[Path, Descriptor, Descriptor]:
    root = tmp_path / "root"
    store = Store.open(root)
    store.init()
    img = image(store)
    att = attestation(store, img, ["sbom.spdx.json", "../../escape", "/etc/passwd"])
    make_index(store, [img, att], name="example.com/app:1")
    return root, img, att


def test_inspect_text_has_no_reprs_and_escapes(tmp_path: Path) -> None:
    root, _img, att = make_root(tmp_path)
    proc = ociimg(root, "inspect", "example.com/app:1")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert 'Cmd:          ["/bin/sh", "-c", "echo hi"]' in out and "['" not in out
    assert "ExposedPorts: 53/udp, 80/tcp" in out and "Volumes:      /data" in out
    assert "StopSignal:   SIGQUIT" in out and "History:      1 steps" in out
    assert "\x1b" not in out and "\nforged" not in out and "\\x1b[2J" in out
    assert " B compressed, 10.2 kB uncompressed)" in out  # the tar: 10240 B
    assert f"Attachment:   {att.digest}" in out


def test_inspect_format_fields(tmp_path: Path) -> None:
    root, img, _att = make_root(tmp_path)
    got = ociimg(root, "inspect", "--format", "{{.Digest}} {{.Config.StopSignal}} "
                 "{{json .Config.Entrypoint}} {{.Config.User}}", "example.com/app:1")
    assert got.stdout == f'{img.digest} SIGQUIT ["tini","--"] <no value>\n', got.stderr
    label = ociimg(root, "inspect", "-f", '{{index .Labels "evil"}}', "example.com/app:1")
    assert label.stdout.count("\n") == 1 and "\x1b" not in label.stdout
    bad = ociimg(root, "inspect", "-f", "{{.Nope}}", "example.com/app:1")
    assert bad.returncode == 1 and ".Digest" in bad.stderr


def test_referrers_lists_and_extracts_attestations(tmp_path: Path) -> None:
    root, img, att = make_root(tmp_path)
    doc = json.loads(ociimg(root, "referrers", "--json", "example.com/app:1").stdout)
    assert [(d["digest"], d["source"], d["subject"]) for d in doc] == [
        (str(att.digest), "index", str(img.digest))]
    out = tmp_path / "out"
    before = tree_manifest(tmp_path / "root")
    proc = ociimg(root, "referrers", "example.com/app:1", "--extract", str(att.digest)[:19],
                  "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.iterdir())
    assert "sbom.spdx.json" in names and "manifest.json" in names and len(names) == 4
    assert all(n.startswith("sha256-") for n in names if n not in ("sbom.spdx.json",
                                                                   "manifest.json"))
    assert not (tmp_path / "escape").exists() and tree_manifest(tmp_path / "root") == before
    assert json.loads((out / "sbom.spdx.json").read_text())["t"] == "sbom.spdx.json"
    again = ociimg(root, "referrers", "example.com/app:1", "--extract", str(att.digest),
                   "-o", str(out))
    assert again.returncode == 1 and "already exists" in again.stderr


def test_referrers_in_a_layout_by_subject(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    store = Store(layout)
    store.init()
    img = image(store)
    store.tag("app", img)
    empty = put_json(store, {})
    sbom = put_json(store, {"schemaVersion": 2, "mediaType": spec.OCI_MANIFEST,
                            "artifactType": "application/spdx+json",
                            "config": {"mediaType": spec.OCI_EMPTY,
                                       "digest": str(empty.digest), "size": empty.size},
                            "layers": [], "subject": {"mediaType": spec.OCI_MANIFEST,
                                                      "digest": str(img.digest),
                                                      "size": img.size}})
    store.tag("sbom", Descriptor(spec.OCI_MANIFEST, sbom.digest, sbom.size))
    doc = json.loads(ociimg(tmp_path, "referrers", "--json", f"oci:{layout}:app").stdout)
    assert [(d["digest"], d["artifactType"]) for d in doc] == [
        (str(sbom.digest), "application/spdx+json")]
