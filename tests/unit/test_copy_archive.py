"""copy between layouts and archives (issue 8, items 12 and 15): an image missing a
blob is never tagged, an ``oci-archive:`` is read in place (nothing extracted to
$TMPDIR, no sparse or bomb member expanded), and a truncated archive is a one-line
error with exit 1."""

from __future__ import annotations

import gzip
import io
import os
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from ociimg import spec
from ociimg.errors import BlobUnknown, InvalidDocument, UnsafeArchive
from ociimg.reference import LayoutReference, parse_reference
from ociimg.registry import CopyOptions, copy
from ociimg.registry.archive import LayoutArchive
from ociimg.store import Store

ALL = CopyOptions(all_platforms=True)
REPO = Path(__file__).resolve().parents[2]


def oci(path: Path, tag: str | None) -> LayoutReference:
    return LayoutReference("oci", path, tag)


def archive(path: Path, tag: str | None) -> LayoutReference:
    return LayoutReference("oci-archive", path, tag)


def run_copy(src: str, dst: str, tmp_path: Path, *, fsize: int | None = None
             ) -> subprocess.CompletedProcess[str]:
    """``ociimg copy`` as a user runs it; ``fsize`` caps any file it writes (RLIMIT_FSIZE)."""
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir(exist_ok=True)
    env = {**os.environ, "OCIIMG_ROOT": str(tmp_path / "root"), "TMPDIR": str(tmpdir),
           "PYTHONPATH": str(REPO)}

    def limit() -> None:
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    return subprocess.run([sys.executable, "-m", "ociimg", "copy", "-q", src, dst], env=env,
                          text=True, capture_output=True, timeout=120, preexec_fn=limit)


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("hint:")]
    assert len(lines) == 1 and lines[0].startswith("ociimg: error:"), proc.stderr
    for needle in needles:
        assert needle in lines[0], proc.stderr


@pytest.fixture
def layout(fixture_layout, tmp_path) -> Path:
    dest = tmp_path / "src"
    shutil.copytree(fixture_layout, dest)
    return dest


def a_layer(store: Store, tag: str) -> spec.Descriptor:
    manifest = store.read_manifest(store.resolve(tag))
    assert isinstance(manifest, spec.Manifest)
    return manifest.layers[-1]


# Item 15: a missing blob is never tagged --------------------------------------------
def test_copy_of_layout_missing_a_layer_tags_nothing(layout, tmp_path):
    layer = a_layer(Store(layout), "multilayer")
    os.unlink(Store(layout).blob_path(layer.digest))
    dest = tmp_path / "dest"
    with pytest.raises(BlobUnknown, match=f"layer blob {layer.digest} is missing"):
        copy(oci(layout, "multilayer"), oci(dest, "x"), ALL)
    assert not (dest / "index.json").exists() or Store(dest).refs() == []
    blobs = list((dest / "blobs").rglob("*")) if dest.exists() else []
    assert [b for b in blobs if b.is_file()] == []  # checked before anything was written


def test_copy_cli_missing_layer_is_one_line_and_exit_1(layout, tmp_path):
    layer = a_layer(Store(layout), "multilayer")
    os.unlink(Store(layout).blob_path(layer.digest))
    store_dir = tmp_path / "root" / "store"
    proc = run_copy(f"oci:{layout}:multilayer", f"oci:{store_dir}:broken", tmp_path)
    one_line_error(proc, str(layer.digest), "missing")
    assert Store(store_dir).refs() == [] if (store_dir / "index.json").exists() else True


def test_copy_of_index_missing_a_platform_manifest_tags_nothing(layout, tmp_path):
    store = Store(layout)
    index = store.read_manifest(store.resolve("multiarch"))
    assert isinstance(index, spec.Index)
    child = index.manifests[-1]
    os.unlink(store.blob_path(child.digest))
    with pytest.raises(BlobUnknown, match=f"manifest blob {child.digest} is missing"):
        copy(oci(layout, "multiarch"), archive(tmp_path / "out.tar", "x"), ALL)
    assert not (tmp_path / "out.tar").exists()


def test_copy_to_a_registry_checks_before_connecting(layout):
    layer = a_layer(Store(layout), "multilayer")
    os.unlink(Store(layout).blob_path(layer.digest))
    nowhere = parse_reference("127.0.0.1:9/x/y:z")  # nothing listens: never reached
    with pytest.raises(BlobUnknown, match=str(layer.digest)):
        copy(oci(layout, "multilayer"), nowhere, ALL)


