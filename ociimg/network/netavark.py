"""The netavark backend: ``netavark --config DIR setup|teardown NETNS``, JSON on stdin.

netavark (podman's network stack, installed with it) creates the bridge and veth pair,
assigns the addresses we allocated, installs the NAT, port-forwarding and isolation
rules (iptables with netavark 1.x) and runs aardvark-dns for networks with DNS. The
same document goes to setup and teardown, so teardown can be replayed from the copy we
keep after a crash (anchors-next §3.3 trap 4).
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from ociimg.errors import ContainerError
from ociimg.network.backend import Attachment

NETAVARK = "/usr/lib/podman/netavark"
AARDVARK = "/usr/lib/podman/aardvark-dns"


class NetavarkBackend:
    name = "netavark"

    def __init__(self, config_dir: str, binary: str = NETAVARK,
                 aardvark: str = AARDVARK) -> None:
        self.config_dir = config_dir
        self.binary = binary
        self.aardvark = aardvark

    def setup(self, netns: str, plan: dict[str, Any]) -> list[Attachment]:
        out = self._run("setup", netns, plan)
        try:
            result = json.loads(out)
        except ValueError:
            result = None
        if not isinstance(result, dict) or set(result) != set(plan["networks"]):
            self.teardown(netns, plan)
            raise ContainerError(f"netavark setup: unexpected result {out[:200]!r}",
                                 hint="check the netavark version: netavark version")
        return [_attachment(name, block) for name, block in result.items()]

    def teardown(self, netns: str, plan: dict[str, Any]) -> None:
        self._run("teardown", netns, plan)

    def _run(self, command: str, netns: str, plan: dict[str, Any]) -> str:
        if not os.access(self.binary, os.X_OK):
            raise ContainerError(f"netavark is not installed at {self.binary}",
                                 hint="apt-get install netavark aardvark-dns (or use "
                                      "--network none/host)")
        os.makedirs(self.config_dir, mode=0o700, exist_ok=True)
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "NETAVARK_FW": "iptables", "RUST_LOG": "warn"}
        from pathlib import Path

        from ociimg.store import locks
        # One netavark at a time on the host (podman holds its network lock the same way):
        # concurrent runs race on the shared bridge, iptables chains and aardvark files.
        with locks.locked(Path(self.config_dir) / ".netavark.lock"):
            proc = subprocess.run(
                [self.binary, "--config", self.config_dir, "--rootless", "false",
                 "--aardvark-binary", self.aardvark, command, netns],
                input=json.dumps(plan).encode(), capture_output=True, env=env, check=False)
        stdout = proc.stdout.decode(errors="replace")
        if proc.returncode != 0:
            raise ContainerError(f"netavark {command}: {_error_text(stdout, proc.stderr)}",
                                 hint="see the message; `ociimg network prune` clears "
                                      "state left by crashed containers")
        return stdout


def _error_text(stdout: str, stderr: bytes) -> str:
    try:
        doc = json.loads(stdout)
        if isinstance(doc, dict) and doc.get("error"):
            return str(doc["error"])
    except ValueError:
        pass
    return stderr.decode(errors="replace").strip().splitlines()[-1:][0] if stderr.strip() \
        else "failed"


def _attachment(name: str, block: dict[str, Any]) -> Attachment:
    for ifname, iface in (block.get("interfaces") or {}).items():
        for sub in iface.get("subnets") or []:
            return Attachment(network=name, interface=ifname, address=sub["ipnet"],
                              gateway=sub.get("gateway") or "",
                              mac=iface.get("mac_address") or "",
                              dns_servers=list(block.get("dns_server_ips") or []),
                              dns_search=list(block.get("dns_search_domains") or []))
    raise ContainerError(f"netavark setup: network {name} has no address in its result",
                         hint="check the network definition: ociimg network inspect")
