"""Memory, stack and disk amplification by tar headers (issue 8 item 12).

Each hostile stream is generated lazily (the test never holds it) and applied in a
fresh interpreter whose peak RSS is measured with getrusage: the layer must be refused
with UnsafeArchive, well under the bound, where the old code grew to gigabytes or died
with RecursionError. Sparse files must stay sparse when copied up for a hardlink.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from ociimg.errors import UnsafeArchive
from ociimg.layers import tarinfo
from ociimg.layers.apply import ApplyOptions, OnDiskFormat, apply_layer
from ociimg.layers.flatten import merge_snapshots
from tests.layerimage import apply_snapshots
from tests.tarbuild import H, tar

RSS_LIMIT = 200 << 20

# Runs in a child interpreter: builds the stream named by argv[1] chunk by chunk, applies
# it, prints {"error": class name, "message": ..., "maxrss": bytes}.
_CHILD = textwrap.dedent('''
    import io, json, sys, tarfile
    from ociimg.layers.apply import ApplyOptions, apply_layer

    BLOCK = 512

    def header(name, kind, size):
        info = tarfile.TarInfo(name)
        info.type, info.size, info.mtime = kind, size, 0
        return info.tobuf(tarfile.USTAR_FORMAT)

    def pad(n):
        return b"\\0" * (-n % BLOCK)

    def pax_record(key, value):
        body = f" {key}={value}\\n".encode()
        n = len(body) + len(str(len(body)))
        if len(str(n)) != len(str(len(body))):
            n += 1
        return str(n).encode() + body

    def global_headers(count, size):
        for i in range(count):
            key = f"comment{i}"
            value = "v" * (size - len(key) - 16)
            rec = pax_record(key, value)
            yield header("pax_global_header", tarfile.XGLTYPE, len(rec)) + rec + pad(len(rec))
        yield header("f", tarfile.REGTYPE, 0) + b"\\0" * 1024

    def sparse_map(entries):
        recs = b"".join(pax_record(k, v) for k, v in (
            ("GNU.sparse.major", "1"), ("GNU.sparse.minor", "0"),
            ("GNU.sparse.name", "sparse"), ("GNU.sparse.realsize", str(2 * entries))))
        yield header("PaxHeaders/sparse", tarfile.XHDTYPE, len(recs)) + recs + pad(len(recs))
        lines = 8 + 2 * entries * 9  # roughly: the map's text, then one byte per entry
        yield header("sparse", tarfile.REGTYPE, lines + entries)
        yield f"{entries}\\n".encode()
        chunk = []
        for i in range(entries):
            chunk.append(f"{2 * i}\\n1\\n")
            if len(chunk) == 4096:
                yield "".join(chunk).encode()
                chunk = []
        yield "".join(chunk).encode()
        yield b"\\0" * (1 << 20)

    class Stream(io.RawIOBase):
        def __init__(self, pieces):
            self.pieces, self.buf = pieces, b""
        def readable(self):
            return True
        def readinto(self, b):
            while not self.buf:
                self.buf = next(self.pieces, None)
                if self.buf is None:
                    self.buf = b""
                    return 0
            n = min(len(b), len(self.buf))
            b[:n] = self.buf[:n]
            self.buf = self.buf[n:]
            return n

    kind = sys.argv[1]
    pieces = global_headers(1000, 1 << 20) if kind == "globals" else sparse_map(10_000_000)
    out = {"error": None, "message": ""}
    try:
        apply_layer(sys.argv[2], io.BufferedReader(Stream(pieces), 1 << 16),
                    ApplyOptions(rootless=True))
    except Exception as exc:
        out = {"error": type(exc).__name__, "message": str(exc)[:300]}
    # VmHWM, not ru_maxrss: ru_maxrss survives execve, so a child of a big pytest process
    # starts with its parent's RSS; VmHWM belongs to this process's own address space.
    with open("/proc/self/status") as status:
        hwm = next(line for line in status if line.startswith("VmHWM:"))
    out["maxrss"] = int(hwm.split()[1]) * 1024
    print(json.dumps(out))
''')


@pytest.mark.parametrize("kind", ["globals", "sparse"])
def test_header_bombs_are_refused_in_bounded_memory(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-c", _CHILD, kind, str(root)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["error"] == "UnsafeArchive", out
    assert out["maxrss"] < RSS_LIMIT, out


def test_an_ordinary_global_header_still_applies(tmp_path: Path) -> None:
    """git archive writes one global header (comment=<commit>): well within the limit,
    and its records still reach every entry."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "0123456789abcdef" * 3}) as tf:
        for name in ("a", "b"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tf.addfile(info, io.BytesIO(b"x"))
    apply_layer(tmp_path, io.BytesIO(out.getvalue()), ApplyOptions(rootless=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def _chained(kind: str, count: int) -> bytes:
    head = b""
    for i in range(count):
        if kind == "pax":
            head += tarfile.TarInfo._create_pax_generic_header(  # type: ignore[attr-defined]
                {"path": f"p{i}"}, tarfile.XHDTYPE, "utf-8")
        else:
            head += tarfile.TarInfo._create_gnu_long_header(  # type: ignore[attr-defined]
                f"long{i}/" + "n" * 120, tarfile.GNUTYPE_LONGNAME, "utf-8", "strict")
    entry = tarfile.TarInfo("f")
    return head + entry.tobuf(tarfile.USTAR_FORMAT) + b"\0" * 1024


@pytest.mark.parametrize("kind", ["pax", "gnu"])
def test_chained_meta_headers_are_refused_without_recursion(tmp_path: Path, kind: str) -> None:
    with pytest.raises(UnsafeArchive, match="meta headers before one entry"):
        apply_layer(tmp_path, io.BytesIO(_chained(kind, 3000)), ApplyOptions(rootless=True))


def test_chained_meta_headers_share_one_size_budget(tmp_path: Path) -> None:
    """Each PAX header is parsed into a dict kept until the entry: 16 chained 1 MiB
    headers of short records would be hundreds of MB, so they share the 1 MiB."""
    records = {f"k{i:06d}": "" for i in range(25_000)}  # ~300 KB of records each
    head = b"".join(tarfile.TarInfo._create_pax_generic_header(  # type: ignore[attr-defined]
        records, tarfile.XHDTYPE, "utf-8") for _ in range(8))
    data = head + tarfile.TarInfo("f").tobuf(tarfile.USTAR_FORMAT) + b"\0" * 1024
    with pytest.raises(UnsafeArchive, match="meta headers before one entry exceed"):
        apply_layer(tmp_path, io.BytesIO(data), ApplyOptions(rootless=True))


@pytest.mark.parametrize("kind", ["pax", "gnu"])
def test_a_few_chained_meta_headers_still_apply(tmp_path: Path, kind: str) -> None:
    """Below the limit tarfile's semantics hold: the first name in the chain wins."""
    apply_layer(tmp_path, io.BytesIO(_chained(kind, getattr(tarinfo, "MAX_META_CHAIN", 16) - 1)),
                ApplyOptions(rootless=True))
    assert [p.name for p in tmp_path.iterdir()] == (["p0"] if kind == "pax" else ["long0"])


def _sparse_tar(realsize: int) -> bytes:
    """A PAX 0.1 sparse file: 5 bytes of data at offset 0, then holes to ``realsize``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("sparse")
        info.size, info.mode, info.mtime = 5, 0o644, 1_600_000_000
        info.pax_headers = {"GNU.sparse.map": "0,5", "GNU.sparse.size": str(realsize)}
        tf.addfile(info, io.BytesIO(b"hello"))
    return buf.getvalue()


def test_sparse_file_stays_sparse_when_copied_up_for_a_hardlink(tmp_path: Path) -> None:
    size = 256 << 20
    lower_tar = _sparse_tar(size)
    assert len(lower_tar) <= 10240  # one tar record
    dirs = apply_snapshots(tmp_path, [lower_tar, tar(H("link", "sparse"))], rootless=True)
    lower, upper = (os.stat(d / "sparse") for d in dirs)
    assert lower.st_size == upper.st_size == size
    assert upper.st_blocks * 512 <= max(lower.st_blocks * 512, 64 << 10)
    with open(dirs[1] / "link", "rb") as f:
        assert f.read(5) == b"hello"
        f.seek(size - 1)
        assert f.read() == b"\0"
    merged = tmp_path / "merged"
    merge_snapshots(dirs, merged, rootless=True)  # the flattened fallback copies too
    assert os.stat(merged / "link").st_blocks * 512 <= max(lower.st_blocks * 512, 64 << 10)
    assert os.stat(merged / "link").st_size == size


def test_sparse_maps_with_bad_numbers_are_header_errors(tmp_path: Path) -> None:
    for bad in ("0,x", "-1,5", "0,5,", " 1_0,5"):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            info = tarfile.TarInfo("s")
            info.size = 5
            info.pax_headers = {"GNU.sparse.map": bad, "GNU.sparse.size": "10"}
            tf.addfile(info, io.BytesIO(b"hello"))
        with pytest.raises(Exception) as err:
            apply_layer(tmp_path, io.BytesIO(buf.getvalue()),
                        ApplyOptions(OnDiskFormat.DIR, rootless=True))
        assert type(err.value).__name__ == "InvalidDocument", (bad, err.value)
