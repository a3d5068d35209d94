"""Host-side views of what ociimg's networking made, for before/after leak counts, and a
tiny static UDP echo server (busybox has no UDP server) built with the host's gcc."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import need

STATE = Path("/run/ociimg/net")
NETNS = Path("/run/ociimg/netns")

UDP_ECHO_C = r"""
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[1]));
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0) return 1;
    for (;;) {
        char buf[512] = "echo:";
        struct sockaddr_in from;
        socklen_t len = sizeof from;
        ssize_t n = recvfrom(s, buf + 5, sizeof buf - 5, 0, (struct sockaddr *)&from, &len);
        if (n > 0) sendto(s, buf, n + 5, 0, (struct sockaddr *)&from, len);
    }
}
"""


def udp_echo_binary(where: Path) -> Path:
    need(shutil.which("gcc") is not None, "gcc missing: apt-get install gcc libc6-dev")
    src = where / "udpecho.c"
    out = where / "udpecho"
    src.write_text(UDP_ECHO_C)
    subprocess.run(["gcc", "-static", "-O1", "-o", str(out), str(src)], check=True,
                   capture_output=True, timeout=120)
    return out


def network_doc(root: Path, name: str) -> dict:
    return json.loads((root / "networks" / f"{name}.json").read_text())


def host_state(cids: list[str], bridge: str | None = None,
               subnet: str | None = None) -> dict[str, object]:
    """Everything of these containers (and this bridge/subnet) the host still holds."""
    leases = []
    for path in (STATE / "ipam").glob("*.json") if (STATE / "ipam").is_dir() else ():
        leases += [ip for ip, cid in json.loads(path.read_text()).items() if cid in cids]
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    needles = [c for c in cids] + ([subnet] if subnet else [])
    state: dict[str, object] = {
        "netns": sorted(c for c in cids if (NETNS / c).exists()),
        "attached": sorted(c for c in cids if (STATE / "attached" / f"{c}.json").exists()),
        "locks": sorted(c for c in cids if (STATE / "attached" / f".{c}.lock").exists()),
        "leases": sorted(leases),
        "rules": [r for r in rules if any(n in r for n in needles)],
    }
    if bridge:
        state["bridge"] = os.path.exists(f"/sys/class/net/{bridge}")
        links = subprocess.run(["ip", "-o", "link", "show", "master", bridge],
                               capture_output=True, text=True, check=False).stdout
        state["veths"] = len(links.splitlines())
    return state


def netns_mounts() -> list[str]:
    text = Path("/proc/self/mountinfo").read_text()
    return [line.split()[4] for line in text.splitlines()
            if line.split()[4].startswith(str(NETNS) + "/")]
