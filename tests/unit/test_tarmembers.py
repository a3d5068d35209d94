"""The applier's member reader (ociimg.layers.members) against tarfile's ``next()``.

Both read the same prefetched stream the way the applier does (file data consumed
through the Prefetcher, or not at all), with chunk sizes that put headers on and
across chunk boundaries. Every member (TarInfo fields, PAX records, offsets, sparse
map), tarfile's offset and the stream position after each member, the end-of-archive
marker and every error must be the same. tests/unit/test_apply.py separately checks
that LayerTarInfo on that stream matches plain tarfile.
"""

from __future__ import annotations

import io
import os
import random
import subprocess
import tarfile
from pathlib import Path

import pytest

from ociimg.errors import InvalidDocument, UnsafeArchive
from ociimg.layers.members import MemberReader
from ociimg.layers.stream import ForwardReader, Prefetcher
from ociimg.layers.tarinfo import MAX_META_HEADER, LayerTarInfo
from tests.tarbuild import (
    DEV,
    HOSTILE,
    D,
    F,
    H,
    L,
    layer_tars,
    pax_archives,
    pax_size_archive,
    tar,
)

CHUNKS = [512, 1536, 10_000, 1 << 20]  # 10,000: headers straddle chunk boundaries


def _read(archive: bytes, chunk: int, *, fast: bool, consume: bool = True) -> list[object]:
    """Everything observable while reading ``archive`` as the applier does."""
    out: list[object] = []
    with Prefetcher(io.BytesIO(archive), chunk=chunk) as ahead:
        stream = ForwardReader(ahead)
        try:
            with tarfile.open(fileobj=stream, mode="r:", tarinfo=LayerTarInfo) as tf:
                step = MemberReader(tf, ahead).next if fast else tf.next
                while (m := step()) is not None:
                    out.append((type(m).__name__, m.get_info(), dict(m.pax_headers),
                                m.offset, m.offset_data, m.sparse, tf.offset, ahead.position))
                    tf.members.clear()
                    if consume and m.isreg() and m.sparse is None:
                        stream.seek(m.offset_data)
                        out.append(b"".join(ahead.chunks(m.size)))
                out.append((tf.offset, ahead.position, stream.ended_at(tf.offset),
                            dict(tf.pax_headers)))
        except (tarfile.TarError, InvalidDocument, UnsafeArchive, UnicodeError,
                io.UnsupportedOperation) as exc:
            out.append((type(exc).__name__, str(exc)))
    return out


def _assert_same(archive: bytes, chunks: list[int] = CHUNKS) -> None:
    for chunk in chunks:
        for consume in (True, False):
            assert _read(archive, chunk, fast=True, consume=consume) == \
                _read(archive, chunk, fast=False, consume=consume), (chunk, consume)


def _gnu_sparse_tars(tmp_path: Path) -> list[bytes]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "first").write_bytes(b"an ordinary member before the sparse one")
    with open(src / "sparse", "wb") as f:
        for off in (0, 1 << 16, 1 << 20):
            f.seek(off)
            f.write(b"data" * 300)
    out = []
    for fmt in ("gnu", "pax", "oldgnu"):
        dest = tmp_path / f"{fmt}.tar"
        subprocess.run(["tar", f"--format={fmt}", "--sparse", "-cf", dest, "-C", src, "first",
                        "sparse"], check=True)
        out.append(dest.read_bytes())
    return out


def _odd_archives() -> list[bytes]:
    long = "d/" * 70 + "f"
    gnu = tar(F(long, b"x" * 700), L("l" * 120, "t" * 150), D("dir" * 40),
              fmt=tarfile.GNU_FORMAT)
    ustar = tar(F("p/" * 60 + "f", b"y"), DEV("dev/null"), H("h", "p/" * 40 + "f"),
                fmt=tarfile.USTAR_FORMAT)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for fmt, (info, data) in [(tarfile.PAX_FORMAT, F("a", b"1")),
                                  (tarfile.GNU_FORMAT, F(long, b"2")),
                                  (tarfile.PAX_FORMAT, F("é" * 80, b"3")),
                                  (tarfile.USTAR_FORMAT, F("b", b"4"))]:
            tf.format = fmt
            tf.addfile(info, io.BytesIO(data))
    mixed = out.getvalue()
    huge_meta = tarfile.TarInfo("././@PaxHeader")
    huge_meta.type, huge_meta.size = tarfile.XHDTYPE, MAX_META_HEADER + 1
    too_big = tar(F("first", b"1"))[:1024] + huge_meta.tobuf(tarfile.USTAR_FORMAT) + \
        b"\0" * 4096
    plain = tar(*[F(f"f{i}", b"z" * (i * 37)) for i in range(40)])
    unknown, _ = F("unknown-type", b"u" * 700)
    unknown.type = b"Z"  # tarfile skips the data of a type it does not know
    odd_type = tar(F("a", b"1"), (unknown, b"u" * 700), F("b", b"2"))
    return [gnu, ustar, mixed, too_big, plain, odd_type, _later_hdrcharset(),
            b"", b"\0" * 512, b"\0" * 10240,
            plain[:-1024] + b"\x01" * 1024,  # garbage instead of the end blocks
            *[plain[:cut] for cut in (100, 511, 512, 1000, 1536, 2048, 5000)]]


