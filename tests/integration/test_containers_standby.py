"""The spare monitor interpreter of a server (ociimg.containers.standby): it becomes a
container's monitor exactly as a spawned one, a new spare replaces it, a dead spare
falls back to spawning, and a spare whose caller closes its end exits."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ociimg.errors import OciimgError

pytestmark = pytest.mark.usefixtures("root")


@pytest.fixture
def manager(ociroot: Path, tmp_path: Path) -> Iterator[Any]:
    from ociimg.containers import ContainerManager
    m = ContainerManager(ociroot, runtime_root=tmp_path / "rt")
    yield m
    for c in m.list():
        m.remove(c, force=True)


@pytest.fixture
def standby(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from ociimg.containers import monitorproc
    from ociimg.containers.standby import Standby
    s = Standby()
    monkeypatch.setattr(monitorproc, "_STANDBY", s)
    yield s
    spare = s._spare
    s.close()
    assert spare is None or spare.proc.returncode == 0  # it read EOF and left


def _options(*args: str, **kw: Any) -> Any:
    from ociimg.bundle import BundleOptions
    from ociimg.containers import CreateOptions
    return CreateOptions(bundle=BundleOptions(args=list(args)), **kw)


def _image(ociroot: Path, fixture_layout: Path) -> Any:
    from ociimg.commands.resolve import resolve_image
    return resolve_image(f"oci:{fixture_layout}:busybox", ociroot)


def test_the_spare_becomes_the_monitor_and_is_replaced(manager: Any, standby: Any,
                                                         ociroot: Path,
                                                         fixture_layout: Path) -> None:
    spare = standby._spare
    assert spare is not None
    c = manager.create(_image(ociroot, fixture_layout),
                       _options("sh", "-c", "echo out; echo err >&2; exit 7"))
    manager.start(c)
    assert spare.proc.returncode == 0  # it forked the monitor and left, as a launcher
    monitor = json.loads((c.path / "monitor.json").read_text())["pid"]
    assert manager.wait(c, timeout=60) == 7
    assert monitor != spare.proc.pid
    logs = (c.path / "ctr.log").read_bytes()
    assert b"out" in logs and b"err" in logs
    assert standby._spare is not None and standby._spare.proc.pid != spare.proc.pid


def test_a_missing_program_is_reported_through_the_spare(manager: Any, standby: Any,
                                                          ociroot: Path,
                                                          fixture_layout: Path) -> None:
    c = manager.create(_image(ociroot, fixture_layout), _options("/no/such/program"))
    with pytest.raises(OciimgError, match="no/such/program"):
        manager.start(c)


def test_a_dead_spare_falls_back_to_spawning(manager: Any, standby: Any, ociroot: Path,
                                            fixture_layout: Path) -> None:
    dead = standby._spare
    os.kill(dead.proc.pid, signal.SIGKILL)
    dead.proc.wait()
    c = manager.create(_image(ociroot, fixture_layout), _options("sh", "-c", "exit 3"))
    manager.start(c)
    assert manager.wait(c, timeout=60) == 3
    assert standby._spare is not None and standby._spare.proc.poll() is None
