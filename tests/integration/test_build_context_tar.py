"""Context tars as root: device nodes and foreign owners arrive as they are, and no
entry point of the build context ever reads a device's content."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import threading
from pathlib import Path

import pytest

from ociimg.build.context import BuildContext
from ociimg.errors import BuildError
from tests.tarbuild import DEV, F, tar


def _bounded(call, seconds: float = 30.0):  # type: ignore[no-untyped-def]
    """Run ``call`` in a thread; a read of /dev/zero's twin would never return."""
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            result["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "the context read a device node's content"
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]


def test_device_nodes_are_hashed_by_number_never_read(tmp_path: Path, root: None) -> None:
    # A hostile client sends a context with a zero device (endless) and a disk's numbers.
    data = tar(DEV("zero", tarfile.CHRTYPE, 1, 5), DEV("disk", tarfile.BLKTYPE, 8, 0),
               F("Containerfile", b"FROM scratch\n", uid=4242, gid=4242))
    ctx = BuildContext.from_tar(io.BytesIO(data), tmp_path / "work")
    st = os.lstat(ctx.root / "zero")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1
    assert os.stat(ctx.root / "Containerfile").st_uid == 4242
    first = _bounded(lambda: ctx.digest(["."]))
    assert _bounded(lambda: ctx.digest(["zero", "disk"])) != first
    for name in ("zero", "disk"):
        with pytest.raises(BuildError, match="not a regular file"):
            _bounded(lambda name=name: ctx.read_file(name))
