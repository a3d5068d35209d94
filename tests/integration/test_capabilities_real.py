"""Capabilities applied for real in forked children, in the init's order
(bounding → keepcaps → setgroups/setgid/setuid → clear keepcaps → capset/ambient)."""

from __future__ import annotations

import errno
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ociimg.errors import ContainerError
from ociimg.runtime import capabilities as caps
from tests.conftest import need
from tests.integration.forked import run_in_child

BUSYBOX = Path("/usr/bin/busybox")
NET_BIND, KILL, CHOWN = (caps.CAPABILITIES[n] for n in
                         ("CAP_NET_BIND_SERVICE", "CAP_KILL", "CAP_CHOWN"))




def as_lists(sets: dict[str, frozenset[int]]) -> dict[str, list[int]]:
    return {k: sorted(v) for k, v in sets.items()}


def become_user(spec: dict, uid: int = 1000, keepcaps: bool = True) -> list[str]:
    """The init's sequence; returns the ambient capabilities the kernel refused."""
    sets = caps.capability_sets(spec)
    caps.drop_bounding(sets)
    if keepcaps:
        caps.prepare_setuid()
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    if keepcaps:
        caps.finish_setuid()
    return caps.apply_capabilities(sets)


def exec_status_caps() -> dict[str, list[int]]:
    """The capability sets of a freshly exec'd program (busybox cat /proc/self/status)."""
    out = subprocess.run([str(BUSYBOX), "cat", "/proc/self/status"], check=True,
                         capture_output=True, text=True).stdout
    return as_lists(caps.current_capabilities(out))


@pytest.fixture(autouse=True)
def _needs(root: None) -> None:
    need(BUSYBOX.is_file(), "busybox-static missing: apt-get install busybox-static")
    need(caps.CAPABILITIES["CAP_SETPCAP"] in caps.current_capabilities()["effective"],
         "the test process lacks CAP_SETPCAP")


ONE_CAP = {"bounding": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
           "effective": ["CAP_NET_BIND_SERVICE"], "permitted": ["CAP_NET_BIND_SERVICE"],
           "inheritable": ["CAP_NET_BIND_SERVICE"], "ambient": ["CAP_NET_BIND_SERVICE"]}


def test_user_keeps_exactly_the_configured_caps_across_exec() -> None:
    def child() -> dict:
        refused = become_user(ONE_CAP)
        return {"uid": os.getuid(), "refused": refused,
                "self": as_lists(caps.current_capabilities()), "exec": exec_status_caps(),
                "keepcaps": caps.linux.prctl(caps.linux.PR_GET_KEEPCAPS)}

    status, result = run_in_child(child)
    assert os.waitstatus_to_exitcode(status) == 0, result
    got = result["ok"]
    assert got["uid"] == 1000 and got["refused"] == [] and got["keepcaps"] == 0
    assert got["self"] == {"inheritable": [NET_BIND], "permitted": [NET_BIND],
                           "effective": [NET_BIND], "bounding": sorted([NET_BIND, KILL]),
                           "ambient": [NET_BIND]}
    # Ambient is what carries a capability into a non-root program's exec.
    assert got["exec"]["effective"] == [NET_BIND]
    assert got["exec"]["bounding"] == sorted([NET_BIND, KILL])


def test_without_ambient_a_user_program_gets_no_caps() -> None:
    spec = {**ONE_CAP, "ambient": []}

    def child() -> dict:
        become_user(spec)
        return {"self": as_lists(caps.current_capabilities()), "exec": exec_status_caps()}

    _, result = run_in_child(child)
    assert result["ok"]["self"]["effective"] == [NET_BIND]
    assert result["ok"]["exec"]["effective"] == []
    assert result["ok"]["exec"]["ambient"] == []


