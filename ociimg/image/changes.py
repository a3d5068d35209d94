"""``--change`` instructions (``docker commit --change``): Dockerfile lines that edit the
runtime part of an image config. Pure: no I/O.

Docker's subset: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR, STOPSIGNAL.
ONBUILD (and anything else) is refused by name. CMD, ENTRYPOINT and VOLUME take the
exec form when the argument parses as a JSON array of strings, else the shell form
(CMD/ENTRYPOINT: ``/bin/sh -c TEXT``; VOLUME: words), as the Dockerfile does. Words are
split with the Dockerfile's quoting (``'…'`` literal, ``"…"`` with ``\\`` escapes, ``\\x``
outside quotes) and, for ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR and STOPSIGNAL,
``$VAR``/``${VAR}``/``${VAR:-w}``/``${VAR:+w}`` expanded with the config's Env as it stands
before that change (buildkit expands the same instructions).

Parsing checks the syntax (quotes, JSON, names, ports, signals) when the change is given;
expansion happens in :func:`apply_changes`, which checks the expanded values again.
"""

from __future__ import annotations

import json
import posixpath
import re
import signal
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ociimg.errors import InvalidArgument

MAX_CHANGE_BYTES = 64 << 10  # a config is capped at 4 MiB; one change is far below
MAX_EXPOSED_PORTS = 65536
SUPPORTED = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "STOPSIGNAL", "USER", "VOLUME",
             "WORKDIR")
_JSON_FORMS = frozenset({"CMD", "ENTRYPOINT", "VOLUME"})
_PORT = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?(?:/(tcp|udp|sctp))?", re.IGNORECASE)
_HINT = "one Dockerfile instruction per --change, e.g. -c 'CMD [\"sh\"]' or -c 'ENV A=1'"


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """One parsed change: ``exec_form`` is the JSON array when the argument was one."""

    instruction: str
    args: str
    exec_form: tuple[str, ...] | None = None

    def __str__(self) -> str:
        return f"{self.instruction} {self.args}".rstrip()


def parse_changes(texts: Sequence[str]) -> list[ConfigChange]:
    return [parse_change(t) for t in texts]


def parse_change(text: str) -> ConfigChange:
    """Parse one change; InvalidArgument naming the problem for anything malformed."""
    _check_text(text)
    stripped = text.strip()
    if not stripped:
        raise InvalidArgument("--change: empty instruction", hint=_HINT)
    keyword, args = _split_keyword(stripped)
    instruction = keyword.upper()
    if instruction == "ONBUILD":
        raise InvalidArgument("--change ONBUILD: not supported by ociimg commit",
                              hint="ONBUILD triggers belong in a Containerfile build")
    if instruction not in SUPPORTED:
        raise InvalidArgument(f"--change: unknown instruction {_short(keyword)!r}",
                              hint=f"supported: {', '.join(SUPPORTED)}")
    exec_form = _json_array(instruction, args) if instruction in _JSON_FORMS else None
    change = ConfigChange(instruction, args, exec_form)
    _check_syntax(change)
    return change


def _check_text(text: Any) -> None:
    if not isinstance(text, str):
        raise InvalidArgument("--change: not text")
    if len(text) > MAX_CHANGE_BYTES:
        raise InvalidArgument(f"--change: {len(text)} characters exceeds the "
                              f"{MAX_CHANGE_BYTES}-character limit")
    if "\0" in text:
        raise InvalidArgument("--change: contains a NUL byte",
                              hint="config strings are passed to execve and cannot hold NUL")
    if re.search("[\ud800-\udfff]", text):
        raise InvalidArgument("--change: not valid UTF-8 text",
                              hint="image configs are JSON: every string must be UTF-8")
    if "\n" in text or "\r" in text:
        raise InvalidArgument("--change: contains a line break", hint=_HINT)


def _split_keyword(text: str) -> tuple[str, str]:
    parts = text.split(None, 1)
    return parts[0], (parts[1].strip() if len(parts) > 1 else "")


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[:n] + "…"


