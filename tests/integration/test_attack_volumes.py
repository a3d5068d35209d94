"""A volume whose ``_data`` was replaced by a symlink to a host dir (by whoever could
write the volumes dir) must never put that host dir into a container: the runtime binds
``_data`` by path, and with nocopy (or a volume in use, or --volumes-from) nothing else
opened it first."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.integration.cli_helpers import assert_one_line_error, ociimg


@pytest.fixture
def base(ociroot: Path, pushed_fixtures: dict[str, str]) -> str:
    ref = pushed_fixtures["busybox"]
    ociimg(ociroot, "pull", ref)
    return ref


@pytest.mark.parametrize("flag", ["-v", "--mount"])
def test_a_data_dir_swapped_for_a_host_link_is_refused(ociroot: Path, base: str,
                                                       tmp_path: Path, flag: str) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "h.txt").write_text("host\n")
    ociimg(ociroot, "volume", "create", "vol")
    data = ociroot / "volumes" / "vol" / "_data"
    shutil.rmtree(data)
    data.symlink_to(host)
    spec = "vol:/d:nocopy" if flag == "-v" else "type=volume,source=vol,target=/d,volume-nocopy"
    for extra in ([flag, spec], ["-v", "vol:/d"]):
        proc = ociimg(ociroot, "run", "--rm", *extra, base, "sh", "-c", "ls /d; touch /d/w",
                      check=False)
        assert_one_line_error(proc, "volume vol", "not a directory")
        assert "h.txt" not in proc.stdout
    assert sorted(p.name for p in host.iterdir()) == ["h.txt"]
    assert ociimg(ociroot, "ps", "-aq").stdout == ""
