"""The stage graph and the per-stage build state (pure: no I/O).

BuildKit's ``dockerfile2llb``: only the stages the target needs are built (FROM an earlier
stage, ``COPY --from``, ``RUN --mount=from=``), in dependency order; a reference to an
unknown stage number, an unknown ``--target`` or a cycle is an error. A stage's state is
imagebuilder's ``Builder``: the runtime config being built, the ARGs in scope, SHELL.

ARG scoping (reference.md "Scope"): ARGs before the first FROM (meta ARGs) are seen by
FROM lines only; inside a stage an ``ARG name`` without a default imports the meta value;
an ARG takes effect from its line on, ENV wins over an ARG of the same name, and ARG
values reach RUN's environment but never the image config. The proxy ARGs work without
a declaration and stay out of history and the cache key unless declared; the platform
ARGs are meta ARGs (``ARG TARGETPLATFORM`` in a stage imports them).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ociimg.errors import BuildError
from ociimg.spec import Platform

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ociimg.build.dockerfile import Dockerfile, Instruction, Stage

PROXY_ARGS = frozenset(
    name for base in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
    for name in (base, base.lower()))
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHELL = ("/bin/sh", "-c")
_INDEX = re.compile(r"[0-9]+")


def platform_args(target: Platform, build: Platform) -> dict[str, str]:
    """BuildKit's predefined platform ARGs (global scope)."""
    out: dict[str, str] = {}
    for prefix, p in (("TARGET", target), ("BUILD", build)):
        out[f"{prefix}PLATFORM"] = f"{p.os}/{p.architecture}" + \
            (f"/{p.variant}" if p.variant else "")
        out[f"{prefix}OS"] = p.os
        out[f"{prefix}ARCH"] = p.architecture
        out[f"{prefix}VARIANT"] = p.variant or ""
    return out


# The graph ------------------------------------------------------------------------
def stage_by_name(df: Dockerfile, name: str) -> int | None:
    """The index of the stage a FROM or ``--from`` names: its AS name (any case) or,
    for ``--from``, its number; None when it names an image."""
    lowered = name.lower()
    for stage in df.stages:
        if stage.name is not None and stage.name == lowered:
            return stage.index
    return None


def from_reference(df: Dockerfile, stage: Stage, text: str, what: str) -> int | None:
    """``--from=`` of ``stage``: a stage (name or earlier number) or None for an image."""
    if _INDEX.fullmatch(text):
        index = int(text)
        if index >= stage.index:
            raise BuildError(f"{df.filename}:{stage.line}: {what}: stage {index} is not an "
                             "earlier stage", hint="--from=N names one of the stages above")
        return index
    found = stage_by_name(df, text)
    if found == stage.index:
        raise BuildError(f"{df.filename}:{stage.line}: {what}: stage {text!r} refers to itself")
    return found


def dependencies(df: Dockerfile, stage: Stage, base: str) -> set[int]:
    """The stages ``stage`` needs: its base (``base``, FROM's expanded text) and the
    sources of its ``COPY --from``/``ADD --from`` and ``RUN --mount=from=``."""
    deps: set[int] = set()
    found = stage_by_name(df, base)
    if found is not None:
        if found == stage.index:
            raise BuildError(f"{df.filename}:{stage.line}: FROM {base}: a stage cannot be "
                             "its own base")
        deps.add(found)
    for ins in stage.instructions:
        for ref in from_references(ins):
            index = from_reference(df, stage, ref, f"{ins.keyword} --from")
            if index is not None:
                deps.add(index)
    return deps


def from_references(ins: Instruction) -> list[str]:
    refs = list(ins.flags.get("from", [])) if ins.keyword in ("COPY", "ADD") else []
    if ins.keyword == "RUN":
        for mount in ins.flags.get("mount", []):
            ref = parse_mount_fields(mount).get("from")
            if ref:
                refs.append(ref)
    return refs


