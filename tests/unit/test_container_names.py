"""Container names (`ociimg run --name`): the grammar, and the reservation that keeps two
concurrent runs from getting the same name (a symlink made under a lock)."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from ociimg.containers.store import check_name, release_name, reserve_name
from ociimg.errors import AlreadyExists, InvalidArgument


@pytest.mark.parametrize("name", ["web", "a", "db-1", "x_y.z", "A9"])
def test_valid_names(name: str) -> None:
    check_name(name)


@pytest.mark.parametrize("name", ["", "-x", ".x", "_x", "a/b", "../x", "a b", "é", "x" * 256])
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidArgument):
        check_name(name)


def make_container(root: Path, cid: str, creating: bool = False) -> None:
    (root / "containers" / (f".tmp-{cid}" if creating else cid)).mkdir(parents=True)


def test_a_taken_name_is_refused_until_released(tmp_path: Path) -> None:
    make_container(tmp_path, "a" * 64, creating=True)
    reserve_name(tmp_path, "web", "a" * 64)
    with pytest.raises(AlreadyExists, match="web is already in use by aaaaaaaaaaaa"):
        reserve_name(tmp_path, "web", "b" * 64)
    release_name(tmp_path, "web", "b" * 64)  # not its owner: nothing happens
    with pytest.raises(AlreadyExists):
        reserve_name(tmp_path, "web", "b" * 64)
    release_name(tmp_path, "web", "a" * 64)
    reserve_name(tmp_path, "web", "b" * 64)
    assert os.readlink(tmp_path / "containers" / ".names" / "web") == "b" * 64


def test_a_stale_name_is_taken_over(tmp_path: Path) -> None:
    # A create that crashed (or a container removed by hand) leaves a link to nothing.
    reserve_name(tmp_path, "web", "a" * 64)
    reserve_name(tmp_path, "web", "b" * 64)
    assert os.readlink(tmp_path / "containers" / ".names" / "web") == "b" * 64


def test_a_name_recorded_only_in_meta_is_still_taken(tmp_path: Path) -> None:
    cid = "c" * 64
    make_container(tmp_path, cid)
    (tmp_path / "containers" / cid / "meta.json").write_text('{"name": "old", "created": ""}')
    with pytest.raises(AlreadyExists):
        reserve_name(tmp_path, "old", "d" * 64)


def _race(root: str, cid: str, start: multiprocessing.synchronize.Event,
          results: multiprocessing.Queue) -> None:
    make_container(Path(root), cid, creating=True)
    start.wait()
    try:
        reserve_name(Path(root), "web", cid)
        results.put("won")
    except AlreadyExists:
        results.put("lost")


def test_concurrent_reservations_have_one_winner(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), f"{i:064x}", start, results))
             for i in range(8)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(30)
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert outcomes == ["lost"] * 7 + ["won"]