def _later_hdrcharset() -> bytes:
    """PAX headers with hdrcharset after an ordinary member; tarfile also finds one
    inside another record's value."""
    out = tar(F("a", b"1"))[:1024]
    entry, _ = F("x", b"")
    for records in (b"20 hdrcharset=BINARY\n14 path=\xff\xfe\n",
                    b"29 comment=1 hdrcharset=ABC\n"):
        header = tarfile.TarInfo("././@PaxHeader")
        header.type, header.size = tarfile.XHDTYPE, len(records)
        out += header.tobuf(tarfile.USTAR_FORMAT) + records.ljust(512, b"\0") + \
            entry.tobuf(tarfile.USTAR_FORMAT)
    return out + b"\0" * 1024


def _header_offsets(archive: bytes) -> list[int]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
        members = tf.getmembers()
    return sorted({at for m in members for at in (m.offset, m.offset_data - 512)})


def test_member_reader_matches_tarfile_on_fixture_hostile_and_odd_tars(
        fixture_layout: Path, tmp_path: Path) -> None:
    archives = layer_tars(fixture_layout)
    assert len(archives) >= 3
    archives += [data for case in HOSTILE.values() for data in case]
    archives += pax_archives() + [pax_size_archive()] + _odd_archives()
    archives += _gnu_sparse_tars(tmp_path)
    for archive in archives:
        _assert_same(archive)


def test_member_reader_matches_tarfile_on_mutated_headers() -> None:
    rng = random.Random(2468)
    bases = [tar(F("a/" + "n" * 120, b"data", 0o755, uid=70000), L("l", "t" * 120),
                 D("dir/"), F("big", b"z" * 700), F("s", b"", mtime=1.5)),
             tar(F("u", b"q"), DEV("c"), fmt=tarfile.USTAR_FORMAT),
             tar(F("g" * 120, b"q"), fmt=tarfile.GNU_FORMAT),
             pax_size_archive()]
    for base in bases:
        for _ in range(600):
            buf = bytearray(base)
            for _ in range(rng.randint(1, 3)):
                buf[rng.randrange(min(len(buf), 2560))] = \
                    rng.choice(b"0127 =\n\0\x1c\x80\xffa/xgLKS")
            if rng.random() < 0.6:
                for at in (0, 1024, 1536):  # fix up the checksums of likely headers
                    buf[at + 148:at + 156] = b"        "
                    buf[at + 148:at + 156] = b"%06o\0 " % sum(buf[at:at + 512])
            _assert_same(bytes(buf), [rng.choice(CHUNKS)])


def test_member_reader_matches_tarfile_on_mutated_later_headers() -> None:
    """Mutations anywhere in a many-member PAX layer: later PAX header blocks are
    checked against the ones the reader validated before (size, checksum)."""
    rng = random.Random(1357)
    base = tar(*[F(f"dir/f{i}", b"z" * (i * 100), mtime=1_700_000_000 + i / 4)
                 for i in range(8)])
    headers = _header_offsets(base)
    assert len(headers) == 16
    for _ in range(1500):
        buf = bytearray(base)
        at = rng.choice(headers)
        for _ in range(rng.randint(1, 2)):
            buf[at + rng.choice([124, 130, 135, 148, 150, 155, 156, rng.randrange(512)])] = \
                rng.choice(b"0127 \0\x1c\x80\xffxgLKSZ")
        if rng.random() < 0.5:
            buf[at + 148:at + 156] = b"        "
            buf[at + 148:at + 156] = b"%06o\0 " % sum(buf[at:at + 512])
        _assert_same(bytes(buf), [rng.choice(CHUNKS)])


