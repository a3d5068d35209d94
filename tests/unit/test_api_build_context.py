"""The build context reader's tolerance for docker's unterminated tars (``-f`` outside the
context): a tar that stops right after its last entry's data is completed, one cut inside
an entry's data stays truncated."""

from __future__ import annotations

import io
import tarfile

import pytest

from ociimg.api.buildjob import Terminated


def make_tar(entries: list[tuple[str, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("dir")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        info = tarfile.TarInfo("last")
        info.size = 47
        tar.addfile(info, io.BytesIO(b"z" * 47))
    return buf.getvalue()


def unterminated(data: bytes) -> bytes:
    """What docker's ReplaceFileTarWrapper sends: no end blocks, no last padding."""
    end = len(data)
    while data[end - 512:end] == bytes(512):
        end -= 512
    return data[:end - 512 + 47]


def names(data: bytes) -> list[str]:
    completed = io.BufferedReader(Terminated(io.BytesIO(data)), 1000).read()
    with tarfile.open(fileobj=io.BytesIO(completed), mode="r:") as tar:
        members = tar.getmembers()
        for m in members:
            if m.isfile():
                assert len(tar.extractfile(m).read()) == m.size  # type: ignore[union-attr]
        return [m.name for m in members]


ENTRIES = [("a", b"x" * 1000), ("é" * 120, b"y" * 512), ("empty", b"")]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_complete_and_unterminated_tars_read_whole(fmt: int) -> None:
    entries = ENTRIES if fmt != tarfile.USTAR_FORMAT else [ENTRIES[0], ENTRIES[2]]
    full = make_tar(entries, fmt)
    want = [n for n, _ in entries] + ["dir", "last"]
    assert names(full) == want
    assert names(unterminated(full)) == want
    assert names(unterminated(full) + bytes(512 - 47)) == want  # padded, no end blocks


def completed(data: bytes) -> bytes:
    return io.BufferedReader(Terminated(io.BytesIO(data)), 1000).read()


@pytest.mark.parametrize("cut", [1, 46, 47 + 1, 47 + 300, 47 + 512 + 1])
def test_a_tar_cut_elsewhere_is_left_truncated(cut: int) -> None:
    # Inside the last data or inside a header: nothing
    # is supplied, so the applier sees the truncation.
    data = unterminated(make_tar(ENTRIES))[:-cut]
    assert completed(data) == data


def test_what_is_supplied_is_the_padding_and_the_end_blocks() -> None:
    data = unterminated(make_tar(ENTRIES))
    assert completed(data) == data + bytes(512 - 47) + bytes(1024)
    assert completed(b"") == bytes(1024)  # an empty body: an empty context


def test_base256_size_field() -> None:
    header = bytearray(tarfile.TarInfo("big").tobuf(tarfile.GNU_FORMAT))
    size = 700
    header[124:136] = b"\x80" + size.to_bytes(11, "big")
    header[148:156] = b" " * 8
    header[148:155] = f"{sum(header):06o}\0".encode()
    data = bytes(header) + b"q" * size
    assert names(data) == ["big"]
