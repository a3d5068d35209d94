"""ociimg.containers as a library: from a thread of a process that is not a CLI, with no
process-global side effects; containers owned by their monitor, not by whoever started
them; waits by pidfd; hostile output that must not hang a wait or grow a log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cli_helpers import ociimg
from tests.integration.runtime_helpers import REPO

pytestmark = pytest.mark.usefixtures("root")


@pytest.fixture
def manager(ociroot: Path, tmp_path: Path) -> Iterator[Any]:
    from ociimg.containers import ContainerManager
    m = ContainerManager(ociroot, runtime_root=tmp_path / "rt")
    yield m
    for c in m.list():
        m.remove(c, force=True)
    assert not (tmp_path / "rt").exists() or not [
        p for p in (tmp_path / "rt").rglob("state.json")]


def _image(ociroot: Path, fixture_layout: Path) -> Any:
    from ociimg.commands.resolve import resolve_image
    return resolve_image(f"oci:{fixture_layout}:busybox", ociroot)


def _options(*args: str, **kw: Any) -> Any:
    from ociimg.bundle import BundleOptions
    from ociimg.containers import CreateOptions
    return CreateOptions(bundle=BundleOptions(args=list(args)), **kw)


def _process_globals() -> tuple[Any, ...]:
    handlers = tuple(signal.getsignal(s) for s in signal.valid_signals()
                     if s not in (signal.SIGKILL, signal.SIGSTOP))
    st = os.fstat(0)
    return handlers, (st.st_dev, st.st_ino), os.readlink("/proc/self/fd/0")


def test_library_from_a_thread_changes_no_process_state(manager: Any, ociroot: Path,
                                                         fixture_layout: Path) -> None:
    before = _process_globals()
    results: dict[str, Any] = {}

    def work() -> None:
        image = _image(ociroot, fixture_layout)
        detached = manager.create(image, _options("sh", "-c", "echo logged; exit 5"))
        manager.start(detached)
        results["detached"] = manager.wait(detached, timeout=60)
        results["log"] = b"".join(manager.logs(detached))
        attached = manager.create(image, _options("sh", "-c", "cat; echo out; echo err >&2",
                                                  interactive=True))
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        manager.start(attached, stdio=(in_r, out_w, err_w))
        for fd in (in_r, out_w, err_w):
            os.close(fd)
        os.write(in_w, b"fed\n")
        os.close(in_w)
        results["attached"] = manager.wait(attached, timeout=60)
        results["out"] = os.read(out_r, 4096)
        results["err"] = os.read(err_r, 4096)
        runner = manager.create(image, _options("sleep", "300"))
        manager.start(runner)
        o_r, o_w = os.pipe()
        results["exec"] = manager.exec(runner, ["sh", "-c", "echo $PPID; exit 3"],
                                       stdio=(0, o_w, o_w))
        os.close(o_w)
        results["exec_out"] = os.read(o_r, 4096)
        manager.stop(runner, timeout=0.5)
        results["stopped"] = manager.status(runner).as_dict()

    t = threading.Thread(target=work)
    t.start()
    t.join(timeout=180)
    assert not t.is_alive()
    assert results["detached"] == 5 and results["log"] == b"logged\n"
    assert results["attached"] == 0
    assert (results["out"], results["err"]) == (b"fed\nout\n", b"err\n")
    assert results["exec"] == 3 and results["exec_out"] == b"0\n"  # joined from outside
    assert results["stopped"]["status"] == "exited"
    assert results["stopped"]["exitCode"] == 128 + signal.SIGKILL
    assert _process_globals() == before


def test_wait_watches_the_monitor_by_pidfd(manager: Any, ociroot: Path, fixture_layout: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    c = manager.create(_image(ociroot, fixture_layout), _options("sh", "-c", "exit 6"))
    manager.start(c)  # detached: the manager keeps no pipe to its monitor
    monitor = json.loads((c.path / "monitor.json").read_text())["pid"]
    assert _ppid(monitor) != os.getpid()  # nobody's child we could waitpid for
    opened = []
    real = os.pidfd_open

    def spy(pid: int, *args: int) -> int:
        opened.append(pid)
        return real(pid, *args)

    monkeypatch.setattr(os, "pidfd_open", spy)
    assert manager.wait(c, timeout=60) == 6
    assert opened == [monitor]
    assert manager.status(c).exit_code == 6


def test_stop_with_an_unknown_stop_signal_falls_back_to_sigkill(manager: Any, ociroot: Path,
                                                                 fixture_layout: Path) -> None:
    # meta.json's stopSignal is the image's StopSignal (hostile input) or a library
    # caller's, never checked: stop still stops the container.
    c = manager.create(_image(ociroot, fixture_layout),
                       _options("sleep", "300", stop_signal="SIGBOGUS"))
    manager.start(c)
    manager.stop(c, timeout=0.5)
    st = manager.status(c)
    assert (st.status, st.exit_code) == ("exited", 128 + signal.SIGKILL)


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rpartition(b")")[2].split()[1])


def test_container_survives_its_cli_being_killed(ociroot: Path, fixture_layout: Path,
                                                 tmp_path: Path, manager: Any) -> None:
    env = {**os.environ, "OCIIMG_ROOT": str(ociroot), "PYTHONPATH": REPO,
           "OCIIMG_RUNTIME_ROOT": str(tmp_path / "rt")}
    ready_r, ready_w = os.pipe()
    go = tmp_path / "go"
    script = "echo ready; while [ ! -e /go ]; do sleep 0.05; done; exit 9"
    cli = subprocess.Popen(
        [sys.executable, "-m", "ociimg", "run", "--name", "orphan", "-v", f"{tmp_path}:/x",
         f"oci:{fixture_layout}:busybox", "sh", "-c", script.replace("/go", "/x/go")],
        env=env, stdout=ready_w, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    os.close(ready_w)
    assert os.read(ready_r, 64) == b"ready\n"
    cli.kill()  # SIGKILL: no handler, no cleanup
    cli.wait()
    c = manager.get("orphan")
    assert manager.status(c).status == "running"
    go.touch()
    assert manager.wait(c, timeout=60) == 9
    assert json.loads((c.path / "exit.json").read_text())["exitCode"] == 9
    assert not os.path.ismount(c.rootfs)  # released by the monitor
    os.close(ready_r)
    detached = ociimg(ociroot, "run", "-d", f"oci:{fixture_layout}:busybox", "sh", "-c",
                      "exit 2").stdout.strip()
    assert manager.wait(manager.get(detached), timeout=60) == 2


def test_hostile_output_never_hangs_wait_nor_grows_the_log(manager: Any, ociroot: Path,
                                                           fixture_layout: Path) -> None:
    image = _image(ociroot, fixture_layout)
    # A flood, stdio closed, a child left behind (it dies with the pid namespace's init).
    flood = manager.create(image, _options(
        "sh", "-c", "head -c 3000000 /dev/zero; exec >&- 2>&- <&-; sleep 300 & exit 0"))
    manager.start(flood)
    assert manager.wait(flood, timeout=60) == 0
    assert sum(len(chunk) for chunk in manager.logs(flood)) == 3000000
    # A child that keeps writing into the pipe while the init exits.
    writer = manager.create(image, _options("sh", "-c", "yes flood & sleep 0.2; exit 1"))
    manager.start(writer)
    assert manager.wait(writer, timeout=60) == 1
    size = (writer.path / "ctr.log").stat().st_size
    assert size > 0 and manager.status(writer).status == "exited"
    time.sleep(0.3)  # nothing may write the log once the wait returned
    assert (writer.path / "ctr.log").stat().st_size == size


def test_rootfs_is_an_active_snapshot_kept_until_rm(manager: Any, ociroot: Path,
                                                    fixture_layout: Path) -> None:
    from ociimg.layers.snapshots import SnapshotStore
    image = _image(ociroot, fixture_layout)
    c = manager.create(image, _options("sh", "-c", "echo x > /new; rm /bin/true"))
    assert os.path.ismount(c.rootfs)
    assert c.meta["parent"] == str(image.chain()[-1]) == str(c.parent)
    manager.start(c)
    assert manager.wait(c, timeout=60) == 0
    assert not os.path.ismount(c.rootfs)  # released at exit ...
    snapshots = SnapshotStore(ociroot / "snapshots")
    (info,) = [a for a in snapshots.active() if a.key == c.snapshot_key]
    assert info.parent == c.parent
    changes = {(ch.kind, ch.path) for ch in snapshots.changes(c.snapshot_key)}
    assert {("A", "/new"), ("D", "/bin/true")} <= changes  # ... its changes kept
    manager.remove(c)
    assert c.snapshot_key not in [a.key for a in snapshots.active()]
    assert not c.path.exists()
