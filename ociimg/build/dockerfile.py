"""Containerfile/Dockerfile parser: text → stages of instructions. Pure: no I/O.

Follows the Dockerfile reference (sections "Format", "Parser directives", "Here-Documents",
"Environment replacement", "Shell and exec form") and, where it is vague, BuildKit's
``frontend/dockerfile/parser`` and ``instructions`` packages:

* the escape char (``\\`` or the ``# escape=`` directive) ending a line, trailing blanks
  allowed, continues it; comment lines and blank lines inside a continuation are dropped;
* directives (``syntax``, ``escape``, ``check``) count only in the leading run of
  directive-shaped comment lines; anything else ends the run and a later
  ``# escape=`` is an ordinary comment;
* an argument is exec form only if it parses as a JSON array; other JSON-looking text
  (``['a']``) is shell form, an array holding a non-string is an error;
* heredoc bodies (RUN/COPY/ADD, also under ONBUILD) follow the logical line, one body per
  ``<<NAME`` word, in order; the terminator line must equal NAME (after leading tabs are
  stripped for ``<<-``); bodies keep their line endings byte for byte (CR included).

Words are not expanded here: the builder expands them with the stage's env at the time
(``expand.py``), in the instructions Docker expands (``EXPANDED``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

from ociimg.errors import BuildSyntaxError
from ociimg.expand import (
    ExpandError,
    expand_words,
    parse_arg_decls,
    parse_words,
    split_key_values,
)

__all__ = ["Heredoc", "Instruction", "Stage", "Dockerfile", "parse", "KEYWORDS", "EXPANDED"]

KEYWORDS = frozenset({"ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM",
                      "HEALTHCHECK", "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL",
                      "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"})
# Reference "Environment replacement": the builder expands variables in these only;
# RUN, CMD and ENTRYPOINT are left to the shell (or to nobody, in exec form).
# ARG is not in the reference's list but its defaults expand (BuildKit testArgDefaultExpansion).
EXPANDED = frozenset({"ADD", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL", "USER",
                      "VOLUME", "WORKDIR", "ARG"})
_JSON_FORMS = frozenset({"RUN", "CMD", "ENTRYPOINT", "SHELL", "COPY", "ADD", "VOLUME"})
_HEREDOC_FORMS = frozenset({"RUN", "COPY", "ADD"})
_DIRECTIVES = frozenset({"syntax", "escape", "check"})
_NOT_TRIGGERS = frozenset({"ONBUILD", "FROM", "MAINTAINER"})

_STR, _BOOL, _LIST = "string", "bool", "list"
_FLAGS: dict[str, dict[str, str]] = {
    "FROM": {"platform": _STR},
    "RUN": {"mount": _LIST, "network": _STR, "security": _STR},
    "COPY": {"from": _STR, "chown": _STR, "chmod": _STR, "link": _BOOL, "parents": _BOOL,
             "exclude": _LIST},
    "ADD": {"chown": _STR, "chmod": _STR, "link": _BOOL, "checksum": _STR, "keep-git-dir": _BOOL,
            "exclude": _LIST, "unpack": _BOOL},
    "HEALTHCHECK": {"interval": _STR, "timeout": _STR, "start-period": _STR,
                    "start-interval": _STR, "retries": _STR},
}

_DIRECTIVE_RE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_HEREDOC_RE = re.compile(r"^(\d*)<<(-?)([^<]*)$")
_STAGE_NAME_RE = re.compile(r"^[a-z][a-z0-9\-_.]*$")
_LEADING_TABS_RE = re.compile(r"^\t+", re.MULTILINE)
_WHITESPACE = "\t\v\f\r "


@dataclass(frozen=True)
class Heredoc:
    name: str         # the delimiter, quotes removed
    content: str      # the body, line endings kept; leading tabs already stripped for <<-
    expand: bool      # False when the delimiter was quoted (<<'EOF', <<"EOF")
    chomp: bool       # written as <<-
    fd: int = 0       # the N of N<<EOF (0 when absent)


@dataclass(frozen=True)
class Instruction:
    keyword: str                 # upper-case
    args: list[str]              # JSON form: the array; shell form: [the raw text];
    #                              HEALTHCHECK: the config's Test (["NONE"], ["CMD", ...],
    #                              ["CMD-SHELL", text])
    json_form: bool
    flags: dict[str, list[str]]  # --from=x → {"from": ["x"]}; bool flags → ["true"|"false"]
    heredocs: list[Heredoc]
    line: int
    original: str
    trigger: Instruction | None = None  # ONBUILD's instruction, parsed and checked
    end_line: int = 0                   # last line, heredoc bodies included


@dataclass(frozen=True)
class Stage:
    index: int
    name: str | None
    base: str
    platform: str | None
    instructions: list[Instruction]
    line: int


@dataclass(frozen=True)
class Dockerfile:
    meta_args: list[Instruction]
    stages: list[Stage]
    escape: str
    filename: str
    directives: dict[str, str] = field(default_factory=dict)


def parse(text: str, filename: str = "Containerfile") -> Dockerfile:
    """Parse a whole Containerfile; BuildSyntaxError names file, line and instruction."""
    lines = _split_lines(text.removeprefix("\ufeff"))
    directives = _directives(lines, filename)
    escape = directives.get("escape", "\\")
    instructions = list(_Reader(lines, escape, filename).instructions())
    return _to_stages(instructions, escape, filename, directives)


def _split_lines(text: str) -> list[str]:
    """Lines split on LF only, each keeping its ending (a heredoc keeps CRs)."""
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _directives(lines: list[str], filename: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for number, raw in enumerate(lines, 1):
        match = _DIRECTIVE_RE.match(_chomp(raw))
        if not match or match.group(1).lower() not in _DIRECTIVES:
            break
        key, value = match.group(1).lower(), match.group(2)
        if key in found:
            raise BuildSyntaxError(f"only one {key} parser directive can be used",
                                   filename=filename, line=number)
        if key == "escape" and value not in ("\\", "`"):
            raise BuildSyntaxError(f"invalid escape token {value!r} does not match ` or \\",
                                   filename=filename, line=number)
        found[key] = value
    return found


def _chomp(raw: str) -> str:
    return raw.rstrip("\r\n")


def _is_comment(raw: str) -> bool:
    return _chomp(raw).lstrip().startswith("#")


class _Reader:
    """Logical lines (continuations joined) and the heredoc bodies after them."""

    def __init__(self, lines: list[str], escape: str, filename: str) -> None:
        self.lines = lines
        self.pos = 0
        self.filename = filename
        self.escape = escape
        self.continuation = re.compile(re.escape(escape) + r"[ \t]*$")

    def instructions(self) -> Iterator[Instruction]:
        while self.pos < len(self.lines):
            first = self.pos + 1
            raw = self.lines[self.pos]
            self.pos += 1
            if _is_comment(raw):
                continue
            line, ended = self._trim_continuation(_chomp(raw).lstrip())
            if ended and not line.strip():
                continue
            parts = [line]  # joined once: += per line is quadratic on a long continuation
            while not ended and self.pos < len(self.lines):
                raw = self.lines[self.pos]
                self.pos += 1
                if _is_comment(raw) or not _chomp(raw).strip():
                    continue
                part, ended = self._trim_continuation(_chomp(raw))
                parts.append(part)
            yield self._instruction("".join(parts), first)

    def _trim_continuation(self, line: str) -> tuple[str, bool]:
        match = self.continuation.search(line)
        return (line[:match.start()], False) if match else (line, True)

    def _instruction(self, line: str, number: int) -> Instruction:
        instruction = _parse_line(line, number, self.escape, self.filename)
        target = instruction.trigger or instruction
        if target.keyword not in _HEREDOC_FORMS or target.json_form or "<<" not in line:
            return replace(instruction, end_line=self.pos)
        try:
            words = _heredoc_words(target.original)
        except ExpandError as exc:
            raise _error(str(exc), instruction, self.filename) from None
        heredocs = [self._body(doc, instruction) for doc in words]
        if instruction.trigger:
            trigger = replace(instruction.trigger, heredocs=heredocs)
            instruction = replace(instruction, trigger=trigger)
        return replace(instruction, heredocs=heredocs, end_line=self.pos)

    def _body(self, doc: Heredoc, instruction: Instruction) -> Heredoc:
        body: list[str] = []
        while self.pos < len(self.lines):
            raw = self.lines[self.pos]
            self.pos += 1
            candidate = _chomp(raw).lstrip("\t") if doc.chomp else _chomp(raw)
            if candidate == doc.name:
                content = "".join(body)
                if doc.chomp:
                    content = _LEADING_TABS_RE.sub("", content)
                return replace(doc, content=content)
            body.append(raw)
        raise _error(f"unterminated heredoc {doc.name!r}", instruction, self.filename)


def _heredoc_words(line: str) -> list[Heredoc]:
    """The ``<<NAME`` words of a line (BuildKit's ``heredocsFromLine``)."""
    docs = []
    for word in parse_words(line):
        match = _HEREDOC_RE.match(word)
        if not match or not match.group(3):
            continue
        rest = match.group(3)
        names = expand_words(rest, {})
        if len(names) != 1:
            continue
        # A quote removed from the delimiter means "quoted": the body is not expanded.
        quoted = _count_quotes(names[0]) != _count_quotes(rest)
        docs.append(Heredoc(name=names[0], content="", expand=not quoted,
                            chomp=match.group(2) == "-", fd=int(match.group(1) or 0)))
    return docs


def _count_quotes(text: str) -> int:
    return text.count("'") + text.count('"')


def _error(message: str, instruction: Instruction, filename: str) -> BuildSyntaxError:
    return BuildSyntaxError(message, filename=filename, line=instruction.line,
                            instruction=instruction.keyword)


def _parse_line(line: str, number: int, escape: str, filename: str) -> Instruction:
    """One logical line → Instruction (flags split off, arguments checked, not expanded)."""
    stripped = line.strip(_WHITESPACE + "\n")
    parts = re.split(f"[{_WHITESPACE}]+", stripped, maxsplit=1)
    keyword = parts[0].upper()
    rest = parts[1] if len(parts) > 1 else ""

    def fail(message: str) -> BuildSyntaxError:
        return BuildSyntaxError(message, filename=filename, line=number, instruction=keyword)

    if keyword not in KEYWORDS:
        raise BuildSyntaxError(f"unknown instruction: {parts[0]}", filename=filename, line=number,
                               hint=f"instructions are {', '.join(sorted(KEYWORDS))}")
    flag_words, rest = _extract_flags(rest)
    try:
        flags = _parse_flags(keyword, flag_words)
        args, json_form, trigger = _arguments(keyword, rest.strip(), number, escape, filename)
    except ExpandError as exc:
        raise fail(str(exc)) from None
    except _ArgumentError as exc:
        raise fail(str(exc)) from None
    return Instruction(keyword=keyword, args=args, json_form=json_form, flags=flags, heredocs=[],
                       line=number, original=stripped, trigger=trigger)


class _ArgumentError(Exception):
    pass


def _arguments(keyword: str, rest: str, number: int, escape: str, filename: str
               ) -> tuple[list[str], bool, Instruction | None]:
    if keyword == "ONBUILD":
        return [rest], False, _trigger(rest, number, escape, filename)
    if keyword == "HEALTHCHECK":
        args, json_form = _healthcheck(rest)
        return args, json_form, None
    array = _json_array(rest) if keyword in _JSON_FORMS else None
    if array is not None:
        _check_arity(keyword, array, len(array))
        return array, True, None
    if not rest:
        raise _ArgumentError(f"{keyword} requires at least one argument")
    _check_shell_form(keyword, rest, escape)
    return [rest], False, None


def _trigger(rest: str, number: int, escape: str, filename: str) -> Instruction:
    if not rest:
        raise _ArgumentError("ONBUILD requires at least one argument")
    if rest.split(None, 1)[0].upper() == "ONBUILD":  # before parsing: it would recurse
        raise _ArgumentError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    trigger = _parse_line(rest, number, escape, filename)
    if trigger.keyword in _NOT_TRIGGERS:
        raise _ArgumentError(f"{trigger.keyword} isn't allowed as an ONBUILD trigger")
    return trigger


def _healthcheck(rest: str) -> tuple[list[str], bool]:
    kind, command = (rest.split(None, 1) + [""])[:2]
    kind, command = kind.upper(), command.strip()
    if kind == "NONE":
        if command:
            raise _ArgumentError("HEALTHCHECK NONE takes no arguments")
        return ["NONE"], False
    if kind != "CMD":
        raise _ArgumentError(f"Unknown type {kind!r} in HEALTHCHECK (try CMD)")
    array = _json_array(command)
    if array:
        return ["CMD", *array], True
    if not command or array == []:
        raise _ArgumentError("Missing command after HEALTHCHECK CMD")
    return ["CMD-SHELL", command], False


def _json_array(rest: str) -> list[str] | None:
    """The exec-form array, or None when ``rest`` is not a JSON array (shell form)."""
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except (ValueError, RecursionError):  # [[[[...: not a flat array, so the shell form
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(item, str) for item in value):
        raise _ArgumentError("when using JSON array syntax, arrays must be comprised of "
                             "strings only")
    return value


