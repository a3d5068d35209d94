"""The pure parts of the container lifecycle: the log format, detach keys, docker's STATUS
text and ps filters/templates, durations, restart policies and back-off, health state."""

from __future__ import annotations

import io
import time

import pytest

from ociimg.cli import psformat
from ociimg.cli.lifecycle import _detach_keys, parse_duration, parse_signal, parse_tail
from ociimg.containers import logfile
from ociimg.containers.attach import DetachScanner
from ociimg.containers.health import check_argv, next_state
from ociimg.containers.monitor import _restart_delay
from ociimg.containers.policies import RestartPolicy
from ociimg.errors import InvalidArgument
from ociimg.filters import label_matches, parse_filters


def _records(data: bytes) -> list[logfile.Record]:
    return list(logfile.read_records(io.BytesIO(data)))


def test_log_records_keep_streams_lines_and_partials() -> None:
    raw = logfile.encode("stdout", b"a\nb\npart", 0) + logfile.encode("stderr", b"e\n", 0)
    assert raw.splitlines()[0] == b"1970-01-01T00:00:00.000000000Z stdout F a"
    recs = _records(raw + logfile.encode("stdout", b"ial\n", 0))
    assert [(r.stream, r.data) for r in recs] == [
        ("stdout", b"a\n"), ("stdout", b"b\n"), ("stdout", b"part"), ("stderr", b"e\n"),
        ("stdout", b"ial\n")]
    assert [r.data for r in logfile.select(recs, tail=1)] == [b"ial\n"]
    # the last two lines: "e" and "partial" (its start came before "e")
    assert [r.data for r in logfile.select(recs, tail=2)] == [b"part", b"e\n", b"ial\n"]
    assert logfile.select(recs, tail=0) == [] and len(logfile.select(recs, tail=99)) == 5


def test_log_reader_refuses_garbage_and_waits_for_whole_lines() -> None:
    hostile = (b"not a record\n" + b"x stdout Q y\n" + b"\xff\xfe stdout F \x1b[2J\n"
               + logfile.encode("stdout", b"ok\n", 0) + b"2026 stdout F unfinished")
    f = io.BytesIO(hostile)
    recs = list(logfile.read_records(f))
    assert [r.data for r in recs] == [b"\x1b[2J\n", b"ok\n"]  # bytes kept, not interpreted
    assert f.read() == b"2026 stdout F unfinished"  # left for the next read
    assert logfile.encode("stdout", b"", 0) == b""
    # output that looks like records stays the container's output, on its own stream
    forged = _records(logfile.encode("stdout", b"x\n2026-01-01T00:00:00Z stderr F forged\n"))
    assert [(r.stream, r.data) for r in forged] == [
        ("stdout", b"x\n"), ("stdout", b"2026-01-01T00:00:00Z stderr F forged\n")]
    one_line = logfile.encode("stdout", b"x" * 100000, 0)
    assert one_line.count(b"\n") == 1  # a long line is one partial record, never split


def test_log_since_until_by_record_time() -> None:
    recs = _records(logfile.encode("stdout", b"old\n", 10 * 10**9)
                    + logfile.encode("stdout", b"new\n", 20 * 10**9))
    assert [r.data for r in logfile.select(recs, since=15)] == [b"new\n"]
    assert [r.data for r in logfile.select(recs, until=15)] == [b"old\n"]
    assert logfile.parse_time("1970-01-01T00:00:20.500000000Z") == 20.5


@pytest.mark.parametrize(("chunks", "passed", "detached"), [
    ([b"abc"], b"abc", False),
    ([b"ab\x10\x11cd"], b"ab", True),
    ([b"ab\x10", b"\x11"], b"ab", True),          # the sequence split across reads
    ([b"ab\x10", b"x"], b"ab\x10x", False),       # ctrl-p alone is passed on
    ([b"\x10\x10\x11"], b"\x10", True),
])
def test_detach_keys(chunks: list[bytes], passed: bytes, detached: bool) -> None:
    scanner = DetachScanner()
    out, done = b"", False
    for chunk in chunks:
        data, done = scanner.feed(chunk)
        out += data
        if done:
            break
    assert (out, done) == (passed, detached)
    assert _detach_keys("ctrl-p,ctrl-q") == b"\x10\x11"
    assert _detach_keys("ctrl-a,x") == b"\x01x"
    with pytest.raises(InvalidArgument):
        _detach_keys("ctrl-pq")


@pytest.mark.parametrize(("seconds", "text"), [
    (0.4, "Less than a second"), (1, "1 second"), (3, "3 seconds"), (61, "About a minute"),
    (150, "2 minutes"), (3600, "About an hour"), (5 * 3600, "5 hours"),
    (3 * 86400, "3 days"), (20 * 86400, "2 weeks"), (100 * 86400, "3 months"),
    (800 * 86400, "2 years")])
def test_human_duration_as_docker(seconds: float, text: str) -> None:
    assert psformat.human_duration(seconds) == text


def test_status_text() -> None:
    now = 1000.0
    assert psformat.status_text({"status": "running", "startedAt": 997.0}, now) == "Up 3 seconds"
    assert psformat.status_text({"status": "paused", "startedAt": 990.0}, now) == \
        "Up 10 seconds (Paused)"
    assert psformat.status_text({"status": "running", "startedAt": 999.0,
                                 "health": "starting"}, now) == "Up 1 second (health: starting)"
    finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 120))
    assert psformat.status_text({"status": "exited", "exitCode": 0, "finished": finished},
                                now) == "Exited (0) 2 minutes ago"
    assert psformat.status_text({"status": "configured"}, now) == "Created"


