"""``ociimg-runtime``: a runc-compatible command line (the flags podman/conmon, containerd's
shim and CRI-O pass). It must start fast, so it imports only argparse and the stdlib at
module level; each command imports what it needs."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

TYPE_CHECKING = False  # typing costs ~5 ms of every runtime start
if TYPE_CHECKING:
    from typing import Any

VERSION = "0.1.0"
SPEC_VERSION = "1.2.0"
DEFAULT_ROOT = "/run/ociimg"


class _Log:
    """runc's --log/--log-format: text or JSON lines {"level","msg","time"}."""

    def __init__(self, path: str | None, fmt: str, debug: bool) -> None:
        self.path, self.fmt, self.debug_on = path, fmt, debug

    def write(self, level: str, msg: str) -> None:
        if level == "debug" and not self.debug_on:
            return
        if self.path is None:
            if level != "error":
                print(f"ociimg-runtime: {level}: {msg}", file=sys.stderr)
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        line = (json.dumps({"level": level, "msg": msg, "time": stamp}) if self.fmt == "json"
                else f'time="{stamp}" level={level} msg="{msg}"')
        with open(self.path, "a") as f:
            f.write(line + "\n")


def route_logging(log: _Log) -> None:
    """Library warnings go where runc's go: --log or stderr. The runtime's own modules log
    through lazylog (no logging import: ~10 ms of every start); anything else under
    "ociimg" that already loaded logging gets a handler too."""
    from ociimg.runtime import lazylog

    def sink(level: str, text: str) -> None:
        try:
            log.write(level, text)
        except OSError:
            pass  # e.g. a forked exec child that already left the host's mount ns
    lazylog.redirect(sink, "debug" if log.debug_on else "warning")
    if "logging" in sys.modules:
        _install_handler(log)


def _install_handler(log: _Log) -> None:
    import logging

    class _Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                log.write(record.levelname.lower(), record.getMessage())
            except OSError:
                pass  # e.g. a forked exec child that already left the host's mount ns
    logger = logging.getLogger("ociimg")
    logger.handlers[:] = [_Handler(logging.DEBUG if log.debug_on else logging.WARNING)]
    logger.setLevel(logging.DEBUG if log.debug_on else logging.WARNING)
    logger.propagate = False


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter with the width from os: its default imports shutil (~4 ms of
    every start) because add_argument builds a formatter to check each metavar."""

    def __init__(self, prog: str) -> None:
        try:
            width = os.get_terminal_size(sys.stderr.fileno()).columns
        except (OSError, ValueError):
            width = int(os.environ.get("COLUMNS", "80") or 80)
        super().__init__(prog, width=max(width - 2, 40))


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


class _Unused:
    """Stands in for the sub-parser of a command that is not on the command line."""

    def add_argument(self, *args: Any, **kwargs: Any) -> None:
        return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The full parser, or with ``argv`` only the sub-parsers of commands named in it
    (every token that names one, so the real verb is always among them): building all
    fourteen costs a few ms of every start."""
    named = {a for a in argv if a in COMMANDS} if argv is not None else set()
    p = _Parser(prog="ociimg-runtime", description="runc-compatible OCI runtime of ociimg")
    p.add_argument("--root", default=None, help=f"state directory (default {DEFAULT_ROOT})")
    p.add_argument("--log", default=None, help="log file (default: stderr)")
    p.add_argument("--log-format", default="text", choices=("text", "json"))
    p.add_argument("--debug", action="store_true")
    p.add_argument("--systemd-cgroup", action="store_true",
                   help="accepted for compatibility; the systemd driver is not supported")
    p.add_argument("--rootless", default=None, help="accepted for compatibility")
    p.add_argument("--criu", default=None, help=argparse.SUPPRESS)
    p.add_argument("-v", "--version", action="store_true")
    sub = p.add_subparsers(dest="verb", metavar="COMMAND", parser_class=_Parser)

    def add(name: str) -> Any:
        return sub.add_parser(name) if not named or name in named else _Unused()

    for name in ("create", "run"):
        c = add(name)
        c.add_argument("id")
        c.add_argument("-b", "--bundle", default=".")
        c.add_argument("--pid-file")
        c.add_argument("--console-socket")
        c.add_argument("--no-pivot", action="store_true")
        c.add_argument("--no-new-keyring", action="store_true")
        c.add_argument("--preserve-fds", type=int, default=0)
        if name == "run":
            c.add_argument("-d", "--detach", action="store_true")
            c.add_argument("--keep", action="store_true")
    add("start").add_argument("id")
    add("state").add_argument("id")
    k = add("kill")
    k.add_argument("id")
    k.add_argument("signal", nargs="?", default="SIGTERM")
    k.add_argument("-a", "--all", action="store_true")
    d = add("delete")
    d.add_argument("id")
    d.add_argument("-f", "--force", action="store_true")
    lst = add("list")
    lst.add_argument("-f", "--format", default="table", choices=("table", "json"))
    lst.add_argument("-q", "--quiet", action="store_true")
    ps = add("ps")
    ps.add_argument("id")
    ps.add_argument("-f", "--format", default="table", choices=("table", "json"))
    e = add("exec")
    e.add_argument("id")
    e.add_argument("-t", "--tty", action="store_true")
    e.add_argument("-e", "--env", action="append", default=[])
    e.add_argument("--cwd")
    e.add_argument("-u", "--user")
    e.add_argument("-p", "--process")
    e.add_argument("-d", "--detach", action="store_true")
    e.add_argument("--pid-file")
    e.add_argument("--console-socket")
    e.add_argument("--preserve-fds", type=int, default=0)
    e.add_argument("--no-new-privs", action="store_true")
    e.add_argument("command", nargs=argparse.REMAINDER)
    add("features")
    add("pause").add_argument("id")
    add("resume").add_argument("id")
    u = add("update")
    u.add_argument("id")
    u.add_argument("-r", "--resources", required=True,
                   help="linux.resources JSON file, or - for stdin")
    return p


