"""conformance/report.py: the summary of critest runs (ginkgo v2 JSON reports), run as the
script critest.sh runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPORT = Path(__file__).resolve().parents[2] / "conformance" / "report.py"


def spec(leaf: str, state: str, message: str = "") -> dict:
    out = {"ContainerHierarchyTexts": ["[k8s.io] Suite", "when x"], "LeafNodeText": leaf,
           "LeafNodeType": "It", "State": state}
    if message:
        out["Failure"] = {"Message": message,
                          "Location": {"FileName": "/src/pkg/validate/container.go",
                                       "LineNumber": 415}}
    return out


def write(path: Path, specs: list[dict]) -> str:
    # BeforeSuite nodes are in the list too and are not specs.
    nodes = [{"LeafNodeType": "SynchronizedBeforeSuite", "State": "passed"}, *specs]
    path.write_text(json.dumps([{"SpecReports": nodes}]))
    return str(path)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPORT), *args], capture_output=True, text=True,
                          check=False)


def test_runc_only_specs_with_reason_and_ratio(tmp_path: Path) -> None:
    runc = write(tmp_path / "runc.json", [spec("a", "passed"), spec("b", "passed"),
                                          spec("c", "failed", "both fail"), spec("d", "skipped")])
    ours = write(tmp_path / "ociimg.json", [
        spec("a", "passed"),
        spec("b", "failed", "OCI runtime create failed:\n  pivot_root: Invalid argument"),
        spec("c", "failed", "both fail"), spec("d", "skipped")])
    result = run(f"runc={runc}:100", f"ociimg={ours}:119")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "== runc: 1 failed, 2 passed, 1 skipped; wall time 100 s" in out
    assert "== ociimg: 2 failed, 1 passed, 1 skipped; wall time 119 s" in out
    assert "(1); time 119 s vs 100 s = 1.19x" in out
    only = out.split("but not with ociimg", 1)[1]
    assert "[k8s.io] Suite when x b  [failed]" in only
    assert "OCI runtime create failed: pivot_root: Invalid argument [container.go:415]" in only
    assert "when x c" not in only  # fails with runc too
    assert "SynchronizedBeforeSuite" not in out


def test_strict_fails_only_when_a_spec_passes_with_runc_alone(tmp_path: Path) -> None:
    runc = write(tmp_path / "runc.json", [spec("a", "passed"), spec("b", "failed", "x")])
    same = write(tmp_path / "same.json", [spec("a", "passed"), spec("b", "failed", "x")])
    worse = write(tmp_path / "worse.json", [spec("b", "failed", "x")])  # "a" never ran
    assert run("--strict", f"runc={runc}", f"ociimg={same}").returncode == 0
    result = run("--strict", f"runc={runc}", f"ociimg={worse}")
    assert result.returncode == 1
    assert "[k8s.io] Suite when x a  [not run]" in result.stdout
    assert run(f"runc={runc}", f"ociimg={worse}").returncode == 0
