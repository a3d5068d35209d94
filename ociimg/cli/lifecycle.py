"""Container lifecycle commands: attach, start, restart, wait, kill, pause, unpause, top,
stats, rename, container prune, events; and the value parsing of ps/logs/run's lifecycle
flags (--restart, --health-*, --label)."""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import typer

from ociimg.cli.app import app, group_options
from ociimg.cli.output import print_json, printable
from ociimg.containers.options import parse_signal  # noqa: F401  (re-exported)
from ociimg.errors import ContainerError, InvalidArgument, OciimgError
from ociimg.filters import label_matches, parse_filters

NAMES = typer.Argument(..., help="Container names or ids.")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)$")
_CTRL_KEYS = "abcdefghijklmnopqrstuvwxyz@[\\]^_"
_UNIT = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def _manager() -> Any:
    from ociimg.cli.containers import _manager as manager
    return manager()


# Values ------------------------------------------------------------------------------
def parse_duration(text: str) -> float:
    """Go's durations as docker takes them: 30s, 1m30s, 500ms; seconds."""
    total, rest = 0.0, text.strip()
    if rest.isdigit():
        return float(rest)
    while rest:
        m = re.match(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", rest)
        if not m:
            raise InvalidArgument(f"invalid duration {text!r}", hint="use e.g. 30s, 1m30s, 500ms")
        total += float(m.group(1)) * _UNIT[m.group(2)]
        rest = rest[m.end():]
    return total


def parse_since(text: str | None) -> float | None:
    """A time (RFC 3339, or Unix seconds) or a duration before now → Unix seconds."""
    if not text:
        return None
    if _DURATION.match(text) or re.fullmatch(r"(\d+(?:\.\d+)?(ns|us|ms|s|m|h))+", text):
        return time.time() - parse_duration(text)
    with contextlib.suppress(ValueError):
        return float(text)
    from ociimg.containers.logfile import parse_time
    try:
        return parse_time(text if text.endswith("Z") else text + "Z")
    except ValueError:
        raise InvalidArgument(f"invalid time {text!r}",
                              hint="use 2026-12-07T05:00:00Z, Unix seconds, or 10m") from None


def parse_tail(text: str) -> int | None:
    if text == "all":
        return None
    if not text.lstrip("-").isdigit():
        raise InvalidArgument(f"invalid --tail {text!r}", hint="use a number of lines or all")
    return int(text)


def parse_labels(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise InvalidArgument(f"invalid label {item!r}", hint="use KEY=VALUE")
        out[key] = value
    return out


def health_options(cmd: str | None, interval: str | None, timeout: str | None,
                   start_period: str | None, retries: int | None, none: bool) -> Any:
    """The run flags → a Healthcheck, or None for the image's own."""
    from ociimg.containers.policies import Healthcheck
    if none:
        return Healthcheck(["NONE"])
    if cmd is None:
        if any(x is not None for x in (interval, timeout, start_period, retries)):
            raise InvalidArgument("--health-interval/-timeout/-retries/-start-period need "
                                  "--health-cmd", hint="give the check with --health-cmd")
        return None
    return Healthcheck(["CMD-SHELL", cmd],
                       interval=parse_duration(interval) if interval else 30.0,
                       timeout=parse_duration(timeout) if timeout else 30.0,
                       start_period=parse_duration(start_period) if start_period else 0.0,
                       retries=retries if retries is not None else 3)


def restart_policy(text: str | None) -> Any:
    from ociimg.containers.policies import RestartPolicy
    return RestartPolicy.parse(text) if text else RestartPolicy()


# run's lifecycle flags (typer reads these defaults as metadata)
RESTART = typer.Option(None, "--restart", help="Restart policy: no, on-failure[:N], always, "
                       "unless-stopped.")
LABEL = typer.Option([], "--label", "-l", help="Set a KEY=VALUE label on the container.")
HEALTH_CMD = typer.Option(None, "--health-cmd", help="Command (run by sh) that checks health.")
HEALTH_INTERVAL = typer.Option(None, "--health-interval", help="Time between checks (30s).")
HEALTH_TIMEOUT = typer.Option(None, "--health-timeout", help="Longest a check may run (30s).")
HEALTH_START_PERIOD = typer.Option(None, "--health-start-period",
                                   help="Failures in this time after start do not count (0s).")
HEALTH_RETRIES = typer.Option(None, "--health-retries",
                              help="Failures in a row that make it unhealthy (3).")
NO_HEALTHCHECK = typer.Option(False, "--no-healthcheck", help="Disable any HEALTHCHECK.")


def create_options(restart: str | None, labels: list[str], health_cmd: str | None,
                   interval: str | None, timeout: str | None, start_period: str | None,
                   retries: int | None, no_healthcheck: bool, remove: bool) -> dict[str, Any]:
    """CreateOptions' lifecycle fields from run's flags."""
    policy = restart_policy(restart)
    if remove and policy.name != "no":
        raise InvalidArgument("conflicting options: --restart and --rm",
                              hint="a container removed when it exits cannot be restarted")
    return {"restart": policy, "labels": parse_labels(labels),
            "healthcheck": health_options(health_cmd, interval, timeout, start_period,
                                          retries, no_healthcheck)}


# Commands ----------------------------------------------------------------------------
def _terminal_size() -> tuple[int, int] | None:
    import os
    try:
        size = os.get_terminal_size(0)
    except OSError:
        return None
    return size.lines, size.columns


@contextlib.contextmanager
def _raw_terminal(enabled: bool) -> Any:
    """The caller's terminal in raw mode while attached to a container's pty."""
    import os
    if not enabled or not os.isatty(0):
        yield
        return
    import termios
    import tty
    saved = termios.tcgetattr(0)
    tty.setraw(0, termios.TCSANOW)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, termios.error):  # the terminal may be gone
            termios.tcsetattr(0, termios.TCSADRAIN, saved)


def _detach_keys(text: str) -> bytes:
    """docker's --detach-keys: "ctrl-p,ctrl-q", letters, or "" for none."""
    out = bytearray()
    for key in filter(None, text.split(",")):
        key = key.strip().lower()
        if key.startswith("ctrl-") and len(key) == 6 and key[5] in _CTRL_KEYS:
            out.append(ord(key[5].upper()) & 0x1F)
        elif len(key) == 1:
            out.append(ord(key))
        else:
            raise InvalidArgument(f"invalid detach key {key!r}", hint="use e.g. ctrl-p,ctrl-q")
    return bytes(out)


def attach_to(manager: Any, c: Any, *, stdin: bool, detach_keys: str) -> int:
    import signal
    tty = bool(c.meta.get("tty"))

    def on_connect(sock: Any) -> None:  # our terminal's new size to the container's pty
        def resize(_signum: int, _frame: object) -> None:
            size = _terminal_size()
            if size is not None:
                with contextlib.suppress(OSError):
                    sock.send(b"w%d %d" % size)
        signal.signal(signal.SIGWINCH, resize)

    saved = signal.getsignal(signal.SIGWINCH)
    try:
        with _raw_terminal(tty and stdin):
            code = manager.attach(c, (0, 1, 2), stdin=stdin,
                                  detach_keys=_detach_keys(detach_keys),
                                  size=_terminal_size() if tty else None,
                                  on_connect=on_connect if tty else None)
    finally:
        signal.signal(signal.SIGWINCH, saved)
    if code is None:
        if tty:
            print("\r\nread escape sequence", file=sys.stderr)
        return 0
    return code


DETACH_KEYS = typer.Option("ctrl-p,ctrl-q", "--detach-keys",
                           help="Keys that detach, leaving the container running.")


@app.command(rich_help_panel="Containers")
def attach(
    name: str = typer.Argument(..., help="Container name or id."),
    no_stdin: bool = typer.Option(False, "--no-stdin", help="Do not send our input."),
    detach_keys: str = DETACH_KEYS,
) -> None:
    """Attach to a running container's output (and input, if created with -i); ctrl-p
    ctrl-q detaches. Exits with the container's code when it exits."""
    manager = _manager()
    raise typer.Exit(attach_to(manager, manager.get(name), stdin=not no_stdin,
                               detach_keys=detach_keys))


@app.command(rich_help_panel="Containers")
def start(
    names: list[str] = NAMES,
    attach_: bool = typer.Option(False, "--attach", "-a", help="Attach to its output."),
    interactive: bool = typer.Option(False, "--interactive", "-i", help="Attach its input."),
    detach_keys: str = DETACH_KEYS,
) -> None:
    """Start created or stopped containers."""
    manager = _manager()
    if (attach_ or interactive) and len(names) > 1:
        raise InvalidArgument("start -a/-i takes one container", hint="start them one by one")
    for key in names:
        c = manager.get(key)
        running = manager.status(c).status in ("running", "paused", "restarting")
        if attach_ or interactive:
            if running:
                raise typer.Exit(attach_to(manager, c, stdin=interactive,
                                           detach_keys=detach_keys))
            # Attached from its first byte: the monitor copies to our fds, as run does.
            from ociimg.cli.containers import _run_attached
            raise typer.Exit(_run_attached(manager, c))
        if not running:
            manager.start(c)
        print(key)


@app.command(rich_help_panel="Containers")
def restart(
    names: list[str] = NAMES,
    time_: float = typer.Option(10.0, "--time", "-t", help="Seconds to wait before SIGKILL."),
) -> None:
    """Stop (if running) and start containers again."""
    manager = _manager()
    for key in names:
        c = manager.get(key)
        manager.stop(c, time_)
        manager.start(manager.get(key))
        print(key)


@app.command(rich_help_panel="Containers")
def wait(names: list[str] = NAMES) -> None:
    """Wait for containers to exit; print each exit code."""
    manager = _manager()
    for key in names:
        c = manager.get(key)
        if manager.status(c).status == "configured":
            raise ContainerError(f"container {c.name} was never started",
                                 hint=f"start it: ociimg start {c.name}")
        print(manager.wait_next_exit(c), flush=True)


@app.command(rich_help_panel="Containers")
def kill(
    names: list[str] = NAMES,
    signal_: str = typer.Option("KILL", "--signal", "-s", help="Signal name or number."),
) -> None:
    """Send a signal (SIGKILL by default) to containers' main process."""
    manager = _manager()
    sig = parse_signal(signal_)
    for key in names:
        manager.kill_by_user(manager.get(key), sig)
        print(key)


@app.command(rich_help_panel="Containers")
def pause(names: list[str] = NAMES) -> None:
    """Freeze every process of containers (the freezer cgroup)."""
    _each_in_status(names, "running", "pause", lambda manager, c: manager.pause(c))


@app.command(rich_help_panel="Containers")
def unpause(names: list[str] = NAMES) -> None:
    """Thaw paused containers."""
    _each_in_status(names, "paused", "unpause", lambda manager, c: manager.resume(c))


def _each_in_status(names: list[str], wanted: str, verb: str,
                    act: Callable[[Any, Any], object]) -> None:
    """``act(manager, container)`` on each container in turn, printing its name; one
    not ``wanted`` (running, paused) stops there with a one-line error."""
    manager = _manager()
    for key in names:
        c = manager.get(key)
        st = manager.status(c).status
        if st != wanted:
            raise ContainerError(f"cannot {verb} container {c.name}: it is {st}, not {wanted}")
        act(manager, c)
        print(key)


@app.command(rich_help_panel="Containers")
def rename(
    name: str = typer.Argument(..., help="Container name or id."),
    new_name: str = typer.Argument(..., help="Its new name."),
) -> None:
    """Rename a container."""
    manager = _manager()
    manager.rename(manager.get(name), new_name)


@app.command(rich_help_panel="Containers")
def top(name: str = typer.Argument(..., help="Container name or id.")) -> None:
    """The processes of a running container (host pids, as docker top)."""
    import subprocess
    manager = _manager()
    pids = manager.top(manager.get(name))
    proc = subprocess.run(["ps", "-o", "user,pid,ppid,c,stime,tty,time,cmd", "-p",
                           ",".join(map(str, pids))], capture_output=True, text=True,
                          check=False)
    if proc.returncode not in (0, 1):  # 1: none of the pids is left
        raise ContainerError(f"ps failed: {proc.stderr.strip()}")
    for line in proc.stdout.splitlines():  # command lines are the container's: escaped
        print(printable(line))


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.4g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1024
    return f"{n}"


def _stats_rows(manager: Any, cs: list[Any], before: dict[str, tuple[int, float]]
                ) -> list[dict[str, Any]]:
    import os
    rows = []
    cpus = os.cpu_count() or 1
    for c in cs:
        try:
            u = manager.usage(c)
        except OciimgError:
            continue
        now = time.monotonic()
        prev = before.get(c.id)
        cpu = 0.0
        if prev is not None and now > prev[1]:
            cpu = (u.cpu_ns - prev[0]) / ((now - prev[1]) * 1e9) * 100.0
        before[c.id] = (u.cpu_ns, now)
        mem_pct = 100.0 * u.memory / u.memory_limit if u.memory_limit else 0.0
        rows.append({"id": c.id, "name": c.name, "cpuPercent": round(min(cpu, 100.0 * cpus), 2),
                     "memUsage": u.memory, "memLimit": u.memory_limit,
                     "memPercent": round(mem_pct, 2), "pids": u.pids})
    return rows


@app.command(rich_help_panel="Containers")
def stats(
    names: list[str] = typer.Argument(None, help="Containers (default: all running)."),
    no_stream: bool = typer.Option(False, "--no-stream", help="One sample, then exit."),
    json_out: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """CPU %, memory and pids of running containers, from their cgroups."""
    manager = _manager()
    cs = [manager.get(n) for n in names] if names else \
        [c for c in manager.list() if manager.status(c).status in ("running", "paused")]
    before: dict[str, tuple[int, float]] = {}
    _stats_rows(manager, cs, before)
    while True:
        time.sleep(0.5 if no_stream else 1.0)
        rows = _stats_rows(manager, cs, before)
        if json_out:
            print_json(rows)
        else:
            if not no_stream:
                sys.stdout.write("\x1b[2J\x1b[H")
            print(f"{'CONTAINER ID':14}{'NAME':20}{'CPU %':9}{'MEM USAGE / LIMIT':24}"
                  f"{'MEM %':9}PIDS")
            for r in rows:
                mem = f"{_human(r['memUsage'])} / {_human(r['memLimit'])}"
                print(f"{r['id'][:12]:14}{printable(r['name'])[:19]:20}"
                      f"{r['cpuPercent']:.2f}%".ljust(43)
                      + f"{mem:24}" + f"{r['memPercent']:.2f}%".ljust(9) + str(r["pids"]))
        sys.stdout.flush()
        if no_stream:
            return


container_app = typer.Typer(help="Manage containers (inspect, prune).", no_args_is_help=True,
                            rich_markup_mode=None)
app.add_typer(container_app, name="container", rich_help_panel="Containers")


container_app.callback()(group_options)


@container_app.command("prune")
def container_prune(
    force: bool = typer.Option(False, "--force", "-f", help="Do not ask (kept for docker's "
                               "command lines; ociimg never asks)."),
) -> None:
    """Remove every stopped container."""
    manager = _manager()
    for c in manager.list():
        if manager.status(c).status in ("exited", "stopped", "configured", "unknown"):
            manager.remove(c)
            print(c.id)


@container_app.command("inspect")
def container_inspect(names: list[str] = NAMES) -> None:
    """Containers' state and settings as JSON (docker's shape for State, RestartCount,
    HostConfig.RestartPolicy, Config.Labels and Config.Healthcheck)."""
    manager = _manager()
    print_json([container_document(manager, manager.get(key)) for key in names])


def container_document(manager: Any, c: Any) -> dict[str, Any]:
    import datetime
    st = manager.status(c)
    run_record = manager.run_record(c)
    started = run_record.get("startedAt")
    state: dict[str, Any] = {
        "Status": {"configured": "created", "creating": "created", "stopped": "exited",
                   "unknown": "dead"}.get(st.status, st.status),
        "Running": st.status in ("running", "paused"), "Paused": st.status == "paused",
        "Restarting": st.status == "restarting", "Pid": st.pid or 0,
        "ExitCode": st.exit_code or 0,
        "StartedAt": datetime.datetime.fromtimestamp(started, datetime.UTC)
        .strftime("%Y-%m-%dT%H:%M:%S.%fZ") if started else "0001-01-01T00:00:00Z",
        "FinishedAt": st.finished or "0001-01-01T00:00:00Z"}
    health = manager.health(c)
    if health is not None:
        state["Health"] = health
    meta = c.meta
    hc = meta.get("healthcheck")
    return {"Id": c.id, "Name": c.name, "Created": meta.get("created"), "Path":
            (meta.get("command") or [""])[0], "Args": (meta.get("command") or [])[1:],
            "State": state, "Image": meta.get("digest"), "ImageName": meta.get("image"),
            "RestartCount": run_record.get("restartCount", 0),
            "Config": {"Labels": meta.get("labels") or {}, "Tty": bool(meta.get("tty")),
                       "OpenStdin": bool(meta.get("interactive")),
                       "StopSignal": meta.get("stopSignal"),
                       "Healthcheck": None if not hc else {
                           "Test": hc["test"], "Interval": int(hc["interval"] * 1e9),
                           "Timeout": int(hc["timeout"] * 1e9),
                           "StartPeriod": int(hc["startPeriod"] * 1e9),
                           "Retries": hc["retries"]}},
            "HostConfig": {"RestartPolicy": {
                "Name": (meta.get("restart") or {}).get("name", "no"),
                "MaximumRetryCount": (meta.get("restart") or {}).get("maximumRetryCount", 0)},
                "AutoRemove": bool(meta.get("autoRemove"))}}


@app.command(rich_help_panel="Containers")
def events(
    since: str = typer.Option(None, "--since", help="Events since a time or duration ago."),
    until: str = typer.Option(None, "--until", help="Events until a time or duration ago; "
                              "without it, new events are followed."),
    filter_: list[str] = typer.Option([], "--filter", "-f", help="container=, event=, "
                                      "image=, label=KEY[=VALUE] (repeatable)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON document a line."),
) -> None:
    """Container events (create, start, die, stop, kill, pause, unpause, rename, destroy):
    the past ones from --since, then new ones as they come until --until or ctrl-c."""
    import datetime
    import json

    from ociimg.cli.app import STATE
    from ociimg.containers.eventlog import read_events
    start, end = parse_since(since), parse_since(until)
    filters = parse_filters(filter_, ("container", "event", "image", "label", "type"))
    if start is None and end is None:  # docker: only what happens from now on
        start = time.time()
    for ev in read_events(STATE.root, follow=end is None):
        t = ev.get("timeNano", 0) / 1e9
        if end is not None and t > end:
            return
        if (start is not None and t < start) or not _event_matches(filters, ev):
            continue
        if json_out:
            print(json.dumps(ev), flush=True)
            continue
        attrs = ev.get("Actor", {}).get("Attributes", {})
        stamp = datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat()
        extra = ", ".join(f"{k}={v}" for k, v in sorted(attrs.items()))
        print(printable(f"{stamp} container {ev.get('Action')} {ev.get('id')} ({extra})"),
              flush=True)


def _event_matches(filters: dict[str, list[str]], ev: dict[str, Any]) -> bool:
    attrs = ev.get("Actor", {}).get("Attributes", {})

    def one(key: str, value: str) -> bool:
        if key == "container":
            return value == attrs.get("name") or str(ev.get("id", "")).startswith(value)
        if key == "event":
            return ev.get("Action") == value
        if key == "image":
            return attrs.get("image") == value or attrs.get("image", "").split(":")[0] == value
        if key == "type":
            return value == "container"
        return label_matches(attrs, value)
    return all(any(one(k, v) for v in vs) for k, vs in filters.items())
