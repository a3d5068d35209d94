"""Attacks through an image's config on what `ociimg run` derives from it: a hostile
Healthcheck is a one-line error at create, never a traceback in run or a crash of the
monitor's health thread later (a string interval, a non-string argv, an interval that
overflows the thread's wait)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from ociimg.containers.policies import Healthcheck, healthcheck_record
from ociimg.errors import InvalidDocument


def _image(hc: Any) -> Any:
    return SimpleNamespace(config=SimpleNamespace(config={"Healthcheck": hc}))


@pytest.mark.parametrize("hc", [
    {"Test": ["CMD", "true"], "Interval": "abc"},
    {"Test": ["CMD", "true"], "Timeout": -5},
    {"Test": ["CMD", "true"], "Interval": 1e308},
    {"Test": ["CMD", "true"], "Interval": 10**30},
    {"Test": ["CMD", "true"], "StartPeriod": True},
    {"Test": ["CMD", "true"], "Retries": "x"},
    {"Test": ["CMD", "true"], "Retries": -1},
    {"Test": ["CMD", 1]},
    {"Test": ["CMD-SHELL", None]},
])
def test_hostile_healthchecks_are_refused(hc: dict[str, Any]) -> None:
    with pytest.raises(InvalidDocument, match="Healthcheck"):
        healthcheck_record(None, _image(hc))


def test_valid_ones_and_the_option_still_work() -> None:
    record = healthcheck_record(None, _image({"Test": ["CMD-SHELL", "true"],
                                              "Interval": 5 * 10**9, "Retries": 2}))
    assert record == {"test": ["CMD-SHELL", "true"], "interval": 5.0, "timeout": 30.0,
                      "startPeriod": 0.0, "retries": 2}
    assert healthcheck_record(None, _image({"Test": ["NONE"]})) is None
    assert healthcheck_record(None, _image("junk")) is None
    # --no-healthcheck and --health-cmd never read the image's.
    assert healthcheck_record(Healthcheck(test=("NONE",)), _image({"Test": [1]})) is None


def test_publish_all_skips_exposed_ports_out_of_range() -> None:
    """-P publishes the image's ExposedPorts: 99999 or -1 there must not reach netavark."""
    from ociimg.network import NetworkOptions, _resolve_ports
    ports = _resolve_ports(NetworkOptions(mode="bridge", publish_all=True),
                           ["-1/tcp", "0/udp", "99999/tcp", "80/tcp", "x/tcp", "53/sctp"])
    assert [(p.container_port, p.protocol) for p in ports] == [(80, "tcp")]
    assert 0 < ports[0].host_port <= 65535