def _json_array(instruction: str, args: str) -> tuple[str, ...] | None:
    """The exec form when ``args`` is a JSON array; invalid JSON is the shell form (as in
    the Dockerfile); an array holding a non-string is an error."""
    if not args.startswith("["):
        return None
    try:
        value = json.loads(args)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"--change {instruction}: the JSON array must hold only strings",
                              hint=f'e.g. {instruction} ["/bin/sh", "-c", "echo hi"]')
    if any("\0" in v for v in value):
        raise InvalidArgument(f"--change {instruction}: contains a NUL byte")
    return tuple(value)


# Syntax checks (before expansion) ------------------------------------------------
def _check_syntax(change: ConfigChange) -> None:
    """Everything that can be checked without the env: quotes balance, required
    arguments are there, and values that expansion cannot change are valid."""
    ins, args = change.instruction, change.args
    if ins in ("CMD", "ENTRYPOINT"):
        return  # any text is a valid shell form, an empty one included
    if not args:
        raise InvalidArgument(f"--change {ins}: requires an argument", hint=_HINT)
    if change.exec_form is not None:
        if ins == "VOLUME" and not all(v.strip() for v in change.exec_form):
            raise InvalidArgument("--change VOLUME: empty volume path")
        return
    if ins in ("ENV", "LABEL"):
        _name_values(ins, args, None)
        return
    words = _words(ins, args, None)
    if ins in ("USER", "WORKDIR", "STOPSIGNAL") and len(words) != 1:
        raise InvalidArgument(f"--change {ins}: takes exactly one argument, got {len(words)}")
    elif "$" not in args and ins == "STOPSIGNAL":
        stop_signal(words[0])
    elif "$" not in args and ins == "EXPOSE":
        exposed_ports(ins, words)


# Words: the Dockerfile's own expander (ociimg/expand.py), as buildkit's --change uses
# its shell lexer ------------------------------------------------------------------
class _AnyValue(Mapping[str, str]):
    """The syntax check's env: every variable set (to a placeholder word), so ``$V`` and
    ``${V:?msg}`` pass and only the text's own quotes and braces can fail."""

    def __getitem__(self, name: str) -> str:
        return "x"

    def __contains__(self, name: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _words(ins: str, args: str, env: Mapping[str, str] | None) -> list[str]:
    """The words of ``args`` expanded with ``env``; None: the syntax check (the env is
    known only when the change is applied)."""
    from ociimg.expand import ExpandError, expand_words
    try:
        return expand_words(args, _AnyValue() if env is None else env)
    except ExpandError as exc:
        raise InvalidArgument(f"--change {ins}: {exc.message}", hint=_HINT) from None


def _name_values(ins: str, args: str, env: Mapping[str, str] | None
                 ) -> list[tuple[str, str]]:
    """ENV/LABEL pairs: ``k=v k2="v 2"`` or the legacy ``k the rest is the value``, every
    pair expanded against the env before the change (None: the syntax check)."""
    from ociimg.expand import ExpandError, parse_key_values
    try:
        pairs = parse_key_values(args, _AnyValue() if env is None else env, keyword=ins)
    except ExpandError as exc:
        raise InvalidArgument(f"--change {ins}: {exc.message}",
                              hint=f"{ins} NAME=VALUE; quote values with spaces: "
                                   'NAME="a b"') from None
    for name, _ in pairs:
        if not name:
            raise InvalidArgument(f"--change {ins}: empty name")
        if ins == "ENV" and "=" in name:
            raise InvalidArgument(f"--change ENV: name {_short(name)!r} contains '='")
    return pairs


# Values --------------------------------------------------------------------------
def exposed_ports(ins: str, words: list[str]) -> list[str]:
    """``80``, ``80/udp``, ``8000-8010/tcp`` → ``["80/tcp", …]`` (ranges expanded)."""
    out: list[str] = []
    for w in words:
        m = _PORT.fullmatch(w)
        if not m:
            raise InvalidArgument(f"--change {ins}: invalid port {_short(w)!r}",
                                  hint="PORT[-PORT][/tcp|udp|sctp], e.g. 8080/tcp")
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) else first
        proto = (m.group(3) or "tcp").lower()
        if not 0 < first <= last <= 65535:
            raise InvalidArgument(f"--change {ins}: invalid port range {_short(w)!r}",
                                  hint="ports are 1-65535, ranges low-high")
        if len(out) + (last - first + 1) > MAX_EXPOSED_PORTS:
            raise InvalidArgument(f"--change {ins}: more than {MAX_EXPOSED_PORTS} ports")
        out.extend(f"{p}/{proto}" for p in range(first, last + 1))
    return out


