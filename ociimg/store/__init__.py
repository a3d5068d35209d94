"""The content-addressed store, on disk in OCI image-layout format (see layout.py)."""

from ociimg.store.gc import FsckProblem, GCResult
from ociimg.store.ingest import Ingest
from ociimg.store.layout import ImageSummary, Store

__all__ = ["FsckProblem", "GCResult", "ImageSummary", "Ingest", "Store"]
