"""``ociimg-runtime``: a runc-compatible command line (the flags podman/conmon, containerd's
shim and CRI-O pass). It must start fast, so it imports only the stdlib at module level
and parses the command line itself; each command imports what it needs."""

from __future__ import annotations

import os
import sys
import time

from ociimg.runtime import DEFAULT_STATE_ROOT, SPEC_VERSION, jsonio

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ociimg.runtime.config import User
    from ociimg.runtime.container import CreateOptions
    from ociimg.runtime.execution import ExecRequest

# ociimg.__version__, which the runtime cannot import (the package's __init__ reaches the
# image stages); a unit test keeps the two equal.
VERSION = "0.1.0"


class _Log:
    """runc's --log/--log-format: text or JSON lines {"level","msg","time"}."""

    def __init__(self, path: str | None, fmt: str, debug: bool) -> None:
        self.path, self.fmt, self.debug_on = path, fmt, debug

    def write(self, level: str, msg: str) -> None:
        if level == "debug" and not self.debug_on:
            return
        if self.path is None:
            if level != "error":
                _to_stderr(f"ociimg-runtime: {level}: {msg}\n")
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        # runc's logrus format, byte for byte: conmon and containerd's shim parse it.
        line = (jsonio.dumps({"level": level, "msg": msg, "time": stamp}, separators=(",", ":"))
                if self.fmt == "json" else f'time="{stamp}" level={level} msg={_logfmt(msg)}')
        with open(self.path, "a") as f:
            f.write(line + "\n")


_BARE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._/@^+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _logfmt(value: str) -> str:
    """A value as logrus's text formatter writes it: bare when it is one word of safe
    characters, else quoted like Go's %q (a quote in a message cannot end the field)."""
    if value and set(value) <= _BARE:
        return value
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x80 else
                       f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def route_logging(log: _Log) -> None:
    """Library warnings go where runc's go: --log or stderr. The runtime's own modules log
    through lazylog (no logging import); anything else under "ociimg" that already
    loaded logging gets a handler too."""
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


class UsageError(Exception):
    """A command line the parser cannot accept (exit 2, like argparse and urfave/cli)."""


