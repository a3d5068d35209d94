"""containers.store.read_json keeps the bytes of unchanged records (ps reads every
container's on each call): a changed, replaced, removed or symlinked record is read
again, never served from the cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ociimg.containers import store
from ociimg.store import files


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = files.read_regular

    def counting(path: str | os.PathLike[str], limit: int, what: str | None = None) -> bytes:
        seen.append(os.fspath(path))
        return real(path, limit, what)

    monkeypatch.setattr(files, "read_regular", counting)
    monkeypatch.setattr(store, "_RECORDS", {})
    return seen


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file counts as settled (the real rule wants it unchanged for 100 ms)."""
    monkeypatch.setattr(store, "_RACY_NS", -1)


def test_an_unchanged_record_is_read_once(tmp_path: Path, reads: list[str],
                                          settled: None) -> None:
    rec = tmp_path / "meta.json"
    rec.write_text('{"a": 1}')
    assert store.read_json(rec, "meta") == {"a": 1}
    doc = store.read_json(rec, "meta")
    assert doc == {"a": 1} and len(reads) == 1
    doc["a"] = 2  # the caller's own copy: the cache is not changed through it
    assert store.read_json(rec, "meta") == {"a": 1}


def test_a_replaced_or_rewritten_record_is_read_again(tmp_path: Path, reads: list[str],
                                                      settled: None) -> None:
    rec = tmp_path / "exit.json"
    rec.write_text('{"exitCode": 1}')
    assert store.read_json(rec, "exit")["exitCode"] == 1
    store.write_json(rec, {"exitCode": 2})  # atomic: a new inode
    assert store.read_json(rec, "exit")["exitCode"] == 2
    st = rec.stat()
    with open(rec, "r+b") as f:  # in place, same size, mtime put back: ctime moves on
        data = f.read()
        f.seek(0)
        f.write(data.replace(b"2", b"3"))
    os.utime(rec, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert store.read_json(rec, "exit")["exitCode"] == 3
    assert len(reads) == 3


def test_a_record_swapped_for_a_symlink_is_refused(tmp_path: Path, reads: list[str],
                                                   settled: None) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text('{"secret": true}')
    rec = tmp_path / "run.json"
    rec.write_text('{"secret": false}')
    assert store.read_json(rec, "run") == {"secret": False}
    rec.unlink()
    rec.symlink_to(outside)
    assert store.read_json(rec, "run") is None
    rec.unlink()
    assert store.read_json(rec, "run") is None  # removed: gone from the cache too
    assert os.fspath(rec) not in store._RECORDS


def test_a_record_changed_just_now_is_not_kept(tmp_path: Path, reads: list[str]) -> None:
    rec = tmp_path / "api.json"
    rec.write_text('{"x": 1}')
    store.read_json(rec, "api")
    store.read_json(rec, "api")
    assert len(reads) == 2 and not store._RECORDS
