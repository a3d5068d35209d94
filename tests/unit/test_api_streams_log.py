"""The API's log reading: the backwards tail agrees with logfile.select (the library's
forward one) on random logs; stdcopy framing; detach keys as dockerd parses them."""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path

import pytest

from ociimg.api.hijack import frame
from ociimg.api.http import ApiError
from ociimg.api.streams import LogReader, parse_detach_keys, render, tail_offset
from ociimg.containers import logfile


def _random_log(rng: random.Random, n: int) -> bytes:
    out = []
    ns = 1_700_000_000 * 10**9
    for _ in range(n):
        ns += rng.randrange(0, 3) * 10**9
        stream = rng.choice(["stdout", "stderr"])
        data = bytes(rng.choice(b"ab \t") for _ in range(rng.randrange(0, 9)))
        if rng.random() < 0.7:
            data += b"\n"
        out.append(logfile.encode(stream, data or b"\n", ns))
    return b"".join(out)


@pytest.mark.parametrize("seed", range(40))
def test_tail_offset_agrees_with_select(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "ctr.log"
    # Blocks of 64 KiB: long logs make the backwards reads cross block edges.
    path.write_bytes(_random_log(rng, rng.choice([0, 1, 5, 300, 9000])))
    with open(path, "rb") as f:
        records = list(logfile.read_records(f))
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        for tail in (0, 1, 2, 7, 100, 5000, 10**6):
            since = rng.choice([None, logfile.parse_time(records[len(records) // 2].stamp)
                                if records else None])
            want = logfile.select(records, since=since, tail=tail)
            got = LogReader(fd, tail_offset(fd, size, tail, since),
                            streams={"stdout", "stderr"}, since=since)
            read: list[logfile.Record] = []
            while step := got.step():
                read += step
            assert [(r.stamp, r.stream, r.data) for r in read] == \
                [(r.stamp, r.stream, r.data) for r in want], (tail, since)
    finally:
        os.close(fd)


def test_a_line_being_written_is_left_for_later(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    path.write_bytes(b"2026-12-07T05:24:18.000000000Z stdout F one\n"
                     b"2026-12-07T05:24:18.000000000Z stdout F tw")
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = LogReader(fd, 0, streams={"stdout"})
        assert [r.data for r in reader.step()] == [b"one\n"]
        assert reader.step() == []
        with open(path, "ab") as f:
            f.write(b"o\n")
        assert [r.data for r in reader.step()] == [b"two\n"]
    finally:
        os.close(fd)


def test_garbage_lines_in_a_log_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    path.write_bytes(b"\x00\xff garbage\n" * 1000 + b"no spaces\n"
                     + b"2026-12-07T05:24:18.000000000Z stderr F ok\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert tail_offset(fd, os.fstat(fd).st_size, 1) == 0
        reader = LogReader(fd, 0, streams={"stderr"})
        assert [r.data for r in reader.step()] == [b"ok\n"]
    finally:
        os.close(fd)


def test_render_frames_runs_of_a_stream_and_raw_with_a_tty() -> None:
    recs = [logfile.Record("T1", "stdout", b"a\n"), logfile.Record("T2", "stdout", b"b"),
            logfile.Record("T3", "stderr", b"c\n")]
    assert render(recs, tty=False, timestamps=False) == \
        struct.pack(">BxxxI", 1, 3) + b"a\nb" + struct.pack(">BxxxI", 2, 2) + b"c\n"
    assert render(recs, tty=True, timestamps=True) == b"T1 a\nT2 bT3 c\n"
    big = frame(2, b"x" * (3 << 16))
    assert len(big) == 3 * (8 + (1 << 16)) and big[:8] == struct.pack(">BxxxI", 2, 1 << 16)


def test_detach_keys_as_dockerd_reads_them() -> None:
    assert parse_detach_keys(None) == b"\x10\x11"
    assert parse_detach_keys("ctrl-a,x,ctrl-@,ctrl-\\") == b"\x01x\x00\x1c"
    assert parse_detach_keys("") == b""
    for bad in ("ctrl-", "ctrl-ab", "xy", "ctrl-1"):
        with pytest.raises(ApiError):
            parse_detach_keys(bad)
