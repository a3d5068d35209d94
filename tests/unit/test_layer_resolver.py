"""The applier's dir fd cache (layers/paths.Resolver.adopt) and the dir times it keeps:
a dir made by an entry serves that dir's later entries without resolving its path again,
and dirs keep their tar times however their content arrives."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from ociimg.layers import paths
from ociimg.layers.apply import ApplyOptions, apply_layer
from tests.tarbuild import RESOLVERS, D, F, L, need_resolver, tar


@pytest.fixture(params=RESOLVERS)
def resolver(request: pytest.FixtureRequest) -> str:
    need_resolver(request.param)
    return request.param


def test_adopted_fd_is_served_until_invalidated(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    rootfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    res = paths.Resolver(rootfd)
    try:
        fd = os.open("a", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=rootfd)
        assert res.adopt(["a"], fd)
        assert res.dir(["a"]) == fd
        second = os.open("a", os.O_RDONLY | os.O_DIRECTORY, dir_fd=rootfd)
        assert not res.adopt(["a"], second)  # cached already: the caller keeps it
        os.close(second)
        assert not res.adopt([], fd)  # the root is never replaced
        res.invalidate()
        assert res.dir(["a"]) != fd or os.path.samestat(os.fstat(res.dir(["a"])),
                                                          os.stat(tmp_path / "a"))
        res.sweep()
        with pytest.raises(OSError):
            os.fstat(fd)  # retired and closed by the resolver, not leaked
    finally:
        res.close()
        os.close(rootfd)


def _apply(root: Path, data: bytes, resolver: str) -> None:
    fd_dir = "/proc/self/fd"
    before = len(os.listdir(fd_dir))
    apply_layer(root, io.BytesIO(data), ApplyOptions(rootless=True, resolver=resolver))
    assert len(os.listdir(fd_dir)) == before  # every adopted fd closed


def test_dirs_keep_their_tar_times_and_modes(tmp_path: Path, resolver: str) -> None:
    """Children, a replaced child, a symlink swapped in for a dir, and a dir entry that
    comes after its content: each dir ends with its entry's mode and times."""
    root = tmp_path / "root"
    root.mkdir()
    layer = tar(D("d", mode=0o750, mtime=1000), F("d/f", b"x"), D("d/sub", mtime=2000),
                F("d/sub/g", b"y"), F("d/f", b"replaced"), F("late/x", b"z"),
                D("late", mode=0o700, mtime=3000), D("ro", mode=0o555, mtime=4000),
                F("ro/inside", b"w"), L("gone", "d"), D("d/sub/deep", mtime=5000))
    _apply(root, layer, resolver)
    got = {name: (os.stat(root / name).st_mtime, os.stat(root / name).st_mode & 0o7777)
           for name in ("d", "d/sub", "late", "ro", "d/sub/deep")}
    assert got == {"d": (1000, 0o750), "d/sub": (2000, 0o755), "late": (3000, 0o700),
                   "ro": (4000, 0o555), "d/sub/deep": (5000, 0o755)}
    assert (root / "d/f").read_bytes() == b"replaced"
    assert (root / "ro/inside").read_bytes() == b"w"
    # A next layer adds to dirs it has no entry for: their times are put back.
    _apply(root, tar(F("d/sub/new", b"n"), F("late/y", b"m"), D("d", mtime=7000)), resolver)
    assert [os.stat(root / n).st_mtime for n in ("d", "d/sub", "late")] == [7000, 2000, 3000]


def test_a_dir_replaced_in_the_layer_is_not_written_through(tmp_path: Path,
                                                            resolver: str) -> None:
    """A dir made (and its fd adopted) then replaced by a symlink to elsewhere in the same
    layer: later entries under that path follow the symlink inside the root, never the
    adopted fd of the removed dir."""
    root = tmp_path / "root"
    root.mkdir()
    layer = tar(D("target"), D("d"), F("d/a", b"1"), L("d", "target"), F("d/b", b"2"))
    _apply(root, layer, resolver)
    assert (root / "d").is_symlink()
    assert sorted(os.listdir(root / "target")) == ["b"]
