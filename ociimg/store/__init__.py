"""The content-addressed store, on disk in OCI image-layout format (see layout.py).

The names load on first use: the container records (`ociimg ps`) read their files through
``ociimg.store.files`` alone, without the layout, GC and the document parsers."""

_EXPORTS = {"FsckProblem": "gc", "GCResult": "gc", "Ingest": "ingest",
            "ImageSummary": "layout", "Store": "layout"}
__all__ = sorted(_EXPORTS)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ociimg.store.gc import FsckProblem, GCResult  # noqa: F401
    from ociimg.store.ingest import Ingest  # noqa: F401
    from ociimg.store.layout import ImageSummary, Store  # noqa: F401


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ociimg.store' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f"ociimg.store.{module}"), name)