def test_missing_config_named(layout, tmp_path):
    store = Store(layout)
    manifest = store.read_manifest(store.resolve("busybox"))
    os.unlink(store.blob_path(manifest.config.digest))  # type: ignore[union-attr]
    with pytest.raises(BlobUnknown, match="config blob"):
        copy(oci(layout, "busybox"), oci(tmp_path / "d", "x"), ALL)


# Item 12: archives read in place ------------------------------------------------------------
def test_archive_round_trip_keeps_digests(layout, tmp_path):
    tar = tmp_path / "img.tar"
    copy(oci(layout, "multiarch"), archive(tar, "m"), ALL)
    copy(oci(layout, "busybox"), archive(tar, "b"), ALL)  # added to the existing archive
    out = tmp_path / "out"
    copy(archive(tar, "m"), oci(out, "m"), ALL)
    copy(archive(tar, "b"), oci(out, "b"), ALL)
    want = {n: d.digest for n, d in Store(layout).refs()}
    got = {n: d.digest for n, d in Store(out).refs()}
    assert got == {"m": want["multiarch"], "b": want["busybox"]}
    assert Store(out).fsck() == []
    gz = tmp_path / "img.tar.gz"
    with open(tar, "rb") as f, gzip.open(gz, "wb") as g:
        shutil.copyfileobj(f, g)
    copy(archive(gz, "m"), oci(tmp_path / "fromgz", "m"), ALL)
    assert Store(tmp_path / "fromgz").resolve("m").digest == want["multiarch"]


def test_archive_is_never_extracted_to_tmpdir(layout, tmp_path, monkeypatch):
    tar = tmp_path / "img.tar"
    copy(oci(layout, "busybox"), archive(tar, "b"), ALL)
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    seen: list[str] = []
    real = tempfile.mkdtemp

    def spy(*args, **kwargs):
        path = real(*args, **kwargs)
        seen.append(path)
        return path
    monkeypatch.setattr(tempfile, "mkdtemp", spy)
    copy(archive(tar, "b"), oci(tmp_path / "out", "b"), ALL)
    assert [p for p in seen if p.startswith(str(tmpdir))] == []


class Zeros(io.RawIOBase):
    """``size`` zero bytes, generated as read (a bomb without holding it in memory)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def __len__(self) -> int:
        return self.size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.size)
        buffer[:n] = bytes(n)
        self.size -= n
        return n


def add_member(tar: tarfile.TarFile, name: str, data: bytes | Zeros,
               pax: dict[str, str] | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    if pax:
        info.pax_headers = pax
    tar.addfile(info, data if isinstance(data, Zeros) else io.BytesIO(data))


def rewrite(src: Path, dest: Path,
            extra: list[tuple[str, bytes | Zeros, dict[str, str] | None]],
            opener=open) -> None:
    """``src`` archive's members, then ``extra`` ones, into ``dest`` (gzip with opener)."""
    with tarfile.open(src) as old, opener(dest, "wb") as raw, \
            tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as new:
        for member in old:
            new.addfile(member, old.extractfile(member))
        for name, data, pax in extra:
            add_member(new, name, data, pax)


def test_sparse_member_is_refused_not_expanded(layout, tmp_path):
    """A PAX sparse member of 256 MiB described in a few bytes: tarfile would expand
    its hole on extraction."""
    tar = tmp_path / "img.tar"
    copy(oci(layout, "busybox"), archive(tar, "b"), ALL)
    hostile = tmp_path / "sparse.tar"
    rewrite(tar, hostile, [("blobs/sha256/" + "e" * 64, b"x",
                            {"GNU.sparse.major": "0", "GNU.sparse.minor": "1",
                             "GNU.sparse.name": "blobs/sha256/" + "e" * 64,
                             "GNU.sparse.realsize": str(256 << 20),
                             "GNU.sparse.map": f"{(256 << 20) - 1},1"})])
    with pytest.raises(UnsafeArchive, match="sparse"):
        copy(archive(hostile, "b"), oci(tmp_path / "out", "b"), ALL)


