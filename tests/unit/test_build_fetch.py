"""ADD helpers (ociimg.build.fetch): archive detection and extraction, URL downloads
against a loopback HTTP server."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
from pathlib import Path

import pytest
import zstandard
from pytest_httpserver import HTTPServer
from werkzeug import Response

from ociimg.build.fetch import download, extract_archive, http_date_to_epoch, is_archive
from ociimg.errors import BuildError, DownloadFailed, UnsafeArchive
from tests.tarbuild import HOSTILE, D, F, L, tar, with_canary
from tests.treewalk import make_canary, tree_manifest

ARCHIVE = tar(D("pkg"), F("pkg/a", b"alpha"), L("pkg/l", "a"))
COMPRESSORS = {
    "plain": lambda b: b, "gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress,
    "zstd": zstandard.ZstdCompressor().compress,
}


# Dockerfile reference "ADD" ("Adding local tar archives"): identity, gzip, bzip2 and xz
# tars are unpacked (BuildKit also zstd); anything else, a compressed non-tar included,
# is copied as a file (moby archive.IsArchivePath: the first tar header must parse).
IS_ARCHIVE_ROWS = [
    *[(kind, compress(ARCHIVE), True) for kind, compress in COMPRESSORS.items()],
    ("gzip-text", gzip.compress(b"just text\n" * 100), False),
    ("xz-text", lzma.compress(b"just text\n" * 100), False),
    ("text", b"hello world\n" * 100, False),
    ("empty-tar", b"\0" * 10240, False),
    ("empty", b"", False),
    ("short", b"BZh", False),
    ("truncated-gzip", gzip.compress(ARCHIVE)[:20], False),
]


@pytest.mark.parametrize(("name", "data", "expected"), IS_ARCHIVE_ROWS,
                         ids=[r[0] for r in IS_ARCHIVE_ROWS])
def test_is_archive(tmp_path: Path, name: str, data: bytes, expected: bool) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    assert is_archive(path) is expected


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_extract_archive_merges_into_dest(tmp_path: Path, kind: str) -> None:
    src = tmp_path / "a.tar"
    src.write_bytes(COMPRESSORS[kind](ARCHIVE))
    dest = tmp_path / "dest"
    (dest / "pkg").mkdir(parents=True)
    (dest / "pkg" / "old").write_text("kept")
    assert extract_archive(src, dest) == 3
    assert (dest / "pkg" / "a").read_bytes() == b"alpha"
    assert os.readlink(dest / "pkg" / "l") == "a"
    assert (dest / "pkg" / "old").read_text() == "kept"   # tar -x merges


@pytest.mark.parametrize("case", sorted(k for k, layers in HOSTILE.items() if len(layers) == 1))
def test_hostile_archive_never_escapes(tmp_path: Path, case: str) -> None:
    canary = make_canary(tmp_path)
    before = tree_manifest(canary)
    src = tmp_path / "evil.tar.gz"
    src.write_bytes(gzip.compress(with_canary(HOSTILE[case][0], canary)))
    dest = tmp_path / "dest"
    dest.mkdir()
    try:
        extract_archive(src, dest)
    except (UnsafeArchive, BuildError):
        pass
    assert tree_manifest(canary) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["canary", "dest", "evil.tar.gz"]


def test_extract_archive_entry_count_is_bounded(tmp_path: Path) -> None:
    src = tmp_path / "many.tar.xz"
    src.write_bytes(lzma.compress(tar(*(F(f"f{i}") for i in range(200)))))
    (tmp_path / "dest").mkdir()
    with pytest.raises(UnsafeArchive, match="ADD many.tar.xz: .*more than 50 entries"):
        extract_archive(src, tmp_path / "dest", max_entries=50)


def test_extract_corrupt_archive_is_one_clear_error(tmp_path: Path) -> None:
    src = tmp_path / "bad.tar.gz"
    src.write_bytes(gzip.compress(ARCHIVE)[:-30])
    (tmp_path / "dest").mkdir()
    with pytest.raises(BuildError, match="ADD bad.tar.gz"):
        extract_archive(src, tmp_path / "dest")


# Reference "ADD" (remote URLs): the file gets mode 600 and the Last-Modified mtime.
LAST_MODIFIED = "Wed, 21 Oct 2015 07:28:00 GMT"


def test_download_sets_last_modified(tmp_path: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/f").respond_with_data(b"payload",
                                                      headers={"Last-Modified": LAST_MODIFIED})
    path, mtime = download(httpserver.url_for("/f"), tmp_path / "f")
    assert path.read_bytes() == b"payload"
    assert mtime == 1445412480 == int(os.stat(path).st_mtime)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["f"]


def test_download_without_last_modified(tmp_path: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/f").respond_with_data(b"x")
    assert download(httpserver.url_for("/f"), tmp_path / "f")[1] is None


def test_download_follows_a_few_redirects(tmp_path: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/a").respond_with_data("", status=302, headers={"Location": "/b"})
    httpserver.expect_request("/b").respond_with_data("", status=301, headers={"Location": "/c"})
    httpserver.expect_request("/c").respond_with_data(b"end")
    assert download(httpserver.url_for("/a"), tmp_path / "f")[0].read_bytes() == b"end"


@pytest.mark.parametrize(("setup", "message"), [
    ("404", "HTTP 404"),
    ("loop", "more than 10 redirects"),
    ("to-file", "ADD http"),
    ("declared-too-big", "bytes is more than"),
    ("streamed-too-big", "more than the 1000 bytes allowed"),
])
def test_download_failures_leave_nothing(tmp_path: Path, httpserver: HTTPServer, setup: str,
                                         message: str) -> None:
    if setup == "404":
        httpserver.expect_request("/f").respond_with_data("gone", status=404)
    elif setup == "loop":
        httpserver.expect_request("/f").respond_with_data("", status=302,
                                                          headers={"Location": "/f"})
    elif setup == "to-file":
        httpserver.expect_request("/f").respond_with_data(
            "", status=302, headers={"Location": "file:///etc/passwd"})
    elif setup == "declared-too-big":
        httpserver.expect_request("/f").respond_with_data(b"x" * 2000)
    else:
        httpserver.expect_request("/f").respond_with_response(
            Response((b"x" * 100 for _ in range(50)), direct_passthrough=True))
    with pytest.raises(DownloadFailed, match=message):
        download(httpserver.url_for("/f"), tmp_path / "f", max_bytes=1000)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "/etc/passwd"])
def test_download_refuses_other_schemes(tmp_path: Path, url: str) -> None:
    with pytest.raises(DownloadFailed, match="only http"):
        download(url, tmp_path / "f")


@pytest.mark.parametrize(("value", "expected"), [
    (LAST_MODIFIED, 1445412480),
    ("Wed, 21 Oct 2015 09:28:00 +0200", 1445412480),
    (None, None), ("", None), ("yesterday", None),
])
def test_http_date(value: str | None, expected: int | None) -> None:
    assert http_date_to_epoch(value) == expected