class Args:
    """The parsed command line: one attribute per option and positional."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return f"Args({self.__dict__!r})"


# One option: (flags, dest, kind, default, help). kind: "flag", "value", "int", "append",
# or a tuple of choices. A hand-rolled parser: argparse brings gettext and locale.
_Option = tuple
_GLOBAL: tuple[_Option, ...] = (
    (("--root",), "root", "value", None, f"state directory (default {DEFAULT_STATE_ROOT})"),
    (("--log",), "log", "value", None, "log file (default: stderr)"),
    (("--log-format",), "log_format", ("text", "json"), "text", "log format"),
    (("--debug",), "debug", "flag", False, "debug logging"),
    (("--systemd-cgroup",), "systemd_cgroup", "flag", False,
     "use systemd's cgroup manager: not supported, refused with an error"),
    (("--rootless",), "rootless", "value", None, "ignored (runc's true|false|auto)"),
    (("--criu",), "criu", "value", None, "ignored (no checkpoint/restore)"),
    (("-v", "--version"), "version", "flag", False, "print the version"),
)
_CREATE: tuple[_Option, ...] = (
    (("-b", "--bundle"), "bundle", "value", ".", "bundle directory (default .)"),
    (("--pid-file",), "pid_file", "value", None, "write the init's pid to this file"),
    (("--console-socket",), "console_socket", "value", None,
     "AF_UNIX socket that receives the pty master"),
    (("--no-pivot",), "no_pivot", "flag", False, "chroot instead of pivot_root (ramfs)"),
    (("--no-new-keyring",), "no_new_keyring", "flag", False, "keep the session keyring"),
    (("--preserve-fds",), "preserve_fds", "int", 0, "pass N extra fds (from fd 3)"),
)
# The global options that take a value (_log_from_argv skips theirs).
_GLOBAL_VALUES = frozenset(flag for flags, _, kind, _, _ in _GLOBAL if kind != "flag"
                           for flag in flags)
_FORMAT: _Option = (("-f", "--format"), "format", ("table", "json"), "table", "output format")
# command: (positionals, optional positionals with defaults, options, takes a command
# after the positionals (exec), summary)
_COMMANDS: dict[str, tuple] = {
    "create": (("id",), (), _CREATE, False, "create a container (its init waits for start)"),
    "run": (("id",), (), _CREATE + (
        (("-d", "--detach"), "detach", "flag", False, "do not wait for the container"),
        (("--keep",), "keep", "flag", False, "do not delete the container after it exits")),
        False, "create and start a container"),
    "start": (("id",), (), (), False, "start a created container"),
    "state": (("id",), (), (), False, "print the runtime-spec state JSON"),
    "kill": (("id",), (("signal", "SIGTERM"),), (
        (("-a", "--all"), "all", "flag", False, "signal every process of the container"),),
        False, "send a signal (default SIGTERM) to the container"),
    "delete": (("id",), (), (
        (("-f", "--force"), "force", "flag", False, "kill a running container first"),),
        False, "delete a container"),
    "list": ((), (), (_FORMAT, (("-q", "--quiet"), "quiet", "flag", False, "ids only")),
             False, "list containers"),
    "ps": (("id",), (), (_FORMAT,), False, "list the container's processes"),
    "exec": (("id",), (), (
        (("-t", "--tty"), "tty", "flag", False, "allocate a pty"),
        (("-e", "--env"), "env", "append", None, "set an environment variable"),
        (("--cwd",), "cwd", "value", None, "working directory"),
        (("-u", "--user"), "user", "value", None, "UID[:GID]"),
        (("-p", "--process"), "process", "value", None, "process.json to run"),
        (("-d", "--detach"), "detach", "flag", False, "do not wait for the process"),
        (("--pid-file",), "pid_file", "value", None, "write the process's pid here"),
        (("--console-socket",), "console_socket", "value", None, "pty master socket"),
        (("--preserve-fds",), "preserve_fds", "int", 0, "pass N extra fds (from fd 3)"),
        (("--no-new-privs",), "no_new_privs", "flag", False, "set no_new_privileges"),
        (("--ignore-paused",), "ignore_paused", "flag", False,
         "exec in a paused container (the process runs once it is resumed)")),
        True, "run a process in a running container"),
    "events": (("id",), (), (
        (("--stats",), "stats", "flag", False, "print the statistics once and exit"),
        (("--interval",), "interval", "value", "5s", "time between statistics (5s)")),
        False, "print the container's cgroup statistics"),
    "features": ((), (), (), False, "print the features JSON"),
    "pause": (("id",), (), (), False, "freeze the container's processes"),
    "resume": (("id",), (), (), False, "thaw the container's processes"),
    "update": (("id",), (), (
        (("-r", "--resources"), "resources", "value", None,
         "linux.resources JSON file, or - for stdin (required)"),),
        False, "change the container's cgroup limits"),
}


def _defaults(options: tuple[_Option, ...]) -> dict[str, Any]:
    return {dest: ([] if kind == "append" else default)
            for _, dest, kind, default, _ in options}


def _find_option(token: str, options: tuple[_Option, ...],
                 where: str) -> tuple[_Option, str | None]:
    """The option a token names (``--opt``, ``--opt=value``, ``-o``), and an attached value."""
    name, eq, attached = token.partition("=") if token.startswith("--") else (token, "", "")
    for option in options:
        if name in option[0]:
            return option, attached if eq else None
    raise UsageError(f"{where}: unknown option {name}")


def _take_option(option: _Option, attached: str | None, rest: list[str], values: dict,
                 where: str) -> None:
    flags, dest, kind, _, _ = option
    if kind == "flag":
        if attached is not None:
            raise UsageError(f"{where}: {flags[-1]} takes no value")
        values[dest] = True
        return
    if attached is None:
        if not rest:
            raise UsageError(f"{where}: {flags[-1]} needs a value")
        attached = rest.pop(0)
    if kind == "int":
        try:
            values[dest] = int(attached)
        except ValueError:
            raise UsageError(f"{where}: {flags[-1]}: not a number: {attached!r}") from None
    elif kind == "append":
        values[dest].append(attached)
    elif isinstance(kind, tuple) and attached not in kind:
        raise UsageError(f"{where}: {flags[-1]} must be one of {', '.join(kind)}")
    else:
        values[dest] = attached


def parse_args(argv: list[str]) -> Args:
    """runc's grammar: global options, the command, then its options and positionals in
    any order (``--`` ends options); exec's command is everything after the id."""
    rest = list(argv)
    values = _defaults(_GLOBAL) | {"verb": None, "help": False}
    while rest and rest[0].startswith("-") and rest[0] != "-":
        token = rest.pop(0)
        if token in ("-h", "--help"):
            values["help"] = True
            continue
        option, attached = _find_option(token, _GLOBAL, "ociimg-runtime")
        _take_option(option, attached, rest, values, "ociimg-runtime")
    if not rest:
        return Args(**values)
    verb = rest.pop(0)
    if verb not in _COMMANDS:
        raise UsageError(f"unknown command {verb!r} (commands: {', '.join(_COMMANDS)})")
    required, optional, options, takes_command, _ = _COMMANDS[verb]
    values.update(_defaults(options), verb=verb)
    where = f"ociimg-runtime {verb}"
    positionals: list[str] = []
    wanted = len(required) + len(optional)
    while rest:
        if takes_command and len(positionals) == len(required):
            break  # exec: the rest is the command, whatever it looks like
        token = rest.pop(0)
        if token == "--":
            count = len(required) - len(positionals) if takes_command else len(rest)
            positionals += rest[:count]
            del rest[:count]
            break
        if token in ("-h", "--help"):
            values["help"] = True
        elif token.startswith("-") and token != "-":
            option, attached = _find_option(token, options, where)
            _take_option(option, attached, rest, values, where)
        else:
            positionals.append(token)
    if values["help"]:
        return Args(**values)
    if len(positionals) < len(required):
        raise UsageError(f"{where}: missing {' '.join(required[len(positionals):]).upper()}")
    if len(positionals) > wanted:
        raise UsageError(f"{where}: unexpected argument {positionals[wanted]!r}")
    values.update(zip(required, positionals, strict=False))
    extra = positionals[len(required):]
    for i, (name, default) in enumerate(optional):
        values[name] = extra[i] if i < len(extra) else default
    if takes_command:
        values["command"] = rest[1:] if rest[:1] == ["--"] else rest  # exec ID -- CMD
    if verb == "update" and values["resources"] is None:
        raise UsageError(f"{where}: --resources is required")
    return Args(**values)


