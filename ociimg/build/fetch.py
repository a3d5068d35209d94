"""What ADD needs besides copying: local archives (detected and extracted) and URLs.

Dockerfile reference, "ADD": a *local* tar archive in a recognised compression
(identity, gzip, bzip2, xz; BuildKit also reads zstd) is unpacked into the destination
as ``tar -x`` would; a file that is not a tar is copied as it is; a URL is downloaded,
never unpacked (moby#11061), its mtime taken from ``Last-Modified``.

Extraction goes through the layer applier (``ociimg.layers.apply``), so the hostile-tar
rules of image layers hold here too: nothing is written outside the destination
(``..``, absolute names, symlinked parents, hardlinks out), entry counts and sizes are
bounded.
"""

from __future__ import annotations

import bz2
import calendar
import email.utils
import io
import lzma
import os
import tarfile
from pathlib import Path
from typing import BinaryIO

from ociimg import spec
from ociimg.errors import BuildError, DownloadFailed, InvalidDocument, UnsafeArchive
from ociimg.layers.apply import ApplyOptions, apply_layer
from ociimg.layers.compression import DECOMPRESSION_ERRORS, open_decompressed

__all__ = ["open_archive", "is_archive", "extract_archive", "download", "MAX_DOWNLOAD_BYTES"]

BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"
MAX_DOWNLOAD_BYTES = 8 << 30
MAX_REDIRECTS = 10
# InvalidDocument: the layer reader's "corrupt or truncated stream".
_ARCHIVE_ERRORS = (*DECOMPRESSION_ERRORS, lzma.LZMAError, OSError, tarfile.TarError,
                   InvalidDocument)


def open_archive(stream: BinaryIO) -> BinaryIO:
    """A reader of the tar inside ``stream``: plain, gzip, bzip2, xz or zstd, by magic."""
    buffered = stream if hasattr(stream, "peek") else io.BufferedReader(stream)  # type: ignore[arg-type]
    head = buffered.peek(len(XZ_MAGIC))[:len(XZ_MAGIC)]  # type: ignore[attr-defined]
    if head.startswith(BZIP2_MAGIC):
        return bz2.BZ2File(buffered)  # type: ignore[return-value]
    if head.startswith(XZ_MAGIC):
        return lzma.LZMAFile(buffered)  # type: ignore[return-value]
    return open_decompressed(buffered, spec.OCI_LAYER, "archive")


def is_archive(path: Path) -> bool:
    """Would ADD unpack this local file? Its (decompressed) start is a valid tar header.

    Docker's test (moby ``archive.IsArchivePath``): the first header of the
    decompressed stream must parse; an empty tar or a compressed non-tar is copied.
    """
    try:
        with open(path, "rb") as raw:
            head = _read_exactly(open_archive(raw), tarfile.BLOCKSIZE)
    except _ARCHIVE_ERRORS:
        return False
    if len(head) < tarfile.BLOCKSIZE:
        return False
    try:
        tarfile.TarInfo.frombuf(head, tarfile.ENCODING, "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    out = b""
    while len(out) < n and (chunk := stream.read(n - len(out))):
        out += chunk
    return out


def extract_archive(path: Path, dest_dir: Path, *, max_entries: int = 1_000_000,
                    max_bytes: int | None = None, label: str | None = None) -> int:
    """Unpack the local archive ``path`` into the existing dir ``dest_dir``; entry count.

    Entries merge with what is there (a file replaces a file, dirs are kept), as ``tar
    -x`` does; the layer applier keeps every write inside ``dest_dir``.
    """
    options = ApplyOptions(max_entries=max_entries, max_file_bytes=max_bytes)
    try:
        with open(path, "rb") as raw:
            return apply_layer(dest_dir, open_archive(raw), options).entries
    except UnsafeArchive as exc:
        raise UnsafeArchive(f"ADD {label or path.name}: {exc.message}", hint=exc.hint) from exc
    except _ARCHIVE_ERRORS as exc:
        raise BuildError(f"ADD {label or path.name}: cannot extract the archive: {exc}") \
            from exc


def http_date_to_epoch(value: str | None) -> int | None:
    """``Last-Modified`` → seconds since the epoch (None when absent or malformed)."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_tz(value)
    except (TypeError, ValueError):
        return None
    if parsed is None:
        return None
    return calendar.timegm(parsed[:9]) - (parsed[9] or 0)


def download(url: str, dest: Path, *, max_bytes: int = MAX_DOWNLOAD_BYTES,
             timeout: float = 60.0) -> tuple[Path, int | None]:
    """Fetch ``url`` (http/https) into the new file ``dest``: (dest, Last-Modified mtime).

    The body goes to a temp file beside ``dest`` renamed into place only when complete
    and within ``max_bytes``, so a failed download leaves nothing that looks valid. At
    most MAX_REDIRECTS redirects are followed, each to http/https only. The file's mtime
    is set from ``Last-Modified`` when the server sends one (reference "ADD": "the
    mtime of the destination file will be the remote file's Last-Modified").
    """
    import requests  # heavy: only for a build that ADDs a URL

    if not url.startswith(("http://", "https://")):
        raise DownloadFailed(f"ADD {url}: only http:// and https:// URLs can be downloaded")
    session = requests.Session()
    session.max_redirects = MAX_REDIRECTS
    session.trust_env = True  # the proxy settings; but never ~/.netrc's credentials:
    # the Containerfile names the URL, so they would fetch whatever the builder's
    # account may read there (an internal server) into the image. BuildKit sends none.
    session.auth = _no_auth  # a session auth stops the netrc lookup of the first request
    session.rebuild_auth = lambda prepared, response: None  # type: ignore[method-assign]
    # (and the one made again at each redirect; nothing else sets Authorization here)
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        with session.get(url, stream=True, timeout=timeout, allow_redirects=True) as response:
            _check_response(url, response, max_bytes)
            _save_body(url, response, tmp, max_bytes)
            mtime = http_date_to_epoch(response.headers.get("Last-Modified"))
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        os.replace(tmp, dest)
    except requests.TooManyRedirects as exc:
        raise DownloadFailed(f"ADD {url}: more than {MAX_REDIRECTS} redirects") from exc
    except requests.RequestException as exc:
        raise DownloadFailed(f"ADD {url}: {exc}") from exc
    finally:
        session.close()
        tmp.unlink(missing_ok=True)
    return dest, mtime


def _no_auth(request):  # type: ignore[no-untyped-def]
    return request


def _check_response(url: str, response, max_bytes: int) -> None:  # type: ignore[no-untyped-def]
    for hop in [*response.history, response]:
        if not hop.url.startswith(("http://", "https://")):
            raise DownloadFailed(f"ADD {url}: redirected to a non-HTTP URL {hop.url!r}")
    if response.status_code != 200:
        raise DownloadFailed(f"ADD {url}: HTTP {response.status_code} {response.reason}")
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise DownloadFailed(f"ADD {url}: {declared} bytes is more than the {max_bytes} allowed")


def _save_body(url: str, response, tmp: Path, max_bytes: int) -> None:  # type: ignore[no-untyped-def]
    size = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        for chunk in response.iter_content(chunk_size=1 << 20):
            size += len(chunk)
            if size > max_bytes:
                raise DownloadFailed(f"ADD {url}: more than the {max_bytes} bytes allowed")
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
