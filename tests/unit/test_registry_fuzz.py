"""Fuzz the parsers of what a registry sends (issue 8, item 19): WWW-Authenticate,
Location and realm URLs, Retry-After, Content-Range and Range, integer headers,
Content-Type, Docker-Content-Digest, token and error JSON. Each answer is an
OciimgError or a value, never another exception. Seeded (OCIIMG_FUZZ_SEED to replay)
and bounded in time."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from ociimg.errors import OciimgError
from ociimg.reference import parse_image_name
from ociimg.registry.auth import _parse_token_response, check_realm, parse_www_authenticate
from ociimg.registry.client import (
    _range_end,
    _range_ok,
    header_int,
    media_type_of,
    parse_error_body,
    verify_manifest_digest,
)
from ociimg.registry.transport import retry_after_delay
from ociimg.registry.urls import is_loopback, origin, proxies_for, resolve_url

SEED = int(os.environ.get("OCIIMG_FUZZ_SEED", "20261207"))
BUDGET_SECONDS = float(os.environ.get("OCIIMG_FUZZ_SECONDS", "0.6"))  # per parser
MAX_CASES = int(os.environ.get("OCIIMG_FUZZ_CASES", "4000"))

TOKENS = ['"', "\\", ",", "=", " ", "\t", "[", "]", ":", "/", "?", "#", "@", "%", "-1", "99999",
          "0", "-", "*", "bytes ", "bytes=", "\x00", "\ud800", "\udfff", "²", "٣", "\u202e",
          "9" * 5000, "Bearer ", "Basic ", "realm=", "scope=", "http://", "https://", "[::1",
          "[::1]", "::", "sha256:", "a" * 64, "sha512:", "{", "}", "null", "1e999", "NaN",
          "\r\n", "é", "\ufeff", "GMT", "Mon, 07 Dec 2026 01:00:00 GMT", "+0000", "31 Feb"]

SEEDS = {
    "www_authenticate": ['Bearer realm="https://auth.example/token",service="reg",'
                         'scope="repository:a/b:pull,push"', 'Basic realm="r"',
                         "Negotiate abc==, Basic", 'Bearer realm=https://t/x , error="x"'],
    "url": ["http://127.0.0.1:5000/v2/x?y=1", "https://[::1]:443/a", "/relative/path?q",
            "//other.example:8080/p", "https://storage.example/blob?sig=abc"],
    "retry_after": ["7", "Fri, 27 Nov 2026 10:00:30 GMT", "0", "soon"],
    "range": ["bytes 0-99/100", "bytes 10-99/*", "0-1023", "bytes=0-5"],
    "int": ["123", "0", " 42 "],
    "content_type": ["application/vnd.oci.image.manifest.v1+json; charset=utf-8", "text/html"],
    "digest": ["sha256:" + "a" * 64, "sha512:" + "b" * 128, "sha256:abc"],
    "reference": ["busybox", "127.0.0.1:5000/a/b:v1", "[::1]:5000/x@sha256:" + "a" * 64,
                  "docker://registry.example/ns/app:1.0", "oci:/tmp/l:name",
                  "oci-archive:img.tar:docker.io/library/busybox:latest"],
    "json": ['{"token": "t", "expires_in": 300}', '{"access_token": "x"}', "[[[[[]]]]]",
             '{"errors": [{"code": "DENIED", "message": "m"}]}', '{"errors": "x"}'],
}


@dataclass
class Mutator:
    rng: random.Random
    corpus: list[str] = field(default_factory=list)

    def case(self) -> str:
        text = self.rng.choice(self.corpus)
        for _ in range(self.rng.randint(1, 6)):
            text = self.mutate(text)
        if len(text) > 20000:
            text = text[:20000]
        return text

    def mutate(self, text: str) -> str:
        pos = self.rng.randint(0, len(text))
        end = min(len(text), pos + self.rng.randint(0, 8))
        op = self.rng.randrange(6)
        if op == 0:
            return text[:pos] + self.rng.choice(TOKENS) + text[pos:]
        if op == 1:
            return text[:pos] + text[end:]
        if op == 2:
            return text[:pos] + chr(self.rng.randrange(0x110000)) + text[end:]
        if op == 3:
            return text[:pos] + self.rng.choice(TOKENS) * self.rng.randint(1, 50) + text[pos:]
        if op == 4:
            return text + self.rng.choice(TOKENS)
        return self.rng.choice(TOKENS) + text[pos:]


@dataclass
class Resp:
    """The two attributes _range_ok reads from a response."""
    status_code: int
    headers: dict[str, str]


def _www(text: str) -> object:
    challenges = parse_www_authenticate(text)
    for c in challenges:
        if c.params.get("realm"):
            check_realm(c.params["realm"], "https://registry.example")
    return challenges


def _location(text: str) -> object:
    url = resolve_url("https://registry.example:5000/v2/x/blobs/uploads/", text, "fuzz")
    return origin(url), is_loopback(url.split("/")[2]), proxies_for(
        url, {"HTTPS_PROXY": "http://p:1", "NO_PROXY": text[:50]})


def _range(text: str) -> object:
    return _range_ok(Resp(206, {"Content-Range": text}), 10, 100), _range_end(text)


def _digest(text: str) -> object:
    return verify_manifest_digest(b"{}", "v1", text, "fuzz")


def _token(text: str) -> object:
    return _parse_token_response(text.encode("utf-8", "surrogatepass"), "fuzz")


def _error_body(text: str) -> object:
    return parse_error_body(text.encode("utf-8", "surrogatepass"))


def _reference(text: str) -> object:
    ref = parse_image_name(text)
    if hasattr(ref, "api_host"):  # a registry reference: the URL a client would build
        origin(f"https://{ref.api_host}/v2/")
    return ref


PARSERS: dict[str, tuple[str, Callable[[str], object]]] = {
    "WWW-Authenticate": ("www_authenticate", _www),
    "Location/realm URL": ("url", _location),
    "Retry-After": ("retry_after", retry_after_delay),
    "Content-Range/Range": ("range", _range),
    "Content-Length/OCI-Chunk-Min-Length": ("int", header_int),
    "Content-Type": ("content_type", media_type_of),
    "Docker-Content-Digest": ("digest", _digest),
    "token JSON": ("json", _token),
    "error body JSON": ("json", _error_body),
    "image reference": ("reference", _reference),
}


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_parser_never_raises_anything_but_ociimg_error(name):
    corpus, parse = PARSERS[name]
    mutator = Mutator(random.Random(f"{SEED}-{name}"), list(SEEDS[corpus]))
    cases = [*SEEDS[corpus], *TOKENS]
    deadline = time.monotonic() + BUDGET_SECONDS
    count = 0
    while count < MAX_CASES and (count < len(cases) or time.monotonic() < deadline):
        text = cases[count] if count < len(cases) else mutator.case()
        count += 1
        try:
            parse(text)
        except OciimgError:
            pass
        except Exception as exc:  # noqa: BLE001  (what the test is looking for)
            pytest.fail(f"{name}: {type(exc).__name__}: {exc} for {text[:200]!r} "
                        f"(OCIIMG_FUZZ_SEED={SEED})")


def _small_archive() -> bytes:
    """A tiny but complete layout tar: PAX format, so extended headers get mutated too."""
    import io
    import json
    import tarfile

    from ociimg.digest import Digest

    blob = b'{"architecture": "amd64", "os": "linux"}'
    index = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.config.v1+json", "size": len(blob),
         "digest": str(Digest.of(blob)),
         "annotations": {"org.opencontainers.image.ref.name": "x" * 120}}]}).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
                           ("index.json", index),
                           (f"blobs/sha256/{Digest.of(blob).hex}", blob)]:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1.5  # a fractional mtime: a PAX header
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_archive_reader_never_raises_anything_but_ociimg_error(tmp_path):
    from ociimg.registry.archive import LayoutArchive

    rng = random.Random(f"{SEED}-archive")
    good = _small_archive()
    path = tmp_path / "a.tar"
    deadline = time.monotonic() + BUDGET_SECONDS * 3
    count = 0
    while count < MAX_CASES and (count < 50 or time.monotonic() < deadline):
        data = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            if not data:
                break
            pos = rng.randrange(min(len(data), 4096))
            op = rng.randrange(4)
            if op == 0:
                data[pos] = rng.randrange(256)
            elif op == 1:
                data[pos:pos + 12] = rng.choice([b"77777777777\0", b"\x80" + b"\xff" * 11,
                                                 b"\xff" * 12, b"9" * 12, b" " * 12])
            elif op == 2:
                del data[pos:]
            else:
                data[pos:pos] = rng.choice([b"x", b"L", b"g", b"S", b"5", b"2", b"\0" * 512])
        count += 1
        path.write_bytes(bytes(data))
        try:
            archive = LayoutArchive(path)
            for desc in archive.entries():
                with archive.open_blob(desc.digest) as stream:
                    stream.read()
                archive.read_blob(desc.digest)
        except OciimgError:
            pass
        except Exception as exc:  # noqa: BLE001  (what the test is looking for)
            pytest.fail(f"archive: {type(exc).__name__}: {exc} (case {count}, "
                        f"OCIIMG_FUZZ_SEED={SEED})")
