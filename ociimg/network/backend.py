"""The interface a network backend implements (netavark today; CNI could be a second).

A backend attaches a network namespace to bridge networks and detaches it. It gets the
whole plan (ours: netavark's NetworkOptions document, which a CNI backend would translate
to conflist runs) and returns, per network, the interface's address and the DNS servers
the container should use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Attachment:
    network: str
    interface: str
    address: str          # "10.87.0.2/16"
    gateway: str
    mac: str = ""
    dns_servers: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)

    @property
    def ip(self) -> str:
        return self.address.partition("/")[0]


class Backend(Protocol):
    name: str

    def setup(self, netns: str, plan: dict[str, Any]) -> list[Attachment]:
        """Attach ``netns`` as ``plan`` says; undo what was done and raise on failure."""

    def teardown(self, netns: str, plan: dict[str, Any]) -> None:
        """Detach: best effort, idempotent, also when ``netns`` is gone already."""
