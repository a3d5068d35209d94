"""The metadata instructions: each changes a stage's state (its config, ARGs, SHELL) and
nothing on disk. Pure: a function per instruction, as imagebuilder's dispatchers.

Each returns the history ``created_by`` in BuildKit's form (``ENV A=b``, ``CMD ["sh"
"-c" "x"]``, Go's ``%q`` of the list). ENTRYPOINT drops an inherited CMD unless this
stage set one (BuildKit ``convert.go``); EXPOSE defaults to tcp and takes ranges;
HEALTHCHECK durations are Go durations in nanoseconds, as Docker stores them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from ociimg.build.stages import StageState
from ociimg.errors import BuildError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ociimg.build.dockerfile import Instruction

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)")
_DURATION_NS = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
                "h": 3600 * 10**9}
_PORT = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?(?:/(tcp|udp|sctp))?", re.IGNORECASE)


class Context:
    """What a metadata instruction sees besides the state: the escape char, the
    --build-args and the meta ARGs (for ``ARG name`` importing a global value)."""

    def __init__(self, escape: str, build_args: Mapping[str, str],
                 meta: Mapping[str, str]) -> None:
        self.escape = escape
        self.build_args = build_args
        self.meta = meta

    def words(self, state: StageState, ins: Instruction) -> list[str]:
        from ociimg.expand import expand, expand_words
        env = state.expansion_env()
        if ins.json_form:
            return [expand(a, env, escape=self.escape) for a in ins.args]
        return expand_words(ins.args[0], env, escape=self.escape)

    def pairs(self, state: StageState, ins: Instruction) -> list[tuple[str, str]]:
        from ociimg.expand import parse_key_values
        return parse_key_values(ins.args[0], state.expansion_env(), self.escape, ins.keyword)


Handler = Callable[[StageState, "Instruction", Context], str]


def apply(state: StageState, ins: Instruction, ctx: Context) -> str | None:
    """Apply ``ins`` if it is a metadata instruction: its history text; else None."""
    handler = HANDLERS.get(ins.keyword)
    return None if handler is None else handler(state, ins, ctx)


def arg_decls(ins: Instruction, env: Mapping[str, str], escape: str
              ) -> list[tuple[str, str | None]]:
    from ociimg.expand import parse_arg_decls
    return parse_arg_decls(ins.args[0], env, escape)


def _env(state: StageState, ins: Instruction, ctx: Context) -> str:
    pairs = ctx.pairs(state, ins)
    for key, value in pairs:
        state.set_env(key, value)
    return "ENV " + " ".join(f"{k}={v}" for k, v in pairs)


def _arg(state: StageState, ins: Instruction, ctx: Context) -> str:
    decls = arg_decls(ins, state.expansion_env(), ctx.escape)
    for name, default in decls:
        state.declare_arg(name, default, ctx.build_args, ctx.meta)
    return "ARG " + " ".join(f"{n}={state.args[n]}" if n in state.args else n
                             for n, _ in decls)


def _label(state: StageState, ins: Instruction, ctx: Context) -> str:
    pairs = ctx.pairs(state, ins)
    state.config["Labels"] = {**(state.config.get("Labels") or {}), **dict(pairs)}
    return "LABEL " + " ".join(f"{k}={v}" for k, v in pairs)


def _maintainer(state: StageState, ins: Instruction, ctx: Context) -> str:
    state.author = ins.args[0]
    return f"MAINTAINER {ins.args[0]}"


def _expose(state: StageState, ins: Instruction, ctx: Context) -> str:
    added = [port for word in ctx.words(state, ins) for port in ports(word)]
    state.config["ExposedPorts"] = {**(state.config.get("ExposedPorts") or {}),
                                    **{p: {} for p in added}}
    return "EXPOSE " + " ".join(added)


def _volume(state: StageState, ins: Instruction, ctx: Context) -> str:
    words = ctx.words(state, ins)
    if any(not w.strip() for w in words):
        raise BuildError("VOLUME specified can not be an empty string")
    state.config["Volumes"] = {**(state.config.get("Volumes") or {}), **{w: {} for w in words}}
    return "VOLUME " + json.dumps(words)


def _user(state: StageState, ins: Instruction, ctx: Context) -> str:
    state.config["User"] = ctx.words(state, ins)[0]
    return f"USER {state.config['User']}"


def _stopsignal(state: StageState, ins: Instruction, ctx: Context) -> str:
    from ociimg.image.changes import stop_signal
    state.config["StopSignal"] = stop_signal(ctx.words(state, ins)[0])
    return f"STOPSIGNAL {state.config['StopSignal']}"


def command(state: StageState, ins: Instruction) -> list[str]:
    """Exec form as written; shell form through the stage's SHELL."""
    return list(ins.args) if ins.json_form else [*state.shell, ins.args[0]]