def _check_arity(keyword: str, args: list[str], count: int) -> None:
    if keyword in ("COPY", "ADD") and count < 2:
        raise _ArgumentError(f"{keyword} requires at least two arguments, but only {count} was "
                             "provided. Destination could not be determined")
    if keyword in ("RUN", "SHELL") and count == 0:
        raise _ArgumentError(f"{keyword} requires at least one argument")


def _check_shell_form(keyword: str, rest: str, escape: str) -> None:
    """Catch at parse time what would only fail at build time: quoting, ``${}``, arity."""
    if keyword == "SHELL":
        raise _ArgumentError("SHELL requires the arguments to be in JSON form")
    if keyword in ("ENV", "LABEL"):
        split_key_values(rest, keyword, escape)
    if keyword == "ARG":
        parse_arg_decls(rest, None, escape)
    if keyword in EXPANDED:
        words = expand_words(rest, _ANY_ENV, escape=escape)
        _check_arity(keyword, words, len(words))


class _AnyEnv(Mapping[str, str]):
    """Every variable set: checking syntax must not trip on ``${V:?}``."""

    def __getitem__(self, key: str) -> str:
        return "x"

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


_ANY_ENV = _AnyEnv()


def _extract_flags(line: str) -> tuple[list[str], str]:
    """Leading ``--name[=value]`` words and the rest (BuildKit's ``extractBuilderFlags``).

    Quotes inside a flag word are removed and ``\\`` escapes the next char; a bare
    ``--`` ends the flags.
    """
    words: list[str] = []
    pos = 0
    while True:
        while pos < len(line) and line[pos].isspace():
            pos += 1
        if not line.startswith("--", pos):
            return words, line[pos:]
        word, pos = _flag_word(line, pos)
        if word == "--":
            return words, line[pos:]
        words.append(word)


