"""The tar header fuzz test as root (issue 8 item 19): ownership, device nodes and
trusted.* xattrs are then applied for real, and must fail as cleanly."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from ociimg.errors import InvalidDocument
from ociimg.layers.apply import ApplyOptions, apply_layer
from tests.tarbuild import DEV, tar
from tests.tarfuzz import run_fuzz


def test_mutated_headers_fail_cleanly_or_apply_as_root(root: None, tmp_path: Path) -> None:
    run_fuzz(tmp_path, rootless=False)


@pytest.mark.parametrize(("major", "minor"), [(1 << 12, 0), (0, 1 << 20), (1 << 40, 1)])
def test_device_numbers_out_of_range_are_one_line_errors(root: None, tmp_path: Path,
                                                         major: int, minor: int) -> None:
    data = tar(DEV("dev/x", tarfile.CHRTYPE, major, minor), fmt=tarfile.GNU_FORMAT)
    with pytest.raises(InvalidDocument, match="device number"):
        apply_layer(tmp_path, io.BytesIO(data), ApplyOptions(rootless=False))