def _cmd(state: StageState, ins: Instruction, ctx: Context) -> str:
    state.config["Cmd"] = command(state, ins)
    state.sets_cmd = True
    return f"CMD {go_quoted(state.config['Cmd'])}"


def _entrypoint(state: StageState, ins: Instruction, ctx: Context) -> str:
    state.config["Entrypoint"] = command(state, ins)
    if not state.sets_cmd:
        state.config.pop("Cmd", None)  # an inherited CMD does not fit a new ENTRYPOINT
    return f"ENTRYPOINT {go_quoted(state.config['Entrypoint'])}"


def _shell(state: StageState, ins: Instruction, ctx: Context) -> str:
    if not ins.json_form:
        raise BuildError("SHELL requires the arguments to be in JSON form",
                         hint='write it as SHELL ["/bin/bash", "-c"]')
    state.shell = list(ins.args)
    state.config["Shell"] = list(ins.args)
    return f"SHELL {go_quoted(ins.args)}"


def _healthcheck(state: StageState, ins: Instruction, ctx: Context) -> str:
    check: dict[str, Any] = {"Test": list(ins.args)}
    for flag, key in (("interval", "Interval"), ("timeout", "Timeout"),
                      ("start-period", "StartPeriod"), ("start-interval", "StartInterval")):
        if ins.flags.get(flag):
            check[key] = duration(ins.flags[flag][-1], flag)
    if ins.flags.get("retries"):
        text = ins.flags["retries"][-1]
        if not text.isdigit():
            raise BuildError(f"--retries={text}: not a number")
        check["Retries"] = int(text)
    state.config["Healthcheck"] = check
    return f"HEALTHCHECK {go_quoted(check['Test'])}"


def _onbuild(state: StageState, ins: Instruction, ctx: Context) -> str:
    state.config["OnBuild"] = [*(state.config.get("OnBuild") or []), ins.args[0]]
    return f"ONBUILD {ins.args[0]}"


HANDLERS: dict[str, Handler] = {
    "ENV": _env, "ARG": _arg, "LABEL": _label, "MAINTAINER": _maintainer,
    "EXPOSE": _expose, "VOLUME": _volume, "USER": _user, "STOPSIGNAL": _stopsignal,
    "CMD": _cmd, "ENTRYPOINT": _entrypoint, "SHELL": _shell, "HEALTHCHECK": _healthcheck,
    "ONBUILD": _onbuild,
}


def ports(word: str) -> list[str]:
    """``80``, ``53/udp``, ``8000-8002`` → ["80/tcp"], ["53/udp"], three tcp ports."""
    m = _PORT.fullmatch(word)
    if not m:
        raise BuildError(f"EXPOSE {word}: invalid port", hint="write PORT[-PORT][/tcp|udp|sctp]")
    low = int(m.group(1))
    high = int(m.group(2) or low)
    proto = (m.group(3) or "tcp").lower()
    if not 0 < low <= high <= 65535:
        raise BuildError(f"EXPOSE {word}: invalid port range")
    return [f"{p}/{proto}" for p in range(low, high + 1)]


def duration(text: str, flag: str) -> int:
    """A Go duration (``30s``, ``1m30s``, ``500ms``) in nanoseconds."""
    total, pos = 0, 0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += int(float(m.group(1)) * _DURATION_NS[m.group(2)])
        pos = m.end()
    if pos != len(text) or not text:
        raise BuildError(f"--{flag}={text}: not a duration", hint="write e.g. 30s, 1m30s")
    return total


def go_quoted(items: list[str]) -> str:
    """Go's ``%q`` of a []string, as BuildKit writes CMD/ENTRYPOINT history."""
    return "[" + " ".join(json.dumps(i) for i in items) + "]"
