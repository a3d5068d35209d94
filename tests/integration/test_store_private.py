"""Private images stay private: the ociimg root is 0700, so another local user can read
no blob (credentials pulled them), and an existing 0755 root is tightened on next use."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ociimg.store import Store
from tests.storeimage import make_image

WORKTREE = Path(__file__).resolve().parents[2]
NOBODY = 65534


@pytest.fixture
def open_dir(root: None) -> Iterator[Path]:
    """A directory any user may traverse (pytest's tmp_path is 0700 itself, which would
    hide the store whatever its own modes are)."""
    path = Path(tempfile.mkdtemp(prefix="ociimg-private-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def read_as_nobody(path: Path) -> str:
    """Try to read ``path`` in a child that setuid()s to nobody: 'ok' or the errno name."""
    pid = os.fork()
    if pid == 0:  # child: no pytest machinery, report through the exit status
        code = 0
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            with open(path, "rb") as f:
                f.read(1)
        except PermissionError:
            code = 13
        except BaseException:
            code = 99
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return {0: "ok", 13: "EACCES"}.get(os.waitstatus_to_exitcode(status), "error")


def test_another_user_cannot_read_a_blob(open_dir: Path) -> None:
    root = open_dir / "root"
    store = Store.open(root)
    desc = make_image(store, {"secret": b"credentials-only content"}, name="example.com/p:1")
    blob = store.blob_path(desc.digest)
    assert blob.stat().st_mode & 0o444  # the layout itself stays as skopeo/umoci expect
    assert read_as_nobody(blob) == "EACCES"
    assert root.stat().st_mode & 0o777 == 0o700


def test_an_existing_open_root_is_tightened_on_next_use(open_dir: Path) -> None:
    root = open_dir / "root"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    store = Store(root / "store")  # as an older ociimg left it: nothing tightened
    store.init()
    desc = make_image(store, {"secret": b"pulled with a login"}, name="example.com/p:1")
    assert read_as_nobody(store.blob_path(desc.digest)) == "ok"

    env = {**os.environ, "PYTHONPATH": str(WORKTREE)}
    subprocess.run([sys.executable, "-m", "ociimg", "--root", str(root), "images"],
                   check=True, capture_output=True, env=env, timeout=60)
    assert root.stat().st_mode & 0o777 == 0o700
    assert read_as_nobody(store.blob_path(desc.digest)) == "EACCES"
