"""Layer streams: media types, magic sniffing, corrupt and truncated input."""

from __future__ import annotations

import gzip
import io
import os

import pytest
import zstandard

from ociimg import spec
from ociimg.errors import InvalidDocument
from ociimg.layers.compression import compression_of, open_decompressed

PAYLOAD = os.urandom(300_000) + b"text " * 100_000


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6)


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def _zstd_checksum(data: bytes) -> bytes:
    # The zstd CLI and most layer producers write the frame checksum; without it,
    # a flipped bit in a raw block is caught only by the blob digest.
    return zstandard.ZstdCompressor(write_checksum=True).compress(data)


def _read_all(stream) -> bytes:
    out = bytearray()
    while chunk := stream.read(65536):
        out += chunk
    return bytes(out)


@pytest.mark.parametrize("media_type, expected", [
    (spec.OCI_LAYER, "none"), (spec.OCI_LAYER_GZIP, "gzip"), (spec.OCI_LAYER_ZSTD, "zstd"),
    (spec.DOCKER_LAYER_GZIP, "gzip"), (spec.OCI_LAYER_NONDIST_GZIP, "gzip"),
])
def test_media_types(media_type: str, expected: str) -> None:
    assert compression_of(media_type) == expected


def test_non_layer_media_type_is_refused() -> None:
    with pytest.raises(InvalidDocument, match="not a supported tar layer"):
        open_decompressed(io.BytesIO(b""), "application/vnd.oci.image.layer.v1.tar+bzip2")


@pytest.mark.parametrize("media_type, encode", [
    (spec.OCI_LAYER_GZIP, _gzip), (spec.DOCKER_LAYER_GZIP, _gzip),
    (spec.OCI_LAYER_ZSTD, _zstd), (spec.OCI_LAYER, lambda d: d),
])
def test_round_trip(media_type: str, encode) -> None:
    assert _read_all(open_decompressed(io.BytesIO(encode(PAYLOAD)), media_type)) == PAYLOAD


@pytest.mark.parametrize("declared, encode", [
    (spec.OCI_LAYER_GZIP, _zstd), (spec.OCI_LAYER_ZSTD, _gzip), (spec.OCI_LAYER, _gzip),
])
def test_magic_wins_over_declared_type(declared: str, encode) -> None:
    assert _read_all(open_decompressed(io.BytesIO(encode(PAYLOAD)), declared)) == PAYLOAD


def test_multi_member_gzip_and_zstd_frames() -> None:
    gz = _gzip(PAYLOAD[:1000]) + _gzip(PAYLOAD[1000:])
    assert _read_all(open_decompressed(io.BytesIO(gz), spec.OCI_LAYER_GZIP)) == PAYLOAD
    zs = _zstd(PAYLOAD[:1000]) + _zstd(PAYLOAD[1000:])
    assert _read_all(open_decompressed(io.BytesIO(zs), spec.OCI_LAYER_ZSTD)) == PAYLOAD


def test_gzip_padded_with_zeros() -> None:
    # Trailing NUL padding after the last member is common (umoci#360).
    data = _gzip(PAYLOAD) + b"\0" * 1024
    assert _read_all(open_decompressed(io.BytesIO(data), spec.OCI_LAYER_GZIP)) == PAYLOAD


@pytest.mark.parametrize("media_type, encode", [
    (spec.OCI_LAYER_GZIP, _gzip), (spec.OCI_LAYER_ZSTD, _zstd),
])
def test_truncated_stream_is_one_clear_error(media_type: str, encode) -> None:
    data = encode(PAYLOAD)
    with pytest.raises(InvalidDocument, match="corrupt or truncated"):
        _read_all(open_decompressed(io.BytesIO(data[: len(data) // 2]), media_type))


@pytest.mark.parametrize("media_type, encode", [
    (spec.OCI_LAYER_GZIP, _gzip), (spec.OCI_LAYER_ZSTD, _zstd_checksum),
])
def test_corrupt_stream_is_one_clear_error(media_type: str, encode) -> None:
    data = bytearray(encode(PAYLOAD))
    for i in range(200, len(data) - 200, 997):
        data[i] ^= 0x5A
    with pytest.raises(InvalidDocument, match="corrupt or truncated"):
        _read_all(open_decompressed(io.BytesIO(bytes(data)), media_type))


def test_reads_in_bounded_chunks() -> None:
    # Streaming: a read never returns more than asked, so memory stays constant.
    stream = open_decompressed(io.BytesIO(_gzip(PAYLOAD)), spec.OCI_LAYER_GZIP)
    assert len(stream.read(4096)) == 4096


def test_corrupt_zstd_frame_header_is_one_clear_error() -> None:
    data = bytearray(_zstd(PAYLOAD))
    data[4] = 0xFF  # frame header descriptor: reserved bit set
    with pytest.raises(InvalidDocument, match="corrupt or truncated"):
        _read_all(open_decompressed(io.BytesIO(bytes(data)), spec.OCI_LAYER_ZSTD))
