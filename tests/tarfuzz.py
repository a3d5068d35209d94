"""The tar header fuzzer: seeded, bounded mutations of a small corpus of layer tars (PAX,
GNU long names, global headers, sparse maps, xattrs, links, devices), each applied in both
on-disk formats into a fresh dir; only an OciimgError or success may come out."""

from __future__ import annotations

import io
import random
import subprocess
import tarfile
import time
from pathlib import Path

from ociimg.errors import OciimgError
from ociimg.fsutil import remove_tree
from ociimg.layers.apply import ApplyOptions, OnDiskFormat, apply_layer
from tests.tarbuild import DEV, D, F, H, L, pax_archives, tar

SEED = 20261207
BUDGET_S = 4.0
MAX_CASES = 3000
_BLOCK = 512


def pax_file(name: str, data: bytes = b"x", **records: str) -> tuple[tarfile.TarInfo, bytes]:
    info, data = F(name, data)
    info.pax_headers = dict(records)
    return info, data


def _with_global(comment: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": comment}) as tf:
        info = tarfile.TarInfo("g")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"gg"))
    return out.getvalue()


def _sparse_pax01() -> bytes:
    info, data = pax_file("s", b"hello", **{"GNU.sparse.map": "0,5,4096,0",
                                            "GNU.sparse.size": "8192"})
    return tar((info, data))


def _gnu_tar_sparse(tmp: Path) -> list[bytes]:
    src = tmp / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.seek(1 << 16)
        f.write(b"data")
    out = []
    for fmt in ("oldgnu", "pax"):
        dest = tmp / f"{fmt}.tar"
        try:
            subprocess.run(["tar", f"--format={fmt}", "--sparse", "-cf", dest, "-C", src,
                            "sparse"], check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError):
            continue  # no GNU tar: the corpus just has fewer sparse members
        out.append(dest.read_bytes())
    return out


def corpus(tmp: Path) -> list[bytes]:
    long = "l/" * 60 + "f"
    return [
        tar(D("etc"), F("etc/passwd", b"root:x:0:0\n"), L("etc/sh", "/bin/busybox"),
            H("etc/hl", "etc/passwd"), DEV("dev/null"), F("etc/.wh.gone"),
            F("etc/.wh..wh..opq")),
        tar(F(long, b"long name"), L("ln", long), fmt=tarfile.GNU_FORMAT),
        tar(pax_file("x", b"xattr", **{"SCHILY.xattr.user.k": "v", "mtime": "1.5"}),
            pax_file("p" * 150, b"pax path"), fmt=tarfile.PAX_FORMAT),
        tar(F("u/" * 40 + "name", b"ustar prefix"), fmt=tarfile.USTAR_FORMAT),
        _with_global("a commit id"),
        _sparse_pax01(),
        *pax_archives()[:6],
        *_gnu_tar_sparse(tmp),
    ]


def _header_offsets(data: bytes) -> list[int]:
    """Offsets of the header blocks (ustar magic), where mutations matter most."""
    return [o for o in range(0, len(data) - _BLOCK + 1, _BLOCK)
            if data[o + 257:o + 262] == b"ustar"] or [0]


def _fix_checksum(data: bytearray, at: int) -> None:
    data[at + 148:at + 156] = b"        "
    data[at + 148:at + 156] = b"%06o\0 " % sum(data[at:at + _BLOCK])


_NUMERIC = [(100, 8), (108, 8), (116, 8), (124, 12), (136, 12), (329, 8), (337, 8)]
_BAD_NUMBERS = [b"99999999999\0", b"\x80" + b"\xff" * 11, b"\xff" * 12, b"0x12\0", b"-1\0",
                b"\x807" + b"\0" * 10, b"7" * 12, b"\0" * 12, b" 1 2 3\0"]
