"""Running this checkout's `ociimg` command line against a store root, unchecked: the
caller looks at the exit code and stderr (hostile-input tests expect a one-line error)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

WORKTREE = Path(__file__).resolve().parents[1]


def ociimg(root: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python3 -m ociimg --root ROOT ARGS`; the timeout fails a call that blocks."""
    env = {**os.environ, "PYTHONPATH": str(WORKTREE)}
    return subprocess.run([sys.executable, "-m", "ociimg", "--root", str(root), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)