def parse_signal(text: str) -> int:
    """TERM, SIGTERM, 15, RTMIN+3 (systemd's stop signal), RTMAX-1."""
    import signal
    if text.isdigit():
        return int(text)
    name = text.upper().removeprefix("SIG")
    for base, sign in (("RTMIN+", 1), ("RTMAX-", -1)):
        if name.startswith(base) and name[len(base):].isdigit():
            anchor = signal.SIGRTMIN if sign > 0 else signal.SIGRTMAX
            number = int(anchor) + sign * int(name[len(base):])
            if signal.SIGRTMIN <= number <= signal.SIGRTMAX:
                return number
    try:
        return int(signal.Signals["SIG" + name])
    except KeyError:
        from ociimg.errors import ContainerError
        raise ContainerError(f"unknown signal {text!r}", hint="use a name like TERM or KILL "
                             "or a number") from None


def _cmd_create(args: argparse.Namespace, root: str) -> int:
    from ociimg.runtime import container
    container.create_container(root, args.id, _create_options(args))
    return 0


def _create_options(args: argparse.Namespace) -> Any:
    from pathlib import Path

    from ociimg.runtime.container import CreateOptions
    return CreateOptions(bundle=Path(args.bundle), pid_file=Path(args.pid_file)
                         if args.pid_file else None, console_socket=args.console_socket,
                         no_pivot=args.no_pivot, preserve_fds=args.preserve_fds,
                         new_keyring=not args.no_new_keyring)


def _cmd_run(args: argparse.Namespace, root: str) -> int:
    from ociimg.runtime import container
    return container.run_container(root, args.id, _create_options(args), detach=args.detach)


def _cmd_start(args: argparse.Namespace, root: str) -> int:
    from ociimg.runtime import container
    container.start_container(root, args.id)
    return 0


def _cmd_state(args: argparse.Namespace, root: str) -> int:
    from ociimg.runtime import container
    print(json.dumps(container.container_state(root, args.id), indent=2))
    return 0


def _cmd_pause(args: argparse.Namespace, root: str) -> int:
    from ociimg.runtime import container
    container.pause_container(root, args.id)
    return 0