_PAX_RECORDS = [b"999999 path=x\n", b"0 path=\n", b"5 a=b\n", b"12 path=a\0b\n",
                b"16 linkpath=\0x\n", b"27 SCHILY.xattr.us\0er=v\n", b"19 SCHILY.xattr.=v\n",
                b"30 GNU.sparse.map=1,2,3,x\n", b"22 GNU.sparse.size=z\n", b"9 size=\n",
                b"13 mtime=nan\n", b"11 uid=-5\n", b"20 path=" + b"\xff" * 11 + b"\n",
                b"x path=a\n", b"18446744073709551617 k=v\n"]


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    if len(buf) < _BLOCK:
        return bytes(buf + bytes(rng.randrange(256) for _ in range(rng.randrange(64))))
    at = rng.choice(_header_offsets(data))
    kind = rng.randrange(6)
    if kind == 0:  # random byte flips in one header block
        for _ in range(rng.randint(1, 8)):
            buf[at + rng.randrange(_BLOCK)] = rng.randrange(256)
    elif kind == 1:  # truncation
        return bytes(buf[:rng.randrange(len(buf))])
    elif kind == 2:  # a huge or malformed number, checksum kept valid
        off, width = rng.choice(_NUMERIC)
        value = rng.choice(_BAD_NUMBERS)[:width].ljust(width, b"\0")
        buf[at + off:at + off + width] = value
        _fix_checksum(buf, at)
    elif kind == 3:  # a bad PAX record in (or as) an extended header's data
        rec = rng.choice(_PAX_RECORDS)
        if buf[at + 156:at + 157] in (b"x", b"g") and len(buf) >= at + 2 * _BLOCK:
            pos = at + _BLOCK + rng.randrange(64)
            buf[pos:pos + len(rec)] = rec
        else:
            buf[at + 156:at + 157] = b"x"
            buf[at + 124:at + 136] = b"%011o\0" % len(rec)
            _fix_checksum(buf, at)
            buf[at + _BLOCK:at + _BLOCK + len(rec)] = rec
    elif kind == 4:  # another type flag
        buf[at + 156] = rng.choice(b"0125679xgKLSVAD\0")
        _fix_checksum(buf, at)
    else:  # a NUL or odd byte in the name / link name fields
        field = rng.choice((0, 157, 345))
        buf[at + field + rng.randrange(20)] = rng.choice((0, 0x2f, 0x2e, 0xff, 0x0a))
        _fix_checksum(buf, at)
    return bytes(buf)


def run_fuzz(tmp_path: Path, *, rootless: bool, budget_s: float = BUDGET_S) -> None:
    """Apply mutants until the budget runs out; only OciimgError may come out."""
    rng = random.Random(SEED)
    seeds = corpus(tmp_path)
    # A lower snapshot to stack on: whiteouts, opaque dirs, copy-ups and implicit
    # parents then meet real lower entries.
    lower = tmp_path / "lower"
    lower.mkdir()
    apply_layer(lower, io.BytesIO(seeds[0]), ApplyOptions(OnDiskFormat.OVERLAY,
                                                          rootless=rootless, lowers=()))
    layouts = [(OnDiskFormat.DIR, None), (OnDiskFormat.OVERLAY, None),
               (OnDiskFormat.OVERLAY, (lower,))]
    deadline = time.monotonic() + budget_s
    failures: list[str] = []
    cases = 0
    while time.monotonic() < deadline and cases < MAX_CASES:
        base = rng.randrange(len(seeds))
        data = seeds[base]
        for _ in range(rng.randint(1, 3)):
            data = mutate(data, rng)
        fmt, lowers = rng.choice(layouts)
        root = tmp_path / f"case{cases}"
        root.mkdir()
        try:
            apply_layer(root, io.BytesIO(data),
                        ApplyOptions(fmt, rootless=rootless, lowers=lowers))
        except OciimgError:
            pass
        except Exception as exc:  # noqa: BLE001 - the point of the test
            failures.append(f"case {cases} (seed corpus #{base}, {fmt.value}, "
                            f"{'on a lower' if lowers else 'alone'}): "
                            f"{type(exc).__name__}: {str(exc)[:200]}")
        remove_tree(root)
        cases += 1
    assert cases >= 50, "the fuzz budget ran out before 50 cases"
    assert failures == [], "\n".join(failures[:20])
