"""runc's observable contract, one row per command and container state: the exit code,
the error text callers match (stderr, and --log's last error entry in both formats)
and the state afterwards, with runc (Debian's /usr/sbin/runc) and ociimg-runtime run
side by side on one bundle, never against a copied string.

A row's ``same`` says what must match: "code"; "words" (the last error entry of
--log, json and text, is runc's message with ids and paths normalized; stderr, with or
without --log, contains it, and its first line has the same PHRASES callers match,
hints come after it); "after" (the status afterwards, once both settle); "out" (the
command's stdout, through the row's reader). A row where ociimg-runtime differs on
purpose says why in ``note`` and what it does in ``ours`` (which must still differ
from runc's, or the note is stale)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need
from tests.integration.runc_contract import (
    DECISIVE,
    RUNC,
    STATES,
    Outcome,
    Side,
    normalize,
    phrases,
    sides,
)
from tests.integration.runtime_helpers import (
    base_config,
    leftover_cgroups,
    make_bundle,
    mounts_under,
)

ALL = ("code", "words", "after")


def _statuses(out: str) -> Any:
    items = json.loads(out) if out.strip() else "no output"
    return items if not isinstance(items, list) else [item["status"] for item in items]


def _state_shape(out: str) -> Any:
    """The fields go-runc's State reads, and a pid exactly while the init lives."""
    if not out.strip():
        return None
    doc = json.loads(out)
    return sorted(doc), doc["status"], doc["pid"] == 0


def _pid_count(out: str) -> int | None:
    return len(json.loads(out) or []) if out.strip() else None


def _stats_shape(out: str) -> Any:
    if not out.strip():
        return None
    event = json.loads(out)
    # pids.current differs in a created container (runc's init has a thread per P)
    return (event["type"], sorted(set(event["data"]) & {"cpu", "memory", "pids"}),
            sorted(event["data"]["pids"]), sorted(event["data"]["memory"]["usage"]))


@dataclass(frozen=True)
class Row:
    args: tuple[str, ...]
    state: str
    same: tuple[str, ...] = ALL
    read: Callable[[str], Any] | None = None  # compares stdout through it ("out")
    note: str = ""
    bundle: str = "sleep"  # which of the bundles fixture's
    ours: dict[str, Any] = field(default_factory=dict)  # where "same" leaves a field out

    def __str__(self) -> str:
        words = " ".join(a for a in self.args if not a.startswith("{"))
        return f"{words}-{self.state}" + ("" if self.bundle == "sleep" else f"-{self.bundle}")


def _rows() -> Iterator[Row]:
    plain = {
        ("create", "--bundle", "{bundle}", "{id}"): None,
        ("start", "{id}"): None, ("state", "{id}"): _state_shape,
        ("kill", "{id}", "KILL"): None, ("kill", "--all", "{id}", "KILL"): None,
        ("kill", "{id}", "0"): None,
        ("delete", "{id}"): None, ("delete", "--force", "{id}"): None,
        ("exec", "{id}", "true"): None, ("pause", "{id}"): None, ("resume", "{id}"): None,
        ("update", "-r", "{resources}", "{id}"): None,
        ("ps", "-f", "json", "{id}"): _pid_count,
        ("events", "--stats", "{id}"): _stats_shape,
        ("list", "-f", "json"): _statuses,
    }
    for args, read in plain.items():
        for state in STATES:
            same = ALL + ("out",) if read else ALL
            if args == ("delete", "{id}") and state == "created":
                yield Row(args, state, (), note=(
                    "runc kills and deletes a created container; runtime-spec (runtime.md "
                    "'delete') says deleting a container that is not stopped MUST fail, "
                    "which the runtime-tools suite checks: ociimg-runtime refuses"),
                    ours={"code": 1, "after": "created", "phrase": "not stopped: created"})
                continue
            yield Row(args, state, same, read)
    yield Row(("exec", "{id}", "nope"), "running", ("words", "after"), note=(
        "a program that is not there: runc exits 255 (any exec failure), ociimg-runtime "
        "127 as a shell does (callers such as dockerd go by the words)"),
        ours={"code": 127})
    missing = ("a program that is not there: runc's create and run exit 1, ociimg-runtime's "
               "127 as a shell does")
    for args in (("create", "--bundle", "{bundle}", "{id}"), ("run", "--bundle", "{bundle}",
                                                              "{id}")):
        yield Row(args, "nonexistent", ("words", "after"), note=missing, bundle="missing",
                  ours={"code": 127})


