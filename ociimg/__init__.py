"""ociimg: container images from registry to running process.

``import ociimg`` is the documented Python API (ociimg/library.py): ``ociimg.pull``,
``ociimg.push``, ``ociimg.open_image``, ``ociimg.inspect``, ``ociimg.unpack``, ``ociimg.umount``.
They load on first use: the runtime's start path imports this package and must not pay for
the registry client or the layer stages.
"""

__version__ = "0.1.0"

_API = ("pull", "push", "open_image", "inspect", "unpack", "umount")
__all__ = list(_API)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ociimg.library import inspect, open_image, pull, push, umount, unpack  # noqa: F401


def __getattr__(name: str) -> object:
    if name in _API:
        from ociimg import library

        return getattr(library, name)
    raise AttributeError(f"module 'ociimg' has no attribute {name!r}")
