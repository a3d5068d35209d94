"""A container's log: podman's k8s-file format, one record a line.

``2026-12-07T05:24:18.123456789Z stdout F text`` — time (RFC 3339, UTC, nanoseconds),
stream, ``F`` for a whole line (its newline dropped) or ``P`` for a part of one (output
that did not end in a newline yet), then the bytes. Streams stay apart and every line keeps
its time, so ``logs`` can split them again, show times, and cut by --since/--tail. The
monitor writes it and ``logs`` reads it (read_log): no imports beyond os and time.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

LOG_NAME = "ctr.log"
STREAMS = {"stdout": 1, "stderr": 2}


def timestamp(ns: int | None = None) -> str:
    ns = time.time_ns() if ns is None else ns
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def encode(stream: str, data: bytes, ns: int | None = None) -> bytes:
    """The records for one chunk of output: a record per line, the tail as a partial."""
    stamp = f"{timestamp(ns)} {stream} ".encode()
    out = []
    lines = data.split(b"\n")
    for line in lines[:-1]:
        out.append(stamp + b"F " + line + b"\n")
    if lines[-1]:
        out.append(stamp + b"P " + lines[-1] + b"\n")
    return b"".join(out)


def parse_time(stamp: str) -> float:
    """Seconds since the epoch of a record's time (nanoseconds cut to microseconds)."""
    import calendar
    base, _, frac = stamp.rstrip("Z").partition(".")
    secs = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    return secs + (int(frac[:6].ljust(6, "0")) / 1e6 if frac else 0.0)


class Record:
    __slots__ = ("data", "stamp", "stream")

    def __init__(self, stamp: str, stream: str, data: bytes) -> None:
        self.stamp, self.stream, self.data = stamp, stream, data


def parse_line(line: bytes) -> Record | None:
    """One record (``data`` ends with a newline for an F record); None if malformed."""
    parts = line.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr") or parts[2] not in (b"F", b"P"):
        return None
    data = parts[3] if len(parts) == 4 else b""
    return Record(parts[0].decode("ascii", "replace"), parts[1].decode(),
                  data + b"\n" if parts[2] == b"F" else data)


def read_records(f: object) -> Iterator[Record]:
    """The records of an open binary file from where it is, whole lines only."""
    for line in f:  # type: ignore[attr-defined]
        if not line.endswith(b"\n"):  # being written: the caller may read it again later
            f.seek(-len(line), os.SEEK_CUR)  # type: ignore[attr-defined]
            return
        rec = parse_line(line)
        if rec is not None:
            yield rec


def select(records: list[Record], *, since: float | None = None, until: float | None = None,
           tail: int | None = None) -> list[Record]:
    """The records of the last ``tail`` lines (a partial record belongs to the line it
    starts), time-bounded by ``since`` / ``until``."""
    if since is not None or until is not None:
        records = [r for r in records
                   if (since is None or parse_time(r.stamp) >= since)
                   and (until is None or parse_time(r.stamp) <= until)]
    if tail is None or tail < 0:
        return records
    if tail == 0:
        return []
    ends = 0
    for i in range(len(records) - 1, -1, -1):
        if records[i].data.endswith(b"\n") and i != len(records) - 1:
            ends += 1
            if ends == tail:
                return records[i + 1:]
    return records


def read_log(cdir: str, *, running: Callable[[], bool] | None = None,
             since: float | None = None, until: float | None = None,
             tail: int | None = None) -> Iterator[Record]:
    """The records of container directory ``cdir``'s log, selected as ``select`` does;
    with ``running``, followed (new records as they come) until it returns False."""
    try:
        f = open(os.path.join(cdir, LOG_NAME), "rb")  # noqa: SIM115 - closed by the generator
    except FileNotFoundError:
        yield from _read_raw_log(cdir)
        return
    with f:
        if tail is None:  # streamed: a log may be far larger than memory
            yield from (r for r in read_records(f) if select([r], since=since, until=until))
        else:
            yield from select(list(read_records(f)), since=since, until=until, tail=tail)
        while running is not None:
            still = running()
            # Read after the status check: what it wrote before it exited is shown.
            yield from select(list(read_records(f)), since=since, until=until)
            if not still:
                return
            time.sleep(0.1)


def _read_raw_log(cdir: str) -> Iterator[Record]:
    """A container made before logs had records: its raw "log", as stdout."""
    try:
        raw = open(os.path.join(cdir, "log"), "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return
    with raw:
        while chunk := raw.read(1 << 16):
            yield Record("", "stdout", chunk)
