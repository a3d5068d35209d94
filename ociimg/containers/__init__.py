"""Containers as a library: a container store, a manager over an OCI runtime (the
built-in one or any runc-compatible binary), and a monitor process per container.

The names load on first use: the monitor (``python -m ociimg.containers.monitor``) starts
with every ``ociimg run`` and imports only what it needs.
"""

from __future__ import annotations

_EXPORTS = {
    "ContainerManager": "manager", "CreateOptions": "manager", "ContainerStatus": "manager",
    "Container": "store", "containers_locked": "store", "list_containers": "store",
    "find_container": "store", "OciRuntime": "protocol", "BuiltinRuntime": "runtimes",
    "RuncRuntime": "runtimes", "ResolvedImage": "resolved",
}
__all__ = sorted(_EXPORTS)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ociimg.containers.manager import (  # noqa: F401
        ContainerManager,
        ContainerStatus,
        CreateOptions,
    )
    from ociimg.containers.protocol import OciRuntime  # noqa: F401
    from ociimg.containers.resolved import ResolvedImage  # noqa: F401
    from ociimg.containers.runtimes import BuiltinRuntime, RuncRuntime  # noqa: F401
    from ociimg.containers.store import (  # noqa: F401
        Container,
        containers_locked,
        find_container,
        list_containers,
    )


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ociimg.containers' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f"ociimg.containers.{module}"), name)