def test_compressed_bomb_member_writes_nothing(layout, tmp_path):
    """A gzip archive with an unreferenced 256 MiB member of zeros (~250 KiB packed):
    the copy writes only the image's blobs, never that member (files capped at 32 MiB)."""
    tar = tmp_path / "img.tar"
    copy(oci(layout, "busybox"), archive(tar, "b"), ALL)
    bomb = tmp_path / "bomb.tar.gz"
    rewrite(tar, bomb, [("blobs/sha256/" + "f" * 64, Zeros(256 << 20), None)],
            opener=lambda p, m: gzip.open(p, m, compresslevel=1))
    assert bomb.stat().st_size < 4 << 20
    proc = run_copy(f"oci-archive:{bomb}:b", f"oci:{tmp_path / 'out'}:b", tmp_path,
                    fsize=32 << 20)
    assert proc.returncode == 0, proc.stderr
    assert Store(tmp_path / "out").fsck() == []
    assert list((tmp_path / "tmpdir").iterdir()) == []


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_archive_is_one_line_exit_1(layout, tmp_path, compress):
    tar = tmp_path / "img.tar"
    copy(oci(layout, "multilayer"), archive(tar, "m"), ALL)
    data = tar.read_bytes()
    if compress:
        data = gzip.compress(data, compresslevel=1)
    cut = tmp_path / ("cut.tar.gz" if compress else "cut.tar")
    cut.write_bytes(data[: len(data) * 2 // 3])
    proc = run_copy(f"oci-archive:{cut}:m", f"oci:{tmp_path / 'out'}:m", tmp_path)
    one_line_error(proc, str(cut), "truncated")


def test_fifo_archive_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "img.tar"
    os.mkfifo(fifo)
    proc = run_copy(f"oci-archive:{fifo}", f"oci:{tmp_path / 'out'}:x", tmp_path)
    one_line_error(proc, "not a regular file")


@pytest.mark.parametrize("name, kind", [("../../etc/passwd", tarfile.REGTYPE),
                                        ("blobs/sha256/" + "a" * 64, tarfile.SYMTYPE),
                                        ("blobs/sha256/" + "a" * 64, tarfile.LNKTYPE),
                                        ("evil", tarfile.CHRTYPE)])
def test_non_layout_entries_are_refused(tmp_path, name, kind):
    path = tmp_path / "bad.tar"
    with tarfile.open(path, "w") as tar:
        add_member(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = "/etc/shadow" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
        tar.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    with pytest.raises(UnsafeArchive, match="unexpected entry"):
        LayoutArchive(path)


def test_huge_extended_header_is_refused_before_reading_it(tmp_path):
    path = tmp_path / "pax.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        add_member(tar, "oci-layout", b"{}", {"comment": "x" * (1 << 20)})
    with pytest.raises(UnsafeArchive, match="extended header"):
        LayoutArchive(path)


def test_duplicate_member_is_refused(tmp_path):
    path = tmp_path / "dup.tar"
    with tarfile.open(path, "w") as tar:
        add_member(tar, "index.json", b"{}")
        add_member(tar, "index.json", b"{}")
    with pytest.raises(UnsafeArchive, match="twice"):
        LayoutArchive(path)


def test_garbage_is_one_line(tmp_path):
    path = tmp_path / "junk.tar"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(InvalidDocument):
        LayoutArchive(path)


def test_adding_to_an_archive_does_not_carry_unreferenced_members(layout, tmp_path):
    """An existing destination archive padded with a 64 MiB unreferenced member (gzip:
    ~64 KiB): the rewritten archive holds the images, not the padding."""
    tar = tmp_path / "img.tar"
    copy(oci(layout, "busybox"), archive(tar, "b"), ALL)
    padded = tmp_path / "padded.tar.gz"
    rewrite(tar, padded, [("blobs/sha256/" + "f" * 64, Zeros(64 << 20), None)],
            opener=lambda p, m: gzip.open(p, m, compresslevel=1))
    copy(oci(layout, "multilayer"), archive(padded, "m"), ALL)
    with tarfile.open(padded) as result:
        names = result.getnames()
    assert "blobs/sha256/" + "f" * 64 not in names
    assert padded.stat().st_size < 16 << 20
    out = tmp_path / "out"
    copy(archive(padded, "b"), oci(out, "b"), ALL)
    copy(archive(padded, "m"), oci(out, "m"), ALL)
    assert Store(out).fsck() == []
