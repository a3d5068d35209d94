"""Capability names, numbers and the five sets (pure parts of runtime.capabilities)."""

from __future__ import annotations

import logging

import pytest

from ociimg.bundle import profiles
from ociimg.errors import ContainerError
from ociimg.runtime import capabilities as caps


def test_table_matches_linux_capability_h() -> None:
    assert len(caps.CAPABILITY_NAMES) == 41
    assert caps.CAPABILITIES["CAP_CHOWN"] == 0
    assert caps.CAPABILITIES["CAP_NET_BIND_SERVICE"] == 10
    assert caps.CAPABILITIES["CAP_SYS_ADMIN"] == 21
    assert caps.CAPABILITIES["CAP_SYS_RESOURCE"] == 24
    assert caps.CAPABILITIES["CAP_SETFCAP"] == 31
    assert caps.CAPABILITIES["CAP_AUDIT_READ"] == 37
    assert caps.CAPABILITIES["CAP_PERFMON"] == 38
    assert caps.CAPABILITIES["CAP_BPF"] == 39
    assert caps.CAPABILITIES["CAP_CHECKPOINT_RESTORE"] == caps.CAP_LAST == 40


@pytest.mark.parametrize("name,number", [
    ("CAP_KILL", 5), ("kill", 5), ("cap_kill", 5), (" CAP_KILL ", 5),
    ("CAP_NOPE", None), ("", None), ("CAP_", None),
])
def test_cap_number_accepts_spec_and_short_names(name: str, number: int | None) -> None:
    assert caps.cap_number(name) == number


def test_capability_sets_translates_each_set() -> None:
    sets = caps.capability_sets({
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "effective": ["CAP_KILL"],
        "permitted": ["CAP_KILL", "CAP_CHOWN"],
        "inheritable": [],
        "ambient": ["CAP_NET_BIND_SERVICE"],
    })
    assert sets.bounding == {0, 5, 10}
    assert sets.effective == {5}
    assert sets.permitted == {0, 5}
    assert sets.inheritable == frozenset()
    assert sets.ambient == {10}
    assert sets.ignored == ()


def test_missing_object_or_sets_mean_empty_sets() -> None:
    for spec in (None, {}, {"bounding": None}):
        sets = caps.capability_sets(spec)
        assert sets.bounding == sets.effective == sets.permitted == frozenset()
        assert sets.inheritable == sets.ambient == frozenset()


def test_unknown_names_are_ignored_and_reported_like_runc(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        sets = caps.capability_sets({"bounding": ["CAP_CHOWN", "CAP_FLY", "CAP_FLY"],
                                     "effective": ["CAP_TELEPORT"]})
    assert sets.bounding == {0}
    assert sets.effective == frozenset()
    assert sets.ignored == ("CAP_FLY", "CAP_TELEPORT")
    assert "CAP_FLY" in caplog.text


def test_caps_newer_than_the_kernel_are_ignored() -> None:
    # A kernel whose cap_last_cap is 37 (before CAP_PERFMON) must not be asked for 38..40.
    sets = caps.capability_sets({"bounding": ["CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF"]},
                                last_cap=37)
    assert sets.bounding == {37}
    assert sets.ignored == ("CAP_PERFMON", "CAP_BPF")
    assert sets.last_cap == 37  # drop_bounding needs no /proc read after pivot_root


def test_last_cap_defaults_to_the_running_kernel() -> None:
    assert caps.capability_sets({}).last_cap == caps.kernel_last_cap()


@pytest.mark.parametrize("bad", ["CAP_CHOWN", ["CAP_CHOWN", 5], {"CAP_CHOWN": True}])
def test_malformed_sets_are_errors(bad: object) -> None:
    with pytest.raises(ContainerError) as info:
        caps.capability_sets({"effective": bad})
    assert "process.capabilities.effective" in str(info.value)
    assert info.value.hint


def test_not_an_object_is_an_error() -> None:
    with pytest.raises(ContainerError):
        caps.capability_sets(["CAP_CHOWN"])  # type: ignore[arg-type]


def test_masks_round_trip() -> None:
    numbers = frozenset({0, 5, 21, 31, 32, 40})
    mask = caps.mask_of(numbers)
    assert mask == (1 << 0) | (1 << 5) | (1 << 21) | (1 << 31) | (1 << 32) | (1 << 40)
    assert caps.caps_of(mask) == numbers
    assert caps.caps_of(0) == frozenset()


def test_current_capabilities_parses_proc_status() -> None:
    status = ("Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\n"
              "CapEff:\t00000000a80425fb\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000400\n")
    sets = caps.current_capabilities(status)
    assert sets["inheritable"] == frozenset()
    assert sets["ambient"] == {10}
    assert sets["bounding"] == frozenset(range(41))
    # 0xa80425fb is Docker's classic default set of 14 capabilities.
    assert {caps.cap_name(c) for c in sets["effective"]} == {
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
        "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW",
        "CAP_SYS_CHROOT", "CAP_MKNOD", "CAP_AUDIT_WRITE", "CAP_SETFCAP"}


def test_cap_name_of_unknown_number() -> None:
    assert caps.cap_name(21) == "CAP_SYS_ADMIN"
    assert caps.cap_name(63) == "CAP_63"


def test_default_profile_capabilities_are_all_known() -> None:
    sets = caps.capability_sets({"bounding": list(profiles.DEFAULT_CAPABILITIES)})
    assert sets.ignored == ()
    assert len(sets.bounding) == len(profiles.DEFAULT_CAPABILITIES)
    assert caps.CAPABILITIES["CAP_SYS_ADMIN"] not in sets.bounding
