"""Text from an image reaches a terminal only escaped (item 20), and lone surrogates in
its documents neither crash ``inspect`` nor a rewrite of index.json (item 19)."""

from __future__ import annotations

import json
from pathlib import Path

from ociimg import spec
from ociimg.cli.output import printable
from ociimg.digest import Digest
from ociimg.spec import Descriptor
from ociimg.store import Store
from tests.clirun import ociimg
from tests.storeimage import make_image, tar_layer

ESC = "\x1b]0;owned\x07\x1b[2J\x1b[31m"
HOSTILE = {
    "Env": [f"PATH=/bin{ESC}", "FAKE=1\nLabel:        trusted=yes"],
    "Labels": {f"k{ESC}": "v\x9b1m\u202etxt.exe", "s": "\ud800x"},
    "Cmd": [f"/bin/sh{ESC}"], "User": f"u{ESC}", "WorkingDir": f"/w{ESC}",
}


def hostile_image(store: Store, name: str) -> Descriptor:
    layer = tar_layer({"f": b"x"})
    config = json.dumps({  # ensure_ascii: "\ud800" stays a JSON escape, as an attacker sends
        "architecture": "amd64", "os": "linux", "author": f"mallory{ESC}",
        "created": f"2024{ESC}", "config": HOSTILE,
        "history": [{"created_by": f"RUN {ESC}"}],
        "rootfs": {"type": "layers", "diff_ids": [str(Digest.of(layer))]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": spec.OCI_MANIFEST,
        "config": {"mediaType": spec.OCI_CONFIG, "digest": str(Digest.of(config)),
                   "size": len(config)},
        "layers": [{"mediaType": spec.OCI_LAYER, "digest": str(Digest.of(layer)),
                    "size": len(layer)}],
        "annotations": {"org.opencontainers.image.title": f"t{ESC}\udfff"}}).encode()
    for blob in (layer, config, manifest):
        store.put_blob(blob)
    desc = Descriptor(spec.OCI_MANIFEST, Digest.of(manifest), len(manifest))
    store.tag(name, desc)
    return desc


def test_printable_escapes_controls_and_keeps_text() -> None:
    assert printable("caf\u00e9 \U0001f600 [x]") == "caf\u00e9 \U0001f600 [x]"
    assert printable("a\x1b[2Jb\nc\td\x7f\x9b\u202e\ud800") == \
        "a\\x1b[2Jb\\nc\\td\\x7f\\x9b\\u202e\\ud800"


def test_inspect_prints_image_text_escaped_and_json_exact(tmp_path: Path) -> None:
    root = tmp_path / "root"
    hostile_image(Store.open(root), "example.com/evil:v1")

    result = ociimg(root, "inspect", "example.com/evil:v1")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
    assert "\u202e" not in out
    assert "\\x1b]0;owned\\x07" in out and "\\u202e" in out
    assert "FAKE=1\\nLabel:" in out  # an Env value cannot forge a line of output
    assert not any(line.startswith("Label:        trusted") for line in out.splitlines())
    assert "mallory\\x1b" in out and "t\\x1b" in out  # author and annotations shown too
    assert "\ufffdx" in out  # a lone surrogate became U+FFFD, as Go's decoder does

    result = ociimg(root, "inspect", "--json", "example.com/evil:v1")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["config"]["config"]["Env"] == HOSTILE["Env"]  # exact, unescaped
    assert doc["config"]["config"]["Labels"][f"k{ESC}"] == "v\x9b1m\u202etxt.exe"
    assert doc["config"]["config"]["Labels"]["s"] == "\ufffdx"


def test_errors_that_echo_input_are_escaped(tmp_path: Path) -> None:
    result = ociimg(tmp_path / "root", "inspect", f"evil{ESC}\nforged line")
    assert result.returncode == 1
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2  # error + hint, nothing forged
    assert result.stderr.startswith("ociimg: error:")


def test_tag_rewrites_an_index_json_holding_lone_surrogates(tmp_path: Path) -> None:
    layout = Store(tmp_path / "layout")
    layout.init()
    a = make_image(layout, {"a": b"1"}, name="v1")
    doc = json.loads(layout.index_path.read_bytes())
    doc["manifests"][0]["annotations"]["note"] = "\ud800 from elsewhere"
    layout.index_path.write_text(json.dumps(doc))  # ensure_ascii: written as \ud800
    layout.tag("v2", a)
    assert sorted(n for n, _ in layout.refs()) == ["v1", "v2"]
    [entry] = [d for n, d in layout.refs() if n == "v1"]
    assert entry.annotations["note"] == "\ufffd from elsewhere"
    layout.index_path.read_bytes().decode("utf-8")  # valid UTF-8 JSON on disk