def parse_mount_fields(text: str) -> dict[str, str]:
    """``type=cache,target=/x,ro`` → {"type": "cache", "target": "/x", "ro": "true"}."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        key = {"dst": "target", "destination": "target", "src": "source",
               "readonly": "ro"}.get(key, key)
        if not sep and key not in ("ro", "rw", "required"):  # `target` alone is no path
            raise BuildError(f"--mount {text}: invalid field {part!r}: must be a key=value "
                             "pair")
        out[key] = value if sep else "true"
    return out


def build_order(df: Dockerfile, bases: Mapping[int, str], target: str | None) -> list[int]:
    """The stages to build for ``target`` (default: the last), dependencies first."""
    if not df.stages:
        raise BuildError(f"{df.filename}: no FROM instruction",
                         hint="a Containerfile starts with FROM IMAGE (or FROM scratch)")
    if target is None:
        goal = len(df.stages) - 1
    else:
        found = stage_by_name(df, target)
        if found is None:
            raise BuildError(f"target stage {target!r} could not be found",
                             hint="--target names a stage: FROM IMAGE AS NAME")
        goal = found
    deps = {s.index: dependencies(df, s, bases[s.index]) for s in df.stages}
    order: list[int] = []
    state: dict[int, str] = {}

    def visit(index: int, path: list[int]) -> None:
        if state.get(index) == "done":
            return
        if state.get(index) == "visiting":
            names = " → ".join(_stage_label(df, i) for i in [*path, index])
            raise BuildError(f"{df.filename}: circular dependency between stages: {names}")
        state[index] = "visiting"
        for dep in sorted(deps[index]):
            visit(dep, [*path, index])
        state[index] = "done"
        order.append(index)

    visit(goal, [])
    return order


def _stage_label(df: Dockerfile, index: int) -> str:
    return df.stages[index].name or str(index)


# The state --------------------------------------------------------------------------
@dataclass
class StageState:
    """What a stage's instructions have built so far, besides its filesystem."""

    config: dict[str, Any]                       # the image config's runtime part
    args: dict[str, str] = field(default_factory=dict)  # ARGs in scope, declared
    shell: list[str] = field(default_factory=lambda: list(DEFAULT_SHELL))
    sets_cmd: bool = False                       # CMD given in this stage (ENTRYPOINT keeps it)
    base_onbuild: list[str] = field(default_factory=list)  # the base's triggers, to run
    author: str | None = None                    # MAINTAINER

    @classmethod
    def from_base(cls, config: Mapping[str, Any], inherited_args: Mapping[str, str]) -> StageState:
        cfg = copy.deepcopy(dict(config))
        triggers = list(cfg.pop("OnBuild", None) or [])  # run in the child, cleared there
        env = list(cfg.get("Env") or [])
        if not any(e.startswith("PATH=") for e in env):
            env.insert(0, f"PATH={DEFAULT_PATH}")
        cfg["Env"] = env
        shell = cfg.get("Shell")
        return cls(cfg, dict(inherited_args), list(shell) if shell else list(DEFAULT_SHELL),
                   base_onbuild=triggers)

    # Environment ---------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.config.get("Env") or []:
            key, _, value = item.partition("=")
            out[key] = value
        return out

    def expansion_env(self) -> dict[str, str]:
        """What ``$VAR`` sees in the instructions Docker expands: ARGs, then ENV over them."""
        return {**self.args, **self.env()}

    def run_env(self, build_args: Mapping[str, str]) -> list[str]:
        """RUN's environment: ENV, plus ARGs ENV does not set, plus undeclared proxy ARGs."""
        env = self.env()
        extra = {k: v for k, v in build_args.items() if k in PROXY_ARGS and k not in self.args}
        extra.update(self.args)
        return [f"{k}={v}" for k, v in env.items()] + \
            [f"{k}={v}" for k, v in extra.items() if k not in env]

    def set_env(self, name: str, value: str) -> None:
        env = [e for e in self.config.get("Env") or [] if e.partition("=")[0] != name]
        env.append(f"{name}={value}")
        self.config["Env"] = env

    def declare_arg(self, name: str, default: str | None, build_args: Mapping[str, str],
                    meta: Mapping[str, str]) -> None:
        if name in build_args:
            value: str | None = build_args[name]
        elif default is not None:
            value = default
        else:
            value = meta.get(name)
        if value is None:  # declared without a value: not set in RUN's environment
            self.args.pop(name, None)
            return
        self.args[name] = value

    def workdir(self) -> str:
        return self.config.get("WorkingDir") or "/"
