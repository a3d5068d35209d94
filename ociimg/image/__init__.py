"""The image writer and the config changes it applies (see writer.py, changes.py)."""

from ociimg.image.changes import ConfigChange, apply_changes, parse_change, parse_changes
from ociimg.image.writer import (
    HistoryEntry,
    NewLayer,
    WrittenLayer,
    compose_config,
    copy_blobs,
    format_time,
    write_image,
    write_layer,
)

__all__ = ["ConfigChange", "HistoryEntry", "NewLayer", "WrittenLayer", "apply_changes",
           "compose_config", "copy_blobs", "format_time", "parse_change", "parse_changes",
           "write_image", "write_layer"]
