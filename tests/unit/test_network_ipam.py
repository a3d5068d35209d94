"""Address leases (no root: the state directory is a temp dir)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import ociimg.network as network
from ociimg.errors import ContainerError, InvalidArgument
from ociimg.network import ipam, netns


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(ipam, "STATE_DIR", tmp_path)
    monkeypatch.setattr(network, "STATE_DIR", tmp_path)
    monkeypatch.setattr(netns, "NETNS_DIR", str(tmp_path / "netns"))
    return tmp_path


def test_allocation_skips_the_gateway_and_reuses_freed_addresses() -> None:
    a = ipam.allocate("br9", "10.86.9.0/29", "10.86.9.1", "a")
    b = ipam.allocate("br9", "10.86.9.0/29", "10.86.9.1", "b")
    assert (a, b) == ("10.86.9.2", "10.86.9.3")
    ipam.release("a")
    assert ipam.allocate("br9", "10.86.9.0/29", "10.86.9.1", "c") == "10.86.9.2"
    assert ipam.holders() == {"b", "c"} and ipam.lease_count() == 2


def test_a_full_subnet_and_bad_or_taken_static_addresses_are_refused() -> None:
    for cid in "abcdef":  # /29: 6 hosts, one is the gateway
        if cid == "f":
            with pytest.raises(ContainerError, match="no free address"):
                ipam.allocate("br9", "10.86.9.0/29", "10.86.9.1", cid)
        else:
            ipam.allocate("br9", "10.86.9.0/29", "10.86.9.1", cid)
    ipam.release("a")
    for bad in ("10.86.9.1", "10.86.9.0", "10.86.9.7", "10.86.10.2"):
        with pytest.raises(InvalidArgument):
            ipam.allocate("br9", "10.86.9.0/29", "10.86.9.1", "x", wanted=bad)
    with pytest.raises(ContainerError, match="in use"):
        ipam.allocate("br9", "10.86.9.0/29", "10.86.9.1", "x", wanted="10.86.9.3")
    assert ipam.allocate("br9", "10.86.9.0/29", "10.86.9.1", "x", wanted="10.86.9.2") \
        == "10.86.9.2"


def test_concurrent_allocations_never_share_an_address() -> None:
    got: list[str] = []

    def take(cid: str) -> None:
        got.append(ipam.allocate("br8", "10.86.8.0/24", "10.86.8.1", cid))
    threads = [threading.Thread(target=take, args=(f"c{i}",)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 40


def test_reap_skips_held_attachments_and_clears_dead_ones(state: Path) -> None:
    held = network._lock("alive", blocking=True)
    dead = network._lock("dead", blocking=True)
    for cid in ("alive", "dead"):
        network._write_json(state / "attached" / f"{cid}.json", {"id": cid})
        ipam.allocate("br7", "10.86.7.0/24", "10.86.7.1", cid)
    network._unlock("dead", dead)  # its monitor died: nobody holds the lock now
    assert network.reap() == ["dead"]
    assert network.attached_ids() == ["alive"] and ipam.holders() == {"alive"}
    network._unlock("alive", held)
