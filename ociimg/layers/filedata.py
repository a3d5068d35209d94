"""A regular file's data, from the prefetched layer stream into its new fd."""

from __future__ import annotations

import os
import tarfile

from ociimg.errors import InvalidDocument
from ociimg.layers.stream import Prefetcher

MAX_FILE_OFFSET = 2**63 - 1  # off_t


def write_data(source: Prefetcher, fd: int, size: int) -> None:
    ahead = source.buffered()
    if size <= len(ahead):  # most files: one piece of the current chunk, no generator
        source.skip(size)
        pieces = [ahead[:size]] if size else []
    else:
        pieces = source.chunks(size)  # type: ignore[assignment]
    for piece in pieces:
        while piece:
            piece = piece[os.write(fd, piece):]


def write_sparse(source: Prefetcher, fd: int, info: tarfile.TarInfo, data_end: int) -> None:
    """GNU/PAX sparse file: data segments at their offsets, holes stay holes.

    Writing the holes as zeros would let a tiny layer fill the disk (a 1 TiB
    sparse file is a few bytes of tar); image-spec says sparse SHOULD NOT be used
    but consumers still meet it. ``data_end``: where the entry's stored data ends.
    """
    assert info.sparse is not None
    check_sparse_map(info, data_end)
    for offset, length in info.sparse:
        pos = offset
        for piece in source.chunks(length):
            while piece:
                n = os.pwrite(fd, piece, pos)
                piece, pos = piece[n:], pos + n
    os.ftruncate(fd, info.size)


def check_sparse_map(info: tarfile.TarInfo, data_end: int) -> None:
    """Segments inside the file and, together, inside the entry's stored data (else
    the write reads the next headers as file data, or pwrite fails with EINVAL)."""
    assert info.sparse is not None
    stored = data_end - info.offset_data
    total = 0
    for offset, length in info.sparse:
        total += length
        if offset < 0 or length < 0 or offset + length > info.size or total > stored:
            raise InvalidDocument(f"tar entry {info.name[:200]!r}: sparse segment "
                                  f"({offset}, {length}) outside the file or its data",
                                  hint="the layer is broken or hostile")
    if info.size > MAX_FILE_OFFSET:
        raise InvalidDocument(f"tar entry {info.name[:200]!r}: size {info.size} is too large",
                              hint="the layer is broken or hostile")