def usage(verb: str | None = None) -> str:
    """Help text: the global options and commands, or one command's options."""
    if verb is None:
        lines = ["usage: ociimg-runtime [global options] COMMAND [options] ARGS...",
                 "", "runc-compatible OCI runtime of ociimg", "", "commands:"]
        lines += [f"  {name:<10} {spec[4]}" for name, spec in _COMMANDS.items()]
        options = _GLOBAL
    else:
        required, optional, options, takes_command, summary = _COMMANDS[verb]
        args = [a.upper() for a in required] + [f"[{n.upper()}]" for n, _ in optional]
        if takes_command:
            args.append("COMMAND [ARG...]")
        lines = [f"usage: ociimg-runtime {verb} [options] {' '.join(args)}", "", summary]
    if options:
        lines += ["", "options:"]
        for flags, _, kind, _, text in options:
            metavar = "" if kind == "flag" else (
                " {" + ",".join(kind) + "}" if isinstance(kind, tuple) else " VALUE")
            lines.append(f"  {', '.join(flags) + metavar:<28} {text}")
    return "\n".join(lines)


def parse_signal(text: str) -> int:
    """TERM, SIGTERM, 15, RTMIN+3 (systemd's stop signal), RTMAX-1."""
    import _signal
    if text.isdigit():
        return int(text)
    name = text.upper().removeprefix("SIG")
    for base, sign in (("RTMIN+", 1), ("RTMAX-", -1)):
        if name.startswith(base) and name[len(base):].isdigit():
            anchor = _signal.SIGRTMIN if sign > 0 else _signal.SIGRTMAX
            number = anchor + sign * int(name[len(base):])
            if _signal.SIGRTMIN <= number <= _signal.SIGRTMAX:
                return number
    number = getattr(_signal, "SIG" + name, None) if name.isalnum() else None
    if not isinstance(number, int):
        from ociimg.errors import ContainerError
        raise ContainerError(f"unknown signal {text!r}", hint="use a name like TERM or KILL "
                             "or a number")
    return number


def _cmd_create(args: Args, root: str) -> int:
    from ociimg.runtime import container
    container.create_container(root, args.id, _create_options(args))
    return 0


