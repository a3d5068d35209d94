"""The container's program starts with default signal dispositions and an empty signal mask,
whatever the runtime's interpreter or its caller ignored or blocked. runc resets the
dispositions too; it keeps a mask its caller blocked, which we clear (a program never
expects to start with signals blocked; containerd's shim starts runc with none)."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need
from tests.integration.runtime_helpers import make_bundle, runtime

pytestmark = pytest.mark.usefixtures("root")

STATUS = ["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"]


def _hostile_caller() -> None:
    # nohup's SIGHUP, a shell's ignored SIGQUIT, and a blocked SIGUSR1.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})


def _masks(text: str) -> dict[str, int]:
    fields = dict(line.split(":\t") for line in text.strip().splitlines())
    return {k: int(v, 16) for k, v in fields.items()}


def _ours(tmp_path: Path, *args: str) -> dict[str, int]:
    done = runtime(tmp_path / "state", *args, preexec_fn=_hostile_caller, check=True)
    return _masks(done.stdout)


def _runc(tmp_path: Path, bundle: Path) -> dict[str, int]:
    done = subprocess.run(["runc", "--root", str(tmp_path / "runc-state"), "run", "--bundle",
                           str(bundle), "sig-runc"], capture_output=True, text=True,
                          timeout=60, preexec_fn=_hostile_caller, check=True)
    return _masks(done.stdout)


def test_run_starts_the_program_with_default_signals_like_runc(tmp_path: Path) -> None:
    need(shutil.which("runc") is not None, "runc missing: apt-get install runc")
    bundle = make_bundle(tmp_path, STATUS)
    ours = _ours(tmp_path, "run", "--bundle", str(bundle), "sig-ours")
    assert ours == {"SigIgn": 0, "SigBlk": 0}
    assert _runc(tmp_path, bundle)["SigIgn"] == ours["SigIgn"]


def test_exec_starts_the_program_with_default_signals(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, ["sleep", "60"])
    state = tmp_path / "state"
    runtime(state, "run", "-d", "--bundle", str(bundle), "sig-exec", check=True,
            preexec_fn=_hostile_caller)
    try:
        assert _ours(tmp_path, "exec", "sig-exec", *STATUS) == {"SigIgn": 0, "SigBlk": 0}
        # The init (started by a caller that ignored SIGHUP) got the defaults too.
        init = runtime(state, "exec", "sig-exec", "grep", "^SigIgn", "/proc/1/status",
                       check=True).stdout
        assert init.split()[-1] == "0000000000000000"
    finally:
        runtime(state, "delete", "-f", "sig-exec")


def test_a_program_ignoring_nothing_dies_of_sigpipe(tmp_path: Path) -> None:
    # What the dispositions are for: `yes | head -1` ends by SIGPIPE, silently.
    bundle = make_bundle(tmp_path, ["sh", "-c", "yes | head -1; echo done"])
    done = runtime(tmp_path / "state", "run", "--bundle", str(bundle), "sig-pipe", check=True)
    assert done.stdout == "y\ndone\n"
    assert done.stderr == ""  # with SIGPIPE ignored: "yes: write error: Broken pipe"
