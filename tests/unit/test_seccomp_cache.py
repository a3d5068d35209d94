"""The compiled seccomp filter cache (runtime.seccomp.filter_program): a hit returns exactly
what libseccomp would load; anything not provably ours and intact is ignored and rebuilt."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ociimg.bundle import profiles
from ociimg.oskit import linux
from ociimg.runtime import seccomp

PROFILE = profiles.default_seccomp_profile()


def fresh_program(doc: dict) -> bytes:
    ctx = seccomp.new_context(seccomp.build_filter(doc))
    try:
        return seccomp.export_bpf(ctx)
    finally:
        linux.seccomp_release(ctx)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def entry(cache: Path, doc: dict = PROFILE) -> Path:
    return cache / seccomp.cache_key(doc)


def test_miss_builds_and_stores_a_private_entry(cache: Path) -> None:
    program = seccomp.filter_program(PROFILE, str(cache))
    assert program == fresh_program(PROFILE)
    assert len(program) % 8 == 0
    assert (cache.stat().st_mode & 0o777) == 0o700
    assert (entry(cache).stat().st_mode & 0o777) == 0o600
    assert os.listdir(cache) == [entry(cache).name]  # no temp file left behind


def test_hit_returns_the_stored_program(cache: Path) -> None:
    first = seccomp.filter_program(PROFILE, str(cache))
    assert seccomp.read_cached(str(cache), seccomp.cache_key(PROFILE)) == first
    assert seccomp.filter_program(PROFILE, str(cache)) == first


def test_key_depends_on_the_profile() -> None:
    other = dict(PROFILE, defaultErrnoRet=38)
    assert seccomp.cache_key(other) != seccomp.cache_key(PROFILE)
    # Same content, other key order: same key.
    assert seccomp.cache_key(dict(reversed(list(PROFILE.items())))) == \
        seccomp.cache_key(PROFILE)


def allow_all_forgery(cache: Path) -> Path:
    """Replace the entry's program by a valid-looking 'allow everything' one."""
    seccomp.filter_program(PROFILE, str(cache))
    path = entry(cache)
    allow = (0x06).to_bytes(2, "little") + bytes(2) + (0x7FFF0000).to_bytes(4, "little")
    from _sha256 import sha256
    path.write_bytes(seccomp._CACHE_MAGIC + sha256(allow).digest() + allow)
    return path


def test_tampered_entry_is_ignored_and_rebuilt(cache: Path) -> None:
    path = allow_all_forgery(cache)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # digest no longer matches
    path.write_bytes(bytes(data))
    assert seccomp.read_cached(str(cache), path.name) is None
    assert seccomp.filter_program(PROFILE, str(cache)) == fresh_program(PROFILE)


def test_entry_readable_by_others_is_ignored(cache: Path) -> None:
    path = allow_all_forgery(cache)
    path.chmod(0o644)
    assert seccomp.read_cached(str(cache), path.name) is None
    assert seccomp.filter_program(PROFILE, str(cache)) == fresh_program(PROFILE)


def test_open_cache_dir_is_neither_read_nor_written(cache: Path) -> None:
    path = allow_all_forgery(cache)
    cache.chmod(0o755)
    assert seccomp.read_cached(str(cache), path.name) is None
    path.unlink()
    assert seccomp.filter_program(PROFILE, str(cache)) == fresh_program(PROFILE)
    assert not path.exists()


def test_symlinked_cache_dir_or_entry_is_ignored(tmp_path: Path, cache: Path) -> None:
    real = tmp_path / "real"
    path = allow_all_forgery(real)
    cache.symlink_to(real)
    assert seccomp.read_cached(str(cache), path.name) is None
    own = tmp_path / "own"
    own.mkdir(mode=0o700)
    (own / path.name).symlink_to(path)
    assert seccomp.read_cached(str(own), path.name) is None


def test_truncated_or_foreign_files_are_ignored(cache: Path) -> None:
    seccomp.filter_program(PROFILE, str(cache))
    path = entry(cache)
    for junk in (b"", b"not a cache entry", path.read_bytes()[:-3]):
        path.write_bytes(junk)
        assert seccomp.read_cached(str(cache), path.name) is None


def test_filter_flags_leave_the_load_to_libseccomp(cache: Path) -> None:
    doc = dict(PROFILE, flags=["SECCOMP_FILTER_FLAG_LOG"])
    assert seccomp.filter_program(doc, str(cache)) is None
    assert not cache.exists()


def test_invalid_profile_still_fails_with_the_same_error(cache: Path) -> None:
    with pytest.raises(seccomp.ContainerError, match="unknown action"):
        seccomp.filter_program({"defaultAction": "SCMP_ACT_BOGUS"}, str(cache))
