"""Driving the `ociimg` command line as a user does, from integration tests."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.integration.runtime_helpers import REPO


def ociimg(root: os.PathLike[str] | str, *args: str, check: bool = True, timeout: float = 120,
           input: str | None = None, cwd: os.PathLike[str] | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python3 -m ociimg ARGS` with OCIIMG_ROOT=root on this checkout's code (``env``
    added to the environment, run in ``cwd``); with ``check``, it must succeed without a
    traceback."""
    env = {**os.environ, **(env or {}), "OCIIMG_ROOT": str(root), "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, "-m", "ociimg", *args], env=env, text=True,
                          capture_output=True, timeout=timeout, input=input, cwd=cwd)
    if check and (proc.returncode != 0 or "Traceback" in proc.stderr):
        raise AssertionError(f"ociimg {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


def ociimg_background(root: os.PathLike[str] | str, *args: str) -> subprocess.Popen[bytes]:
    """`python3 -m ociimg ARGS` like ``ociimg`` but running on: stdout and stderr are pipes
    (read them, e.g. with tests.waiting.wait_for_line); the caller waits for it."""
    env = {**os.environ, "OCIIMG_ROOT": str(root), "PYTHONPATH": REPO}
    return subprocess.Popen([sys.executable, "-m", "ociimg", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("ociimg: error: "), proc.stderr
    assert len([line for line in lines if line.startswith("ociimg: error")]) == 1
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
