"""The same `run` command lines under `podman run --runtime runc` and `ociimg run`: the same
exit codes, environment and mounts, as a table. Where docker and podman 4.3 differ, ociimg
follows docker and the table says so."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import need
from tests.integration.cli_helpers import ociimg
from tests.integration.runtime_helpers import mounts_under

# podman here: cgroupfs (no systemd), events in a file, and ulimits this host can give (it
# has no CAP_SYS_RESOURCE; podman's default asks for nofile=1048576).
CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
Runner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def podman(fixture_layout: Path) -> Iterator[tuple[Runner, str]]:
    """(run podman ARGS, image id): its own root under a short temp dir (podman refuses a
    runroot path of more than 50 characters); containers removed explicitly (--rm can hang)."""
    exe = shutil.which("podman")
    need(exe is not None and shutil.which("runc") is not None, "podman or runc missing")
    assert exe is not None
    short = Path(tempfile.mkdtemp(prefix="ociimg-pm-"))
    (short / "containers.conf").write_text(CONTAINERS_CONF)
    base = [exe, "--root", str(short / "root"), "--runroot", str(short / "rr"),
            "--storage-driver", "vfs"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        # the environment at the call: a test's -e VAR takes the host's value of then
        env = dict(os.environ, CONTAINERS_CONF=str(short / "containers.conf"))
        return subprocess.run([*base, *args], capture_output=True, text=True, timeout=120,
                              env=env)
    try:
        pulled = run("pull", "-q", f"oci:{fixture_layout}:busybox")
        assert pulled.returncode == 0, pulled.stderr
        yield run, pulled.stdout.strip()
    finally:
        run("rm", "-a", "-f")
        run("volume", "rm", "-a", "-f")
        left = mounts_under(short)
        shutil.rmtree(short, ignore_errors=True)
        assert left == []


def _both(podman: tuple[Runner, str], ociroot: Path, image: str, before: list[str],
          after: list[str]) -> tuple[subprocess.CompletedProcess[str], ...]:
    run, image_id = podman
    theirs = run("run", "--runtime", "runc", "--network", "none", *before, image_id, *after)
    ours = ociimg(ociroot, "run", "--rm", "--network", "none", *before, image, *after,
                  check=False)
    return theirs, ours


EXIT_CODES = [  # (options, command, docker's code)
    ([], ["true"], 0),
    ([], ["sh", "-c", "exit 1"], 1),
    ([], ["sh", "-c", "exit 42"], 42),
    (["--bogus-flag"], ["true"], 125),
    (["--ulimit", "nofile=bad"], ["true"], 125),
    ([], ["/etc/passwd"], 126),
    ([], ["/etc"], 126),
    ([], ["nosuchprogram"], 127),
    ([], ["/no/such/program"], 127),
]


def test_exit_codes_match_podman(podman: tuple[Runner, str], ociroot: Path,
                                 fixture_layout: Path) -> None:
    image = f"oci:{fixture_layout}:busybox"
    for before, after, code in EXIT_CODES:
        theirs, ours = _both(podman, ociroot, image, before, after)
        assert (theirs.returncode, ours.returncode) == (code, code), (
            before, after, theirs.stderr, ours.stderr)


def test_env_matches_podman(podman: tuple[Runner, str], ociroot: Path, fixture_layout: Path,
                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = f"oci:{fixture_layout}:busybox"
    monkeypatch.setenv("HV_HOST", "from the host")
    monkeypatch.setenv("HV_VIA_FILE", "file asks the host")
    monkeypatch.delenv("HV_UNSET", raising=False)
    envf = tmp_path / "env"
    envf.write_text("# a comment\n  HV_FILE=a \"b\" \nHV_VIA_FILE\nHV_EMPTY=\nHV_ABSENT\n")
    theirs, ours = _both(podman, ociroot, image,
                         ["--env-file", str(envf), "-e", "HV_HOST", "-e", "HV_UNSET",
                          "-e", "HV_SET=x=y"], ["sh", "-c", "env | grep ^HV_ | sort"])
    assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
    assert ours.stdout == theirs.stdout
    assert ours.stdout.splitlines() == ["HV_EMPTY=", 'HV_FILE=a "b" ', "HV_HOST=from the host",
                                        "HV_SET=x=y", "HV_VIA_FILE=file asks the host"]


def _mount_options(out: str, dest: str) -> set[str]:
    line = next(x for x in out.splitlines() if x.split()[1:2] == [dest])
    return set(line.split()[3].split(","))


def test_mounts_match_podman(podman: tuple[Runner, str], ociroot: Path, fixture_layout: Path,
                             tmp_path: Path) -> None:
    image = f"oci:{fixture_layout}:busybox"
    host = tmp_path / "host"
    host.mkdir()
    (host / "f").write_text("bound\n")
    script = ("cat /proc/mounts; echo ---; ls /home; stat -c '%a %u %g' /home/app; "
              "cat /h/f; touch /h/x /home/x /t/x 2>&1 | sed 's/^touch: //'; echo ---")
    theirs, ours = _both(podman, ociroot, image,
                         ["-v", "hvtable:/home:ro", "-v", f"{host}:/h:ro,z",
                          "--tmpfs", "/t:size=2m,mode=1770"], ["sh", "-c", script])
    assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
    # Everything after /proc/mounts: the copied-up volume, the bind, which writes fail.
    assert ours.stdout.split("---")[1] == theirs.stdout.split("---")[1]
    assert "\napp\n750 1000 1000\nbound\n" in ours.stdout  # copied up with owner and mode
    # Mount options as /proc/mounts shows them. podman 4.3 adds nosuid,nodev to named
    # volumes and leaves noexec off a --tmpfs that has options; docker does neither
    # (moby: volumes rbind,rprivate; tmpfs noexec,nosuid,nodev + the user's): ociimg
    # follows docker, the rest must be equal.
    for dest, podman_extra, docker_extra in (("/home", {"nosuid", "nodev"}, set()),
                                             ("/h", set(), set()),
                                             ("/t", set(), {"noexec"})):
        assert _mount_options(ours.stdout, dest) - docker_extra == \
            _mount_options(theirs.stdout, dest) - podman_extra, dest
    assert {"ro"} <= _mount_options(ours.stdout, "/home")
    assert {"size=2048k", "mode=1770", "rw"} <= _mount_options(ours.stdout, "/t")