def _flag_word(line: str, pos: int) -> tuple[str, int]:
    out: list[str] = []
    quote = ""
    while pos < len(line):
        ch = line[pos]
        pos += 1
        if not quote and ch.isspace():
            break
        if not quote and ch in "'\"":
            quote = ch
            continue
        if quote and ch == quote:
            quote = ""
            continue
        if ch == "\\":
            if pos == len(line):
                continue
            ch = line[pos]
            pos += 1
        out.append(ch)
    return "".join(out), pos


def _parse_flags(keyword: str, words: list[str]) -> dict[str, list[str]]:
    allowed = _FLAGS.get(keyword, {})
    flags: dict[str, list[str]] = {}
    for word in words:
        name, has_value, value = word[2:].partition("=")
        kind = allowed.get(name)
        if kind is None:
            raise _ArgumentError(f"unknown flag: {name}")
        if kind == _BOOL:
            if has_value and value.lower() not in ("true", "false"):
                raise _ArgumentError(f"expecting boolean value for flag {name}, not: {value}")
            value = value.lower() if has_value else "true"
        elif not has_value:
            raise _ArgumentError(f"missing a value on flag: {name}")
        if name in flags and kind != _LIST:
            raise _ArgumentError(f"duplicate flag specified: {name}")
        flags.setdefault(name, []).append(value)
    return flags


