"""Tars built in code for the layer tests: one-line entry builders, the hostile layers that
must never write outside the root, and archives that exercise the tar header reader."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from ociimg.layers import paths
from tests.conftest import need

MTIME = 1_600_000_000
UID, GID = os.geteuid(), os.getegid()
RESOLVERS = ["walk", "openat2"]


def need_resolver(resolver: str) -> None:
    """Skip (strict mode: fail) a case for the openat2 resolver on a kernel without it."""
    if resolver == "openat2":
        need(paths.HAVE_OPENAT2, "openat2 (Linux >= 5.6) not available")


def make_info(name: str, kind: bytes, mode: int, **kw) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = kw.pop("mtime", MTIME)
    info.uid = kw.pop("uid", UID)
    info.gid = kw.pop("gid", GID)
    xattrs = kw.pop("xattrs", None)
    if xattrs:
        info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
    for key, value in kw.items():
        setattr(info, key, value)
    return info


def F(name: str, data: bytes = b"", mode: int = 0o644, **kw):
    info = make_info(name, tarfile.REGTYPE, mode, **kw)
    info.size = len(data)
    return info, data


def D(name: str, mode: int = 0o755, **kw):
    return make_info(name, tarfile.DIRTYPE, mode, **kw), None


def L(name: str, target: str, **kw):
    return make_info(name, tarfile.SYMTYPE, 0o777, linkname=target, **kw), None


def H(name: str, target: str, **kw):
    return make_info(name, tarfile.LNKTYPE, 0o644, linkname=target, **kw), None


def DEV(name: str, kind: bytes = tarfile.CHRTYPE, major: int = 1, minor: int = 3, **kw):
    return make_info(name, kind, 0o666, devmajor=major, devminor=minor, **kw), None


def tar(*members, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


# Layers that try to write outside the root; CANARY stands for the canary directory's
# absolute path (the test substitutes it).
HOSTILE = {
    "dotdot": [tar(F("../canary/secret", b"pwned"))],
    "dotdot-nested": [tar(F("a/../../canary/secret", b"pwned"))],
    "absolute-name": [tar(F("/canary/secret", b"pwned"))],
    "abs-symlink-parent": [tar(L("evil", "CANARY"), F("evil/secret", b"pwned"))],
    "rel-symlink-parent": [tar(L("evil", "../../canary"), F("evil/secret", b"pwned"))],
    "symlink-next-layer": [tar(L("evil", "CANARY")), tar(F("evil/secret", b"pwned"))],
    "symlink-chain": [tar(D("sub"), L("sub/parent", ".."),
                          F("sub/parent/parent/parent/canary/secret", b"pwned"))],
    "symlink-chain-layers": [tar(D("a"), L("a/up", "../..")),
                             tar(L("b", "a/up/a/up/canary"), F("b/sub/file", b"pwned"))],
    "final-symlink-overwritten": [tar(L("f", "CANARY/secret")), tar(F("f", b"pwned"))],
    "hardlink-dotdot": [tar(H("l", "../canary/secret"))],
    "hardlink-through-symlink": [tar(L("evil", "CANARY"), H("l", "evil/secret"),
                                     F("l", b"pwned"))],
    "hardlink-abs": [tar(H("l", "CANARY/secret"))],
    "whiteout-through-symlink": [tar(L("evil", "CANARY")), tar(F("evil/.wh.secret"))],
    "opaque-through-symlink": [tar(L("evil", "CANARY")), tar(F("evil/.wh..wh..opq"))],
    "whiteout-dotdot": [tar(F("../canary/.wh.secret"))],
    "root-symlink": [tar(L(".", "CANARY"), F("secret", b"pwned"))],
    "symlink-loop": [tar(L("a", "b"), L("b", "a"), F("a/x", b"x"))],
    "dir-over-abs-symlink": [tar(L("d", "CANARY/sub")), tar(D("d"), F("d/file", b"pwned"))],
}


def with_canary(data: bytes, canary: Path) -> bytes:
    """A HOSTILE tar rebuilt with CANARY replaced by the canary dir's absolute path."""
    src = tarfile.open(fileobj=io.BytesIO(data))
    members = []
    for info in src.getmembers():
        info.name = info.name.replace("CANARY", str(canary))
        info.linkname = info.linkname.replace("CANARY", str(canary))
        content = src.extractfile(info).read() if info.isreg() else None  # type: ignore[union-attr]
        members.append((info, content))
    return tar(*members)


def pax_archives() -> list[bytes]:
    """Tars whose PAX records exercise the layer reader's record splitter."""
    def build(*members: tuple[tarfile.TarInfo, bytes], **kw) -> bytes:  # type: ignore[no-untyped-def]
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, **kw) as tf:
            for info, data in members:
                info.size = len(data) if info.isreg() else 0
                tf.addfile(info, io.BytesIO(data))
        return out.getvalue()

    def member(name: str, **pax: str) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.mtime = 1_700_000_000.25
        info.pax_headers = pax
        return info

    link = member("l", **{"SCHILY.xattr.user.a": "x=y\nz"})
    link.type, link.linkname = tarfile.SYMTYPE, "t/" + "ä" * 80
    archives = [
        build((member("é/" + "n" * 150), b"data"), (link, b""),
              (member("s", comment="", **{"SCHILY.xattr.security.capability": "\x01\x02"}), b"")),
        build((member("g"), b"1"), pax_headers={"comment": "global", "uname": "u"}),
    ]
    raw = build((member("size", size="3"), b"abc"))
    records = b"20 hdrcharset=BINARY\n" + b"14 path=\xff\xfe\n" + b"\0" * 10
    header = tarfile.TarInfo("././@PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, len(records)
    body = header.tobuf(tarfile.USTAR_FORMAT) + records.ljust(512, b"\0")
    archives += [raw, body + tarfile.TarInfo("x").tobuf(tarfile.USTAR_FORMAT) + b"\0" * 1024,
                 body.replace(b"14 path", b"0 path=") + b"\0" * 1024]
    return archives


def layer_tars(layout: Path) -> list[bytes]:
    """The uncompressed ustar layers of an OCI layout (the fixture images' layers)."""
    import gzip

    import zstandard
    out = []
    for blob in sorted((layout / "blobs" / "sha256").iterdir()):
        data = blob.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        elif data[:4] == b"\x28\xb5\x2f\xfd":
            data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
        if len(data) >= 1024 and data[257:262] == b"ustar":
            out.append(data)
    return out


def pax_size_archive() -> bytes:
    """A PAX ``size`` record that differs from the ustar size field (as for files over
    8 GiB): the next header is found after the PAX size."""
    info = tarfile.TarInfo("big")
    info.size, info.pax_headers = 700, {"size": "700"}
    data = bytearray(tar((info, b"z" * 700), F("after", b"ok")))
    assert data[1024 + 156:1024 + 157] == tarfile.REGTYPE
    data[1024 + 124:1024 + 136] = b"%011o\0" % 0
    data[1024 + 148:1024 + 156] = b"        "
    data[1024 + 148:1024 + 156] = b"%06o\0 " % sum(data[1024:1536])
    return bytes(data)