def test_ps_filters_and_templates() -> None:
    row = {"id": "ab" * 32, "name": "web-1", "status": "running", "image": "docker.io/x/nginx:1",
           "labels": {"tier": "front"}, "command": ["nginx", "-g", "daemon off;"],
           "statusText": "Up 1 second", "runningFor": "1 second ago"}
    f = psformat.parse_filters
    assert psformat.matches(f(["name=web", "status=running"]), row)
    assert psformat.matches(f(["status=exited", "status=running"]), row)  # OR within a key
    assert not psformat.matches(f(["name=web", "label=tier=back"]), row)  # AND across keys
    assert psformat.matches(f(["label=tier", "ancestor=nginx", "id=abab"]), row)
    assert not psformat.matches(f(["label=tier", "label=tier=back"]), row)  # labels: AND
    assert psformat.matches(f(["label=tier", "label=tier=front"]), row)
    assert psformat.matches(f(["name=^/web-1$"]), row)  # docker's names have a leading /
    assert not psformat.matches(f(["name=^/web$"]), row)
    assert psformat.matches(f(["name=[unclosed"]), {**row, "name": "a[unclosed"})
    for bad in (["nosuch=1"], ["status=sleepy"], ["name"]):
        with pytest.raises(InvalidArgument):
            f(bad)
    assert psformat.render("{{.Names}} {{.Status}}", row, False) == "web-1 Up 1 second"
    assert psformat.render("{{.ID}}", row, True) == row["id"]
    assert psformat.render("{{.Command}}", row, False) == '"nginx -g daemon off;"'
    assert '"Names": "web-1"' in psformat.render("{{json .}}", row, False)
    with pytest.raises(InvalidArgument):
        psformat.render("{{.Nope}}", row, False)
    assert psformat.header("{{.ID}}\\t{{.Names}}") == "CONTAINER ID\tNAMES"


def test_label_filters_are_dockers_in_ps_images_and_events() -> None:
    # label=KEY: present; label=KEY=VALUE: equal, and KEY= asks for an empty value.
    from ociimg.cli.lifecycle import _event_matches
    assert label_matches({"a": "x"}, "a") and not label_matches({}, "a")
    assert label_matches({"a": "x"}, "a=x") and not label_matches({"a": "x"}, "a=y")
    assert label_matches({"a": ""}, "a=") and not label_matches({"a": "x"}, "a=")
    ev = {"id": "c1", "Action": "start", "Actor": {"Attributes": {"name": "web", "tier": "x"}}}
    assert _event_matches({"label": ["tier=x"], "event": ["start"]}, ev)
    assert not _event_matches({"label": ["tier="]}, ev)
    with pytest.raises(InvalidArgument, match="invalid filter"):
        parse_filters(["colour=red"], ("label",))


def test_values() -> None:
    assert parse_duration("1m30s") == 90 and parse_duration("500ms") == 0.5
    assert parse_duration("10") == 10
    assert parse_signal("term") == 15 and parse_signal("SIGKILL") == 9 and parse_signal("1") == 1
    assert parse_tail("all") is None and parse_tail("3") == 3
    for bad in ("1x", "", "s"):
        with pytest.raises(InvalidArgument):
            parse_duration(bad) if bad else parse_tail(bad)
    assert RestartPolicy.parse("on-failure:5") == RestartPolicy("on-failure", 5)
    for bad in ("sometimes", "always:3", "on-failure:x"):
        with pytest.raises(InvalidArgument):
            RestartPolicy.parse(bad)


def test_restart_back_off(tmp_path: object) -> None:
    path = str(tmp_path)
    always = {"restart": {"name": "always"}}
    assert [_restart_delay(path, always, 0, n, 1.0) for n in range(4)] == [0.1, 0.2, 0.4, 0.8]
    assert _restart_delay(path, always, 0, 30, 1.0) == 60.0
    assert _restart_delay(path, always, 0, 5, 11.0) == 0.1  # ran long enough: reset
    on_failure = {"restart": {"name": "on-failure", "maximumRetryCount": 2}}
    assert _restart_delay(path, on_failure, 0, 0, 1.0) is None
    assert _restart_delay(path, on_failure, 1, 1, 1.0) == 0.2
    assert _restart_delay(path, on_failure, 1, 2, 1.0) is None
    assert _restart_delay(path, {}, 1, 0, 1.0) is None
    (tmp_path / "stopped").touch()  # type: ignore[operator]
    assert _restart_delay(path, always, 1, 0, 1.0) is None


def test_health_state_machine() -> None:
    start = {"Status": "starting", "FailingStreak": 0}
    assert next_state(start, 1, True, 3) == start  # start period: not counted
    assert next_state(start, 0, True, 3)["Status"] == "healthy"
    s = next_state(start, 1, False, 2)
    assert (s["Status"], s["FailingStreak"]) == ("starting", 1)
    s = next_state(s, 1, False, 2)
    assert (s["Status"], s["FailingStreak"]) == ("unhealthy", 2)
    assert next_state(s, 0, False, 2) == {"Status": "healthy", "FailingStreak": 0}
    assert check_argv(["CMD-SHELL", "curl -f x || exit 1"]) == ["/bin/sh", "-c",
                                                                "curl -f x || exit 1"]
    assert check_argv(["CMD", "true"]) == ["true"]