def test_setuid_without_keepcaps_loses_permitted_so_capset_fails() -> None:
    def child() -> str:
        try:
            become_user(ONE_CAP, keepcaps=False)
        except ContainerError as exc:
            return str(exc)
        return "applied"

    _, result = run_in_child(child)
    assert result["ok"].startswith("set capabilities:")
    assert "Operation not permitted" in result["ok"]


def test_ambient_not_in_inheritable_is_refused_and_reported() -> None:
    spec = {**ONE_CAP, "inheritable": []}

    def child() -> dict:
        refused = become_user(spec)
        return {"refused": refused, "ambient": sorted(caps.current_capabilities()["ambient"])}

    _, result = run_in_child(child)
    assert result["ok"] == {"refused": ["CAP_NET_BIND_SERVICE"], "ambient": []}


@pytest.mark.parametrize("keep_chown", [True, False])
def test_root_without_cap_chown_cannot_chown(tmp_path: Path, keep_chown: bool) -> None:
    target = tmp_path / "owned"
    target.write_text("x")
    names = ["CAP_CHOWN", "CAP_KILL"] if keep_chown else ["CAP_KILL"]
    spec = {k: names for k in ("bounding", "effective", "permitted")}

    def child() -> int:
        sets = caps.capability_sets(spec)
        caps.drop_bounding(sets)
        caps.apply_capabilities(sets)
        try:
            os.chown(target, 1000, 1000)
            return 0
        except OSError as exc:
            return exc.errno or -1

    _, result = run_in_child(child)
    if keep_chown:
        assert result == {"ok": 0}
        assert target.stat().st_uid == 1000
    else:
        assert result == {"ok": errno.EPERM}
        assert target.stat().st_uid == 0


def test_dict_form_and_unknown_names() -> None:
    def child() -> dict:
        refused = caps.apply_capabilities({"effective": ["CAP_KILL", "CAP_WARP_DRIVE"],
                                           "permitted": ["CAP_KILL"]})
        return {"refused": refused, "self": as_lists(caps.current_capabilities())}

    _, result = run_in_child(child)
    assert result["ok"]["self"]["effective"] == [KILL]
    assert result["ok"]["self"]["permitted"] == [KILL]
    assert result["ok"]["refused"] == []


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A directory uid 1000 can reach (pytest's tmp_path lives under a 0700 dir)."""
    path = Path(tempfile.mkdtemp(prefix="ociimg-caps-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _file_with_inheritable_cap(directory: Path, cap: int) -> Path:
    """A copy of busybox carrying file capability ``cap``=ei (struct vfs_cap_data v2)."""
    copy = directory / "busybox-fcap"
    shutil.copy(BUSYBOX, copy)
    os.chmod(copy, 0o755)
    try:
        os.setxattr(copy, "security.capability",
                    struct.pack("<IIIII", 0x02000001, 0, 1 << cap, 0, 0))
    except OSError as exc:
        need(False, f"cannot set file capabilities here: {exc}")
    return copy


@pytest.mark.parametrize("inheritable", [[], ["CAP_NET_BIND_SERVICE"]])
def test_inheritable_set_is_what_file_caps_can_pick_up(world_dir: Path,
                                                       inheritable: list[str]) -> None:
    # CVE-2022-29162: a non-empty inheritable set lets any program with inheritable
    # file capabilities gain them on exec. With the spec's inheritable left empty
    # (ociimg's default, as runc now does) nothing is picked up.
    program = _file_with_inheritable_cap(world_dir, NET_BIND)
    spec = {**ONE_CAP, "inheritable": inheritable, "ambient": []}

    def child() -> list[int]:
        become_user(spec)
        out = subprocess.run([str(program), "cat", "/proc/self/status"], check=True,
                             capture_output=True, text=True).stdout
        return sorted(caps.current_capabilities(out)["effective"])

    status, result = run_in_child(child)
    assert os.waitstatus_to_exitcode(status) == 0, result
    assert result["ok"] == ([NET_BIND] if inheritable else [])