def test_member_reader_decodes_the_common_member_itself() -> None:
    """The fast path is really taken: tarfile reads only the first member and the end."""
    archive = tar(*[F(f"dir/file{i}", b"x" * i, mtime=1_700_000_000.5) for i in range(50)],
                  L("link", "dir/file1"), D("dir"))
    calls = []
    with Prefetcher(io.BytesIO(archive)) as ahead:
        stream = ForwardReader(ahead)
        with tarfile.open(fileobj=stream, mode="r:", tarinfo=LayerTarInfo) as tf:
            real = tf.next

            def counted():  # type: ignore[no-untyped-def]
                calls.append(tf.offset)
                return real()
            tf.next = counted  # type: ignore[method-assign]
            reader = MemberReader(tf, ahead)
            names = []
            while (m := reader.next()) is not None:
                names.append(m.name)
    assert names == [f"dir/file{i}" for i in range(50)] + ["link", "dir"]
    assert len(calls) == 2  # the first member (read by tarfile.open) and the end


@pytest.mark.parametrize("chunk", CHUNKS)
def test_member_reader_refuses_a_huge_pax_header(chunk: int) -> None:
    archive = _odd_archives()[3]
    assert _read(archive, chunk, fast=True)[-1] == (
        "UnsafeArchive", f"tar header for '././@PaxHeader': {MAX_META_HEADER + 1}-byte "
                          "meta header")


def test_pax_times_match_decimal() -> None:
    """mtime_ns's plain-number shortcut gives what int(Decimal(text) * 1e9) gives."""
    from decimal import Decimal

    from ociimg.layers.tarinfo import _MAX_NS, _MIN_NS, mtime_ns
    rng = random.Random(97)
    texts = ["0", "1", "1.", ".5", "1.5", "1700000000.123456789", "1700000000.1234567891999",
             "0.9999999999999999999999999999", "9" * 19 + "." + "9" * 8, "9" * 20 + ".9" * 1,
             "12345678901234567890123456.7", "00012.000", "-1.5", "1e9", " 12", "1_000.5",
             "١٢٣", "²", "+5", "5.5.5", "nan", "inf"]
    for _ in range(3000):
        whole = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 20)))
        frac = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 15)))
        texts.append(whole + ("." + frac if frac or rng.random() < 0.3 else ""))
    for text in texts:
        info = tarfile.TarInfo("x")
        info.mtime, info.pax_headers = 7, {"mtime": text}
        try:
            want = int(Decimal(text) * 1_000_000_000)
        except (ArithmeticError, ValueError):  # not a number: the ustar/float mtime
            want = 7_000_000_000
        if _MIN_NS <= want <= _MAX_NS:
            assert mtime_ns(info) == want, text
        else:  # beyond a 64-bit time_t
            with pytest.raises(InvalidDocument, match="not a representable time"):
                mtime_ns(info)


def test_byte_sum_is_sum() -> None:
    from ociimg.layers.tarinfo import byte_sum
    rng = random.Random(11)
    for size in (0, 1, 8, 255, 256, 257, 511, 512, 1024):
        for fill in (b"\xff", b"\0", None):
            data = fill * size if fill else bytes(rng.randrange(256) for _ in range(size))
            assert byte_sum(data) == sum(data), (size, fill)


@pytest.mark.parametrize("pax_mtime", ["nan", "inf", "-inf", "1e30", "-1e30"])
def test_unrepresentable_times_are_a_clean_error(tmp_path: Path, pax_mtime: str) -> None:
    from ociimg.layers.apply import ApplyOptions, apply_layer
    info, data = F("f", b"x")
    info.pax_headers = {"mtime": pax_mtime}
    layer = tar((info, data))
    with pytest.raises(InvalidDocument, match="'f': mtime .* is not a representable time"):
        apply_layer(tmp_path, io.BytesIO(layer), ApplyOptions(rootless=True))


def test_a_base256_mtime_beyond_time_t_is_a_clean_error(tmp_path: Path) -> None:
    from ociimg.layers.apply import ApplyOptions, apply_layer
    info, data = F("d/f", b"x", mtime=2**70)
    layer = tar((info, data), fmt=tarfile.GNU_FORMAT)
    assert layer[136] == 0x80  # base-256 mtime field
    with pytest.raises(InvalidDocument, match="'d/f': mtime .* is not a representable time"):
        apply_layer(tmp_path, io.BytesIO(layer), ApplyOptions(rootless=True))
    ok, _ = F("g", b"y", mtime=-1_000_000)  # before 1970 is fine (base-256 too)
    apply_layer(tmp_path, io.BytesIO(tar((ok, b"y"), fmt=tarfile.GNU_FORMAT)),
                ApplyOptions(rootless=True))
    assert os.lstat(tmp_path / "g").st_mtime_ns == -1_000_000 * 1_000_000_000