ROWS = list(_rows())


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The bundles both runtimes share, one each (name: its program). Without a
    cgroupsPath each runtime names its cgroup after its container id (runc below its own
    cgroup, ociimg-runtime below /ociimg)."""
    made = {}
    for name, args in (("sleep", ["sleep", "1000"]), ("missing", ["no-such-program"])):
        config = base_config(args)
        del config["linux"]["cgroupsPath"]
        made[name] = make_bundle(tmp_path_factory.mktemp(f"contract-{name}"), [], config)
    return made


@pytest.fixture
def bundle(bundles: dict[str, Path], row: Row) -> Path:
    bundle = bundles[row.bundle]
    (bundle.parent / "resources.json").write_text(json.dumps({"pids": {"limit": 1000}}))
    return bundle


def _play(side: Side, row: Row, bundle: Path) -> Outcome:
    side.prepare(bundle, row.state)
    args = [a.format(id=side.cid, bundle=bundle, resources=bundle.parent / "resources.json")
            for a in row.args]
    return side.invoke(args)


def _settled(runc: Side, ours: Side, first: tuple[str, str]) -> tuple[str, str]:
    """The statuses once both agree or 5 s passed: a SIGKILL lands asynchronously (runc's
    kill returns before the init is gone)."""
    deadline = time.monotonic() + 5
    now = first
    while now[0] != now[1] and time.monotonic() < deadline:
        time.sleep(0.05)
        now = (runc.status(), ours.status())
    return now


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_runc_contract(root: None, row: Row, bundle: Path, tmp_path: Path) -> None:
    need(os.path.exists(RUNC), "runc missing: apt-get install runc")
    runc, ours = sides(tmp_path)
    try:
        with ThreadPoolExecutor(2) as pool:
            theirs_f, ours_f = (pool.submit(_play, side, row, bundle) for side in (runc, ours))
            theirs, mine = theirs_f.result(), ours_f.result()
        _compare(row, runc, ours, theirs, mine, bundle)
    finally:
        for side in (runc, ours):
            side.cleanup()
    assert mounts_under(bundle.parent) == [] and leftover_cgroups() == []
    for side in (runc, ours):
        assert not side.root.exists() or os.listdir(side.root) == [], side.name


def _compare(row: Row, runc: Side, ours: Side, theirs: Outcome, mine: Outcome,
             bundle: Path) -> None:
    said = f"\nrunc: {theirs}\nociimg: {mine}"
    if "code" in row.same:
        assert mine.code == theirs.code, said
    if "after" in row.same:
        settled = _settled(runc, ours, (theirs.after, mine.after))
        assert settled[0] == settled[1], f"{settled}{said}"
    if "out" in row.same:
        assert row.read(mine.stdout) == row.read(theirs.stdout), said
    if "words" in row.same:
        _compare_words(runc, ours, theirs, mine, bundle, said)
    for key, value in row.ours.items():
        if key == "phrase":
            assert value in (mine.json_error or ""), said
        else:
            assert getattr(mine, key) == value != getattr(theirs, key), said


def _compare_words(runc: Side, ours: Side, theirs: Outcome, mine: Outcome, bundle: Path,
                   said: str) -> None:
    want = normalize(theirs.json_error, runc, bundle)
    assert normalize(theirs.text_error, runc, bundle) == want, said  # runc agrees with itself
    got = [normalize(text, ours, bundle) for text in (mine.json_error, mine.text_error)]
    assert got == [want, want], said
    if want is None:
        return
    for text in (mine.stderr, mine.plain_stderr):
        text = normalize(text, ours, bundle) or ""
        assert want in text, said
        first, *hints = text.splitlines()
        assert phrases(first) == phrases(want), said
        assert not [p for line in hints for p in DECISIVE if p in line], said