def _to_stages(instructions: list[Instruction], escape: str, filename: str,
               directives: dict[str, str]) -> Dockerfile:
    meta_args: list[Instruction] = []
    stages: list[tuple[Instruction, list[Instruction]]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            stages.append((instruction, []))
        elif stages:
            stages[-1][1].append(instruction)
        elif instruction.keyword == "ARG":
            meta_args.append(instruction)
        else:
            raise _error("no build stage in current context", instruction, filename)
    if not instructions:
        raise BuildSyntaxError("file with no instructions", filename=filename, line=1)
    if not stages:
        raise BuildSyntaxError("no FROM instruction: nothing to build", filename=filename,
                               line=instructions[-1].line)
    built: list[Stage] = []
    names: set[str] = set()
    for index, (origin, body) in enumerate(stages):
        stage = _stage(index, origin, body, filename)
        if stage.name in names:
            raise _error(f"duplicate stage name {stage.name!r}", origin, filename)
        if stage.name:
            names.add(stage.name)
        built.append(stage)
    return Dockerfile(meta_args=meta_args, stages=built, escape=escape, filename=filename,
                      directives=directives)


def _stage(index: int, origin: Instruction, body: list[Instruction], filename: str) -> Stage:
    words = origin.args[0].split()
    if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
        raise _error("FROM requires either one or three arguments (FROM image [AS name])",
                     origin, filename)
    name = words[2].lower() if len(words) == 3 else None
    if name is not None and not _STAGE_NAME_RE.match(name):
        raise _error(f"invalid name for build stage: {words[2]!r}, name can't start with a "
                     "number or contain symbols", origin, filename)
    platform = origin.flags.get("platform", [None])[0]
    return Stage(index=index, name=name, base=words[0], platform=platform, instructions=body,
                 line=origin.line)
