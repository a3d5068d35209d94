"""The documented Python API (``import ociimg``) against a real loopback registry."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import ociimg
from ociimg.errors import InvalidReference, OciimgError

pytestmark = pytest.mark.usefixtures("root")


def test_import_ociimg_loads_no_stage_until_a_call_needs_it() -> None:
    # The runtime's start path imports the package: the API must cost it nothing.
    code = ("import sys, ociimg; print(sorted(m for m in sys.modules if m.startswith('ociimg')));"
            "ociimg.inspect; print('ociimg.library' in sys.modules)")
    tree = str(Path(ociimg.__file__).parent.parent)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": tree}).stdout.split("\n")
    assert out[0] == "['ociimg']"
    assert out[1] == "True"


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ociimg.nope  # noqa: B018


def test_pull_inspect_unpack_push_from_a_thread(tmp_path: Path,
                                                pushed_fixtures: dict[str, str]) -> None:
    ref = pushed_fixtures["busybox"]
    root = tmp_path / "root"
    results: dict[str, object] = {}

    def work() -> None:
        try:
            results["pull"] = ociimg.pull(ref, root=root, insecure=True)
            results["inspect"] = ociimg.inspect(ref, root=root)
            results["unpack"] = ociimg.unpack(ref, tmp_path / "bundle", root=root,
                                              args=["echo", "hi"])
            dest = ref.replace("fixtures/busybox", "library-api/copy")
            results["push"] = ociimg.push(ref, dest, root=root, insecure=True)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            results["error"] = exc

    before = {sig: __import__("signal").getsignal(sig) for sig in (2, 15)}
    thread = threading.Thread(target=work)
    thread.start()
    thread.join(120)
    assert not thread.is_alive()
    assert "error" not in results, results.get("error")
    assert {sig: __import__("signal").getsignal(sig) for sig in (2, 15)} == before

    pulled = results["pull"]
    doc = results["inspect"]
    assert isinstance(doc, dict)
    assert doc["digest"] == str(pulled.images[0][0].digest)  # type: ignore[attr-defined]
    assert doc["layers"] and all(layer["digest"].startswith("sha256:") for layer in doc["layers"])
    bundle = tmp_path / "bundle"
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["args"] == ["echo", "hi"]
    assert (bundle / "rootfs" / "bin" / "busybox").is_file()
    assert results["push"] == doc["digest"]


def test_bad_input_raises_the_project_error_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(InvalidReference, match="not a layout"):
        ociimg.pull("oci:/nonexistent:x", root=tmp_path / "root")
    with pytest.raises(OciimgError) as info:
        ociimg.inspect("never-pulled:1", root=tmp_path / "root")
    assert info.value.hint


def test_the_readme_example_pulls_runs_and_commits(tmp_path: Path, ociroot: Path,
                                                    pushed_fixtures: dict[str, str]) -> None:
    tree = Path(ociimg.__file__).parent.parent
    done = subprocess.run(
        [sys.executable, str(tree / "examples" / "pull_run_commit.py"), pushed_fixtures["busybox"]],
        capture_output=True, text=True, timeout=180,
        env={"PYTHONPATH": str(tree), "OCIIMG_ROOT": str(ociroot), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1] == "changes: [('A', '/greeting')]"
    assert lines[-1] == "the new image says: hello from a commit"
    assert not list((ociroot / "containers").glob("[0-9a-f]*"))  # both removed
