"""The cached BPF program (seccomp.filter_program) filters exactly like the libseccomp load
it replaces: from a cache miss and from a hit, in a process and through the runtime."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from ociimg.bundle import profiles
from ociimg.oskit import linux
from ociimg.runtime import seccomp
from tests.integration.forked import run_in_child
from tests.integration.runtime_helpers import base_config, make_bundle, runtime, write_config
from tests.integration.seccomp_helpers import need_seccomp, probe_forbidden

BLOCKED = {"unshare": errno.EPERM, "mount": errno.EPERM, "keyctl": errno.EPERM,
           "add_key": errno.EPERM}


@pytest.fixture(autouse=True)
def _needs(root: None) -> None:
    need_seccomp()


def test_program_from_miss_and_hit_blocks_like_libseccomp(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    profile = profiles.default_seccomp_profile()
    for attempt in ("miss", "hit"):
        (tmp_path / attempt).mkdir()
        had_entry = cache.exists() and bool(os.listdir(cache))
        program = seccomp.filter_program(profile, str(cache))
        assert had_entry == (attempt == "hit")

        def child(program: bytes = program, where: Path = tmp_path / attempt) -> dict:
            linux.set_no_new_privs()
            linux.seccomp_load_bpf(program)
            return probe_forbidden(where)

        status, result = run_in_child(child)
        assert os.waitstatus_to_exitcode(status) == 0, result
        assert result["ok"] == BLOCKED, attempt
        assert not os.path.ismount(tmp_path / attempt)


def run_probe(tmp_path: Path, name: str, seccomp_on: bool, runs: int) -> list[str]:
    # unshare(CLONE_NEWUSER) needs no capability, so only the default profile refuses it.
    config = base_config(["/bin/sh", "-c", "unshare -U true 2>/dev/null; echo rc=$?"])
    if not seccomp_on:
        del config["linux"]["seccomp"]
    bundle = make_bundle(tmp_path / name, [], config)
    write_config(bundle, config)
    out = []
    for n in range(runs):
        result = runtime(tmp_path / name / "state", "run", "-b", str(bundle),
                         f"{name}{n}-{os.getpid()}")
        assert result.returncode == 0, result.stderr
        out.append(result.stdout.strip())
    return out


def test_container_started_from_a_cached_filter_is_filtered(tmp_path: Path) -> None:
    """Two runs of one bundle: the second loads the cached program (the first one put it
    there, or an earlier run did); both see unshare refused by the default profile, which
    succeeds without it."""
    (tmp_path / "plain").mkdir()
    (tmp_path / "filtered").mkdir()
    assert run_probe(tmp_path, "plain", seccomp_on=False, runs=1) == ["rc=0"]
    assert run_probe(tmp_path, "filtered", seccomp_on=True, runs=2) == ["rc=1", "rc=1"]
    cache_dir = seccomp.default_cache_dir()
    if cache_dir is not None:
        key = seccomp.cache_key(profiles.default_seccomp_profile())
        assert seccomp.read_cached(cache_dir, key) is not None