def stop_signal(text: str) -> str:
    """A signal name (``SIGTERM``, ``TERM``, ``SIGRTMIN+3``) or number, as docker accepts."""
    if text.isdigit():
        if 0 < int(text) <= signal.SIGRTMAX:
            return text
    else:
        name = text.upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        m = re.fullmatch(r"SIGRT(MIN|MAX)([+-]\d{1,2})?", name)
        if m:
            base = signal.SIGRTMIN if m.group(1) == "MIN" else signal.SIGRTMAX
            if signal.SIGRTMIN <= base + int(m.group(2) or 0) <= signal.SIGRTMAX:
                return name
        elif isinstance(getattr(signal, name, None), signal.Signals):
            return name
    raise InvalidArgument(f"--change STOPSIGNAL: invalid signal {_short(text)!r}",
                          hint="a name like SIGTERM or a number like 15")


def _shell_or_exec(change: ConfigChange) -> list[str]:
    if change.exec_form is not None:
        return list(change.exec_form)
    return ["/bin/sh", "-c", change.args]


def _env_map(env: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in env:
        name, _, value = item.partition("=")
        out[name] = value
    return out


def _set_env(env: list[str], name: str, value: str) -> list[str]:
    kept = [e for e in env if e.partition("=")[0] != name]
    return [*kept, f"{name}={value}"]


def apply_changes(config: dict[str, Any], changes: Sequence[ConfigChange]) -> dict[str, Any]:
    """The runtime config (``config.config``) with ``changes`` applied in order; a new
    dict. ENTRYPOINT clears an inherited Cmd unless these changes set CMD (buildkit)."""
    out = dict(config)
    sets_cmd = any(c.instruction == "CMD" for c in changes)
    for change in changes:
        _apply_one(out, change, sets_cmd)
    return out


def _apply_one(cfg: dict[str, Any], change: ConfigChange, sets_cmd: bool) -> None:
    ins = change.instruction
    env = _env_map(list(cfg.get("Env") or []))
    if ins == "CMD":
        cfg["Cmd"] = _shell_or_exec(change)
        return
    if ins == "ENTRYPOINT":
        cfg["Entrypoint"] = _shell_or_exec(change)
        if not sets_cmd:
            cfg.pop("Cmd", None)
        return
    if ins == "ENV":
        new_env = list(cfg.get("Env") or [])
        for name, value in _name_values(ins, change.args, env):
            new_env = _set_env(new_env, name, value)
        cfg["Env"] = new_env
        return
    if ins == "LABEL":
        cfg["Labels"] = {**(cfg.get("Labels") or {}), **dict(_name_values(ins, change.args,
                                                                           env))}
        return
    if ins == "VOLUME" and change.exec_form is not None:
        words = list(change.exec_form)
    else:
        words = _words(ins, change.args, env)
    if ins == "EXPOSE":
        if not words:
            raise InvalidArgument(f"--change EXPOSE: no port in {_short(change.args)!r} "
                                  "once expanded", hint="is a variable it names unset?")
        ports = dict(cfg.get("ExposedPorts") or {})
        ports.update({p: {} for p in exposed_ports(ins, words)})
        cfg["ExposedPorts"] = ports
    elif ins == "VOLUME":
        if not words or not all(w.strip() for w in words):
            raise InvalidArgument("--change VOLUME: empty volume path")
        cfg["Volumes"] = {**(cfg.get("Volumes") or {}), **{w: {} for w in words}}
    else:
        _apply_single_word(cfg, ins, words)


def _apply_single_word(cfg: dict[str, Any], ins: str, words: list[str]) -> None:
    if len(words) != 1 or not words[0]:
        raise InvalidArgument(f"--change {ins}: takes exactly one non-empty argument")
    value = words[0]
    if ins == "USER":
        cfg["User"] = value
    elif ins == "WORKDIR":
        # Relative to the previous WORKDIR, as the Dockerfile's is.
        path = posixpath.normpath(posixpath.join("/", cfg.get("WorkingDir") or "/", value))
        cfg["WorkingDir"] = "/" + path.lstrip("/")  # normpath keeps a leading //
    elif ins == "STOPSIGNAL":
        cfg["StopSignal"] = stop_signal(value)