def _cmd_resume(args: argparse.Namespace, root: str) -> int:
    from ociimg.runtime import container
    container.resume_container(root, args.id)
    return 0


def _cmd_update(args: argparse.Namespace, root: str) -> int:
    from ociimg.errors import InvalidDocument
    from ociimg.runtime import container
    try:
        text = sys.stdin.read() if args.resources == "-" else open(args.resources).read()
        resources = json.loads(text)
    except (OSError, ValueError) as exc:
        raise InvalidDocument(f"update: cannot read resources JSON: {exc}",
                              hint="pass --resources FILE (or - for stdin)") from exc
    container.update_container(root, args.id, resources)
    return 0


def _cmd_kill(args: argparse.Namespace, root: str) -> int:
    from ociimg.runtime import container
    container.kill_container(root, args.id, parse_signal(args.signal), args.all)
    return 0


def _cmd_delete(args: argparse.Namespace, root: str) -> int:
    from ociimg.errors import ContainerNotFound
    from ociimg.runtime import container
    try:
        container.delete_container(root, args.id, force=args.force)
    except ContainerNotFound:
        if not args.force:
            raise
        # A runtime killed mid-create leaves a state dir without state.json.
        container.remove_stale(root, args.id)
    return 0


def _cmd_list(args: argparse.Namespace, root: str) -> int:
    from ociimg.runtime import container
    items = container.list_containers(root)
    if args.quiet:
        for it in items:
            print(it["id"])
    elif args.format == "json":
        print(json.dumps(items))
    else:
        print(f"{'ID':<20} {'PID':<8} {'STATUS':<10} {'BUNDLE':<40} CREATED")
        for it in items:
            print(f"{it['id']:<20} {it['pid']:<8} {it['status']:<10} {it['bundle']:<40} "
                  f"{it.get('created', '')}")
    return 0


def _cmd_ps(args: argparse.Namespace, root: str) -> int:
    from ociimg.runtime import container
    pids = container.container_pids(root, args.id)
    if args.format == "json":
        print(json.dumps(pids))
        return 0
    print(f"{'PID':<8} CMD")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        print(f"{pid:<8} {cmd}")
    return 0


def _cmd_exec(args: argparse.Namespace, root: str) -> int:
    from ociimg.runtime import execution
    return execution.exec_from_cli(root, args)


def _cmd_features(args: argparse.Namespace, root: str) -> int:
    from ociimg.runtime import features
    print(json.dumps(features.features(), indent=2))
    return 0


COMMANDS = {"create": _cmd_create, "run": _cmd_run, "start": _cmd_start, "state": _cmd_state,
            "kill": _cmd_kill, "delete": _cmd_delete, "list": _cmd_list, "ps": _cmd_ps,
            "exec": _cmd_exec, "features": _cmd_features, "pause": _cmd_pause,
            "resume": _cmd_resume, "update": _cmd_update}


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    args = build_parser(argv).parse_args(argv)
    if args.version:
        print(f"ociimg-runtime version {VERSION}\nspec: {SPEC_VERSION}")
        return 0
    if not args.verb:
        build_parser().print_usage(sys.stderr)
        return 2
    log = _Log(args.log, args.log_format, args.debug)
    route_logging(log)
    root = args.root or os.environ.get("OCIIMG_RUNTIME_ROOT") or DEFAULT_ROOT
    from ociimg.errors import OciimgError
    try:
        if args.systemd_cgroup:
            raise OciimgError("--systemd-cgroup: the systemd cgroup driver is not supported",
                              hint="use the cgroupfs manager (podman --cgroup-manager cgroupfs)")
        return COMMANDS[args.verb](args, root)
    except OciimgError as exc:
        _report(log, exc.message, exc.hint)
        return exc.exit_code
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        _report(log, f"{args.verb}: {exc.strerror or exc}{where}", None)
        return 1


def _report(log: _Log, message: str, hint: str | None) -> None:
    print(f"ociimg-runtime: error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    log.write("error", message)


if __name__ == "__main__":
    sys.exit(main())
