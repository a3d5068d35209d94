"""``--format`` templates as docker and podman take them: a Go-template-like subset.

``{{.Field}}`` (nested: ``{{.Config.Env}}``), ``{{json .Field}}``, ``{{upper .F}}``,
``{{lower .F}}``, ``{{index .Labels "key"}}``, ``{{join .List ","}}``; ``\\t`` and
``\\n`` typed in the format are a tab and a newline (docker's formatter does the same);
a ``table`` prefix prints a header row (each field's column name) and aligns the
columns. Values come from the image or container (hostile): the caller escapes the
rendered text for the terminal. Anything outside the subset is one clear error naming
the fields there are, never Python evaluation.

Shared by every command with ``--format`` (images, inspect, ps, …): ``render`` for one
object, ``render_table`` for rows.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from ociimg.errors import InvalidArgument

_ACTION_RE = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)
_FUNCS = ("json", "upper", "lower", "index", "join", "title", "len")


def _escapes(fmt: str) -> str:
    return fmt.replace("\\t", "\t").replace("\\n", "\n")


def is_table(fmt: str) -> bool:
    return fmt.startswith("table")


def render(fmt: str, obj: Mapping[str, Any]) -> str:
    """One object through the template (``table`` prefix ignored)."""
    body = _escapes(fmt[len("table"):].lstrip() if is_table(fmt) else fmt)
    return _ACTION_RE.sub(lambda m: _text(_evaluate(m.group(1), obj, fmt)), body)


def render_table(fmt: str, rows: Sequence[Mapping[str, Any]],
                 headers: Mapping[str, str] | None = None) -> list[str]:
    """Lines for ``rows``: with a ``table`` prefix, a header line first and the
    tab-separated cells aligned into columns (as Go's tabwriter, padding 3)."""
    if not is_table(fmt):
        return [render(fmt, row) for row in rows]
    body = _escapes(fmt[len("table"):].lstrip()) or "\t".join(
        f"{{{{.{k}}}}}" for k in (headers or {}))
    header = _ACTION_RE.sub(lambda m: _header(m.group(1), headers or {}), body)
    lines = [header, *(render(body, row) for row in rows)]
    return _align(lines)


def _header(action: str, headers: Mapping[str, str]) -> str:
    field = next((w for w in action.split() if w.startswith(".")), action)
    name = field.lstrip(".").split(".")[-1]
    return headers.get(name, re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).upper())


def _align(lines: list[str]) -> list[str]:
    cells = [line.split("\t") for line in lines]
    widths: dict[int, int] = {}
    for row in cells:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths.get(i, 0), len(cell))
    return ["".join(c.ljust(widths[i] + 3) if i < len(row) - 1 else c
                    for i, c in enumerate(row)).rstrip() for row in cells]


def _evaluate(action: str, obj: Mapping[str, Any], fmt: str) -> Any:
    try:
        words = shlex.split(action)
    except ValueError as exc:
        raise InvalidArgument(f"template {fmt[:80]!r}: {exc}") from None
    if not words:
        raise InvalidArgument(f"template {fmt[:80]!r}: empty action {{{{}}}}")
    if words[0] in _FUNCS:
        return _call(words[0], [_argument(w, obj, fmt) for w in words[1:]], fmt)
    if len(words) != 1:
        raise InvalidArgument(f"template {fmt[:80]!r}: unknown function {words[0][:40]!r}",
                              hint=f"functions: {', '.join(_FUNCS)}")
    return _argument(words[0], obj, fmt)


def _argument(word: str, obj: Mapping[str, Any], fmt: str) -> Any:
    if word == ".":
        return obj
    if not word.startswith("."):
        return word  # a literal (shlex removed its quotes)
    value: Any = obj
    for part in word[1:].split("."):
        if not isinstance(value, Mapping) or part not in value:
            fields = ", ".join(f".{k}" for k in value) if isinstance(value, Mapping) else ""
            raise InvalidArgument(f"template {fmt[:80]!r}: no field {word[:60]!r}",
                                  hint=f"fields here: {fields}" if fields else None)
        value = value[part]
    return value


def _call(name: str, args: list[Any], fmt: str) -> Any:
    if name == "json":
        return json.dumps(args[0] if args else None, separators=(",", ":"))
    if name == "index":
        if len(args) != 2:
            raise InvalidArgument(f"template {fmt[:80]!r}: index takes a map and a key")
        container, key = args
        if isinstance(container, Mapping):
            return container.get(key, "")
        if isinstance(container, list) and str(key).isdigit() and int(key) < len(container):
            return container[int(key)]
        return ""
    if name == "join":
        items = args[0] if args else []
        return (args[1] if len(args) > 1 else " ").join(_text(i) for i in items or [])
    if name == "len":
        return len(args[0]) if args and hasattr(args[0], "__len__") else 0
    text = _text(args[0] if args else "")
    return {"upper": text.upper(), "lower": text.lower(), "title": text.title()}[name]


def _text(value: Any) -> str:
    """Go's default printing for the common kinds: maps as map[k:v], lists as [a b],
    none as <no value>, booleans lower-case."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{_text(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(_text(v) for v in value) + "]"
    return str(value)