def _create_options(args: Args) -> CreateOptions:
    from ociimg.runtime.container import CreateOptions
    return CreateOptions(bundle=args.bundle, pid_file=args.pid_file,
                         console_socket=args.console_socket,
                         no_pivot=args.no_pivot, preserve_fds=args.preserve_fds,
                         new_keyring=not args.no_new_keyring)


def _cmd_run(args: Args, root: str) -> int:
    from ociimg.runtime import container
    return container.run_container(root, args.id, _create_options(args), detach=args.detach,
                                   keep=args.keep)


def _cmd_start(args: Args, root: str) -> int:
    from ociimg.runtime import container
    container.start_container(root, args.id)
    return 0


def _cmd_state(args: Args, root: str) -> int:
    from ociimg.runtime import container
    print(jsonio.dumps(container.container_state(root, args.id), indent=2))
    return 0


def _cmd_pause(args: Args, root: str) -> int:
    from ociimg.runtime import container
    container.pause_container(root, args.id)
    return 0


def _cmd_resume(args: Args, root: str) -> int:
    from ociimg.runtime import container
    container.resume_container(root, args.id)
    return 0


def _cmd_update(args: Args, root: str) -> int:
    from ociimg.errors import InvalidDocument
    from ociimg.runtime import container
    try:
        text = sys.stdin.read() if args.resources == "-" else open(args.resources).read()
        resources = jsonio.loads(text)
    except (OSError, ValueError) as exc:
        raise InvalidDocument(f"update: cannot read resources JSON: {exc}",
                              hint="pass --resources FILE (or - for stdin)") from exc
    container.update_container(root, args.id, resources)
    return 0


def _cmd_kill(args: Args, root: str) -> int:
    from ociimg.runtime import container
    container.kill_container(root, args.id, parse_signal(args.signal), args.all)
    return 0


def _cmd_delete(args: Args, root: str) -> int:
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


def _cmd_list(args: Args, root: str) -> int:
    from ociimg.runtime import container
    items = container.list_containers(root)
    if args.quiet:
        for it in items:
            print(it["id"])
    elif args.format == "json":
        print(jsonio.dumps(items or None))  # runc (Go's nil slice): null when empty
    else:
        print(f"{'ID':<20} {'PID':<8} {'STATUS':<10} {'BUNDLE':<40} CREATED")
        for it in items:
            print(f"{it['id']:<20} {it['pid']:<8} {it['status']:<10} {it['bundle']:<40} "
                  f"{it.get('created', '')}")
    return 0


def _cmd_ps(args: Args, root: str) -> int:
    from ociimg.runtime import container
    pids = container.container_pids(root, args.id)
    if args.format == "json":
        print(jsonio.dumps(pids))
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


def _cmd_exec(args: Args, root: str) -> int:
    from ociimg.errors import OciimgError
    from ociimg.runtime import execution
    try:
        return execution.exec_in_container(root, args.id, exec_request(args))
    except OciimgError as exc:
        # runc: a process that could not be started is "exec failed: ..." and exit 255.
        # A program not found keeps the shell's 127 (ExecutableNotFound).
        exc.message = f"exec failed: {exc.message}"
        if exc.exit_code == 1:
            exc.exit_code = 255
        raise


def exec_request(args: Args) -> ExecRequest:
    """runc exec's options as an execution.ExecRequest."""
    from ociimg.runtime.execution import ExecRequest
    process = None
    if args.process:
        from ociimg.runtime.config import parse_process
        with open(args.process, "rb") as f:
            process = parse_process(jsonio.loads(f.read()), "process.json")
    return ExecRequest(args=tuple(args.command), env=tuple(args.env), cwd=args.cwd,
                       user=_numeric_user(args.user) if args.user else None,
                       terminal=args.tty, no_new_privileges=args.no_new_privs,
                       process=process, detach=args.detach, pid_file=args.pid_file,
                       console_socket=args.console_socket, preserve_fds=args.preserve_fds,
                       ignore_paused=args.ignore_paused)


def _numeric_user(text: str) -> User:
    from ociimg.errors import ContainerError
    from ociimg.runtime.config import User
    uid, sep, gid = text.partition(":")
    if not uid.isdigit() or (sep and not gid.isdigit()):
        raise ContainerError(f"exec: --user {text!r} is not UID[:GID]",
                             hint="give numeric ids (ociimg exec also takes names)")
    return User(uid=int(uid), gid=int(gid) if gid else 0)


