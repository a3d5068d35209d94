"""ociimg: container images from registry to running process.

``import ociimg`` is the documented Python API (ociimg/library.py): ``pull``, ``push``,
``open_image``, ``inspect``, ``unpack``, ``umount``, ``container_manager`` (with
``CreateOptions`` and ``BundleOptions``), ``diff``, ``commit`` and ``build_image``
(not ``build``: that name is the ociimg.build package).
They load on first use: the runtime's start path imports this package and must not pay for
the registry client or the layer stages.
"""

__version__ = "0.1.0"

_API = ("pull", "push", "open_image", "inspect", "unpack", "umount", "container_manager",
        "CreateOptions", "BundleOptions", "diff", "commit", "build_image")
__all__ = list(_API)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ociimg.library import (  # noqa: F401
        BundleOptions,
        CreateOptions,
        build_image,
        commit,
        container_manager,
        diff,
        inspect,
        open_image,
        pull,
        push,
        umount,
        unpack,
    )


def __getattr__(name: str) -> object:
    if name in _API:
        from ociimg import library

        return getattr(library, name)
    raise AttributeError(f"module 'ociimg' has no attribute {name!r}")
