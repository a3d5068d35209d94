"""Read-ahead for layer streams: decompress and hash in a thread, parse and write in another.

Decompression (isal/zlib/zstd) and sha256 release the GIL on large buffers, and so
do the ``write`` calls of the applier: with a bounded queue of 1-4 MiB chunks between
them, a layer is unpacked in roughly max(decompress+hash, write) instead of the sum,
with memory bounded by the queue. The consumer side is forward-only but seekable
(``tell``/forward ``seek``), so ``tarfile`` can run in its ordinary (non-stream) mode
and file contents can be written straight from the prefetched chunks.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO, Self

from ociimg.errors import InvalidDocument

CHUNK = 1 << 20
DEPTH = 8  # chunks in flight: bounds memory at ~8 MiB per layer
# The applier's read-ahead (apply_layer): 4 MiB chunks, 8 in flight (~32 MiB per layer).
# It runs far enough ahead through regions of small files (where the applier is the
# slower side) to cover the big files that follow (where decompression is): with 1 MiB
# x 8 the applier's thread waited for data ~8% of the time on the usr-1g bench (py-spy),
# ~4.6% with this; fewer, larger chunks also mean fewer GIL hand-offs and fewer headers
# split across chunks (tarfile's slow path). Listings keep the 8 MiB bound.
APPLY_CHUNK = 4 << 20
APPLY_DEPTH = 8
_ZERO_BLOCK = bytes(512)


class QueueThread:
    """A worker thread (``_run``) handing items to its consumer through a bounded queue;
    use as a context manager. Leaving it stops the worker, unblocking one that waits on
    a full queue, and joins it."""

    def __init__(self, name: str, depth: int) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()

    def _run(self) -> None:
        raise NotImplementedError

    def put(self, item: object) -> bool:
        """Queue ``item`` for the consumer; False once the consumer has left."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False


class Prefetcher(QueueThread):
    """Reads ``source`` to EOF in a background thread; use as a context manager."""

    def __init__(self, source: BinaryIO, chunk: int = CHUNK, depth: int = DEPTH) -> None:
        super().__init__("layer-prefetch", depth)
        self._source = source
        self._chunk = chunk
        self._buf = memoryview(b"")
        self._eof = False
        self.position = 0

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._source.read(self._chunk)
                self.put(data)
                if not data:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self.put(exc)

    def _next(self) -> bool:
        if self._eof:
            return False
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._eof = True
            raise item
        if not item:
            self._eof = True
            return False
        self._buf = memoryview(item)
        return True

    def chunks(self, size: int) -> Iterator[memoryview]:
        """Exactly ``size`` bytes from the current position, as zero-copy pieces."""
        while size > 0:
            if not self._buf and not self._next():
                raise InvalidDocument("layer tar: unexpected end of data",
                                      hint="the layer is truncated")
            piece = self._buf[:size]
            self._buf = self._buf[len(piece):]
            self.position += len(piece)
            size -= len(piece)
            yield piece

    def read(self, n: int = -1) -> bytes:
        buf = self._buf
        if 0 <= n <= len(buf):  # the common case: a 512-byte header inside one chunk
            self._buf = buf[n:]
            self.position += n
            return bytes(buf[:n])
        out = bytearray()
        while n < 0 or len(out) < n:
            if not self._buf and not self._next():
                break
            take = self._buf if n < 0 else self._buf[: n - len(out)]
            out += take
            self._buf = self._buf[len(take):]
        self.position += len(out)
        return bytes(out)

    def buffered(self) -> memoryview:
        """The bytes of the current chunk not read yet (maybe empty); ``skip`` past them."""
        return self._buf

    def skip(self, n: int) -> None:
        """Consume ``n`` bytes that ``buffered()`` holds."""
        assert n <= len(self._buf)
        self._buf = self._buf[n:]
        self.position += n

    def drain(self) -> None:
        while self._buf or self._next():
            self.position += len(self._buf)
            self._buf = memoryview(b"")


class ForwardReader(io.RawIOBase):
    """A forward-only seekable view of a Prefetcher, enough for ``tarfile`` mode "r:"."""

    def __init__(self, source: Prefetcher) -> None:
        self.source = source
        self.zero_block_at = -1  # offset of the last all-zero 512-byte block read

    def ended_at(self, offset: int) -> bool:
        """Whether a whole end-of-archive (zero) block was read at ``offset``: tarfile
        treats a truncated or garbage header after the first member as the end."""
        return self.zero_block_at == offset

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.source.position

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            pos += self.source.position
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("seek from the end of a stream")
        if pos == self.source.position:
            return pos  # tarfile seeks to where it already is before every header
        if pos < self.source.position:
            raise io.UnsupportedOperation(
                f"backward seek to {pos} (at {self.source.position}) in a layer stream")
        for _ in self.source.chunks(pos - self.source.position):
            pass
        return pos

    def read(self, n: int = -1) -> bytes:
        at = self.source.position
        data = self.source.read(n)
        if n == 512 and data == _ZERO_BLOCK:
            self.zero_block_at = at
        return data

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
        data = self.source.read(len(buf))
        buf[: len(data)] = data
        return len(data)