def _cmd_events(args: Args, root: str) -> int:
    from ociimg.runtime import container

    def emit(event: dict[str, Any]) -> None:
        print(jsonio.dumps(event, separators=(",", ":")), flush=True)
    container.container_events(root, args.id, args.stats, parse_interval(args.interval), emit)
    return 0


def parse_interval(text: str) -> float:
    """Go's durations as runc takes them: 5s, 500ms, 1m, 1.5s."""
    from ociimg.errors import InvalidArgument
    for unit, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        number = text.removesuffix(unit)
        if number != text:
            try:
                value = float(number) * scale
            except ValueError:
                break
            if value > 0:
                return value
            break
    raise InvalidArgument(f"events: --interval {text!r} is not a positive duration",
                          hint="give one like 5s or 500ms")


def _cmd_features(args: Args, root: str) -> int:
    from ociimg.runtime import features
    print(jsonio.dumps(features.features(), indent=2))
    return 0


COMMANDS = {"create": _cmd_create, "run": _cmd_run, "start": _cmd_start, "state": _cmd_state,
            "kill": _cmd_kill, "delete": _cmd_delete, "list": _cmd_list, "ps": _cmd_ps,
            "exec": _cmd_exec, "events": _cmd_events, "features": _cmd_features,
            "pause": _cmd_pause, "resume": _cmd_resume, "update": _cmd_update}


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    try:
        args = parse_args(argv)
    except UsageError as exc:
        _report(_log_from_argv(argv), str(exc), "ociimg-runtime --help")
        return 2
    if args.help:
        print(usage(args.verb))
        return 0
    if args.version:
        print(f"ociimg-runtime version {VERSION}\nspec: {SPEC_VERSION}")
        return 0
    if not args.verb:
        print(usage(), file=sys.stderr)
        return 2
    log = _Log(args.log, args.log_format, args.debug)
    route_logging(log)
    root = args.root or os.environ.get("OCIIMG_RUNTIME_ROOT") or DEFAULT_STATE_ROOT
    from ociimg.errors import OciimgError
    try:
        if args.systemd_cgroup:
            raise OciimgError("--systemd-cgroup: the systemd cgroup manager is not supported "
                              "(ociimg-runtime manages cgroupfs directly)",
                              hint="use the cgroupfs manager (podman --cgroup-manager cgroupfs)")
        return COMMANDS[args.verb](args, root)
    except OciimgError as exc:
        _report(log, exc.message, exc.hint)
        return exc.exit_code
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        _report(log, f"{args.verb}: {exc.strerror or exc}{where}", None)
        return 1
    except Exception as exc:
        # A bug: the traceback stays, but whoever reads the log (conmon, the shim) still
        # gets an error entry.
        _write_log(log, "error", f"{args.verb}: internal error: {type(exc).__name__}: {exc}")
        raise


def _report(log: _Log, message: str, hint: str | None) -> None:
    """An entry in --log when there is one, then one error line on stderr (and its hint).
    The log comes first and stderr is best effort: containerd's shim reads the error from
    the log, and may have closed the pipe it gave us as stderr (a write there then fails
    with EPIPE, which must not cost the log entry or end in a traceback)."""
    _write_log(log, "error", message)
    _to_stderr(f"ociimg-runtime: error: {message}\n" + (f"hint: {hint}\n" if hint else ""))


def _write_log(log: _Log, level: str, message: str) -> None:
    try:
        log.write(level, message)
    except OSError as exc:  # an unwritable --log must not hide the error itself
        _to_stderr(f"ociimg-runtime: error: --log {log.path}: {exc.strerror}\n")


def _to_stderr(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):  # closed or broken: the log has the message
        pass


def _log_from_argv(argv: list[str]) -> _Log:
    """--log and --log-format of a command line the parser refused, so that a usage
    error reaches the log too (they are global options: before the command)."""
    found: dict[str, str] = {}
    rest = list(argv)
    while rest and rest[0].startswith("-"):
        name, eq, value = rest.pop(0).partition("=")
        if name in _GLOBAL_VALUES:
            if not eq:
                if not rest:
                    break
                value = rest.pop(0)
            found[name] = value
    fmt = found.get("--log-format", "text")
    return _Log(found.get("--log"), fmt if fmt in ("text", "json") else "text", False)


if __name__ == "__main__":
    sys.exit(main())
