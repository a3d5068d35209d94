"""The monitor's copy loop against writers that never stop: it ends when the process it
watches exits and takes only what the pipe held then."""

from __future__ import annotations

import os
import subprocess
import threading

from ociimg.containers.stdio import copy_until_exit


def test_copy_stops_at_exit_even_while_a_writer_floods(tmp_path) -> None:
    src_r, src_w = os.pipe()
    flooder = subprocess.Popen(["yes", "flood"], stdout=src_w)
    os.close(src_w)
    done = subprocess.Popen(["true"])
    pidfd = os.pidfd_open(done.pid)
    done.wait()
    sink = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT, 0o600)
    copier = threading.Thread(target=copy_until_exit, args=([(src_r, sink)], pidfd),
                              daemon=True)  # it closes src_r
    try:
        copier.start()
        copier.join(timeout=30)
        assert not copier.is_alive(), "the copy kept going after the exit"
    finally:
        flooder.kill()
        flooder.wait()
        os.close(pidfd)
        os.close(sink)
    # Nothing but what the pipe held when the copy saw the exit: at most its capacity.
    assert (tmp_path / "log").stat().st_size <= 1 << 20


def test_copy_takes_everything_written_before_exit(tmp_path) -> None:
    src_r, src_w = os.pipe()
    writer = subprocess.Popen(["sh", "-c", "head -c 200000 /dev/zero"], stdout=src_w)
    os.close(src_w)
    pidfd = os.pidfd_open(writer.pid)
    sink = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT, 0o600)
    copy_until_exit([(src_r, sink)], pidfd)
    writer.wait()
    os.close(pidfd)
    os.close(sink)
    assert (tmp_path / "log").stat().st_size == 200000
