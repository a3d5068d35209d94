"""``ociimg cp`` and ``ociimg export`` through the CLI on real containers: stopped (the
snapshot's merged view, mounted for the copy) and running (its rootfs), tar streams on
stdin/stdout, one-line errors, and nothing left mounted."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.integration.cli_helpers import assert_one_line_error, ociimg
from tests.integration.runtime_helpers import REPO


@pytest.fixture
def busybox(pushed_fixtures: dict[str, str]) -> str:
    return pushed_fixtures["busybox"]


def ociimg_bytes(root: Path, *args: str, input: bytes | None = None) -> bytes:
    env = {**os.environ, "OCIIMG_ROOT": str(root), "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, "-m", "ociimg", *args], env=env, input=input,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_cp_and_export_on_a_stopped_container(ociroot: Path, busybox: str, tmp_path: Path
                                              ) -> None:
    ociimg(ociroot, "pull", busybox)
    ociimg(ociroot, "run", "--name", "s", busybox, "sh", "-c",
           "mkdir -p /data/sub && echo a > /data/a && echo b > /data/sub/b && rm /etc/passwd")
    out = tmp_path / "out"
    out.mkdir()
    ociimg(ociroot, "cp", "s:/data", str(out))
    assert (out / "data" / "sub" / "b").read_text() == "b\n"
    ociimg(ociroot, "cp", "s:/data/a", str(out / "renamed"))
    assert (out / "renamed").read_text() == "a\n"
    (tmp_path / "in.txt").write_text("from host\n")
    ociimg(ociroot, "cp", str(tmp_path / "in.txt"), "s:/data/")
    assert "A /data/in.txt" in ociimg(ociroot, "diff", "s").stdout
    # Tar streams: out to stdout, in from stdin.
    data = ociimg_bytes(ociroot, "cp", "s:/data/sub", "-")
    assert tarfile.open(fileobj=io.BytesIO(data)).getnames() == ["sub", "sub/b"]
    ociimg_bytes(ociroot, "cp", "-", "s:/etc", input=data)
    assert "A /etc/sub/b" in ociimg(ociroot, "diff", "s").stdout

    ociimg(ociroot, "export", "s", "-o", str(tmp_path / "s.tar"))
    names = set(tarfile.open(tmp_path / "s.tar").getnames())
    assert {"data/in.txt", "etc/sub/b", "bin/busybox"} <= names
    assert "etc/passwd" not in names  # deleted in the container: not in its export
    assert ociimg_bytes(ociroot, "export", "s") == (tmp_path / "s.tar").read_bytes()

    for args, needle in ((["cp", "s:/nope", str(out)], "no such file"),
                         (["cp", "s:/data/a/", str(out)], "not a directory"),
                         (["cp", str(tmp_path / "in.txt"), "s:/missing/"], "no such directory"),
                         (["cp", "a", "b"], "exactly one side"),
                         (["cp", "ghost:/x", str(out)], "ghost"),
                         (["export", "s", "-o", str(tmp_path / "no" / "dir" / "x.tar")], "")):
        assert_one_line_error(ociimg(ociroot, *args, check=False), needle)
    assert not list((tmp_path / "out").glob(".*tmp*"))


def test_cp_and_export_on_a_running_container(ociroot: Path, busybox: str, tmp_path: Path
                                              ) -> None:
    ociimg(ociroot, "pull", busybox)
    ociimg(ociroot, "run", "-d", "--name", "r", busybox, "sleep", "600")
    try:
        (tmp_path / "f").write_text("into a running one\n")
        ociimg(ociroot, "cp", str(tmp_path / "f"), "r:/tmp/f")
        assert ociimg(ociroot, "exec", "r", "cat", "/tmp/f").stdout == "into a running one\n"
        ociimg(ociroot, "exec", "r", "sh", "-c", "echo made inside > /made")
        ociimg(ociroot, "cp", "r:/made", str(tmp_path / "made"))
        assert (tmp_path / "made").read_text() == "made inside\n"
        names = tarfile.open(fileobj=io.BytesIO(ociimg_bytes(ociroot, "export", "r"))
                             ).getnames()
        assert "made" in names and "tmp/f" in names
        commit = json.loads(ociimg(ociroot, "commit", "--json", "r", "running:1").stdout)
        assert commit["layer"]
        assert ociimg(ociroot, "run", "--rm", "running:1", "cat", "/made").stdout == \
            "made inside\n"
    finally:
        ociimg(ociroot, "rm", "-f", "r", check=False)
