"""``features``: what this runtime supports (runtime-spec features.md)."""

from __future__ import annotations

from ociimg.runtime import SPEC_VERSION
from ociimg.runtime.config import NAMESPACE_TYPES
from ociimg.runtime.hooks import STAGES
from ociimg.runtime.mounts import _FLAGS, PROPAGATION

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def features() -> dict[str, Any]:
    from ociimg.runtime import capabilities
    doc: dict[str, Any] = {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": SPEC_VERSION,
        "hooks": list(STAGES),
        "mountOptions": sorted(set(_FLAGS) | set(PROPAGATION)),
        "linux": {
            "namespaces": list(NAMESPACE_TYPES),
            "capabilities": list(capabilities.CAPABILITY_NAMES),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False},
            "seccomp": {"enabled": True},
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": {"org.opencontainers.runtime.name": "ociimg-runtime"},
    }
    return doc
