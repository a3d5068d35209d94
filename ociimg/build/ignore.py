""".containerignore / .dockerignore rules, with moby/patternmatcher's semantics.

Docker's reference, ".dockerignore file": a line starting with ``#`` is a comment (only
in column 0: ``  #x`` is a pattern), lines are trimmed and cleaned like Go's
``filepath.Clean`` (``./a/`` is ``a``), a leading ``/`` is dropped, ``*`` and ``?`` never
match ``/``, ``**`` matches any number of directories (zero included), ``!`` makes an
exception, and the last rule that matches wins.

A rule matches a path if it matches the path *or one of its parent directories*
(patternmatcher's ``MatchesOrParentMatches``; the older one-parent ``Matches`` is
deprecated as buggy), so excluding a directory excludes everything in it and ``!dir``
brings all of ``dir`` back. A walker may skip an excluded directory only when no
exception could match below it (:meth:`IgnoreRules.may_contain_included`), the case
moby's prefix check got wrong for ``!**/*.py`` (docker/cli#2919, moby#30018).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from ociimg.errors import BuildSyntaxError

__all__ = ["IgnoreRules", "clean_path"]

_REGEX_SPECIAL = frozenset(".+()|{}$")


def clean_path(path: str) -> str:
    """Go's ``filepath.Clean`` for slash paths ("" → ".")."""
    if not path:
        return "."
    cleaned = posixpath.normpath(path)
    # normpath keeps a leading "//"; Go's Clean folds it to "/".
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


@dataclass(frozen=True)
class _Rule:
    pattern: str
    exclusion: bool
    regex: re.Pattern[str]
    parts: tuple[str, ...]

    def matches(self, path: str) -> bool:
        """The path itself or one of its parent dirs matches."""
        if self.regex.match(path):
            return True
        parts = path.split("/")
        return any(self.regex.match("/".join(parts[:i])) for i in range(1, len(parts)))


def _compile(pattern: str) -> re.Pattern[str]:
    """patternmatcher's translation: ``*`` → ``[^/]*``, ``**/`` → ``(.*/)?``."""
    out = ["^"]
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*" and pattern[i:i + 1] == "*":
            i += 1
            if pattern[i:i + 1] == "/":
                i += 1
            out.append(".*" if i == len(pattern) else "(.*/)?")
        elif ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch in _REGEX_SPECIAL:
            out.append("\\" + ch)
        elif ch == "\\":
            out.append("\\" + pattern[i] if i < len(pattern) else "\\\\")
            i += 1
        else:
            out.append(ch)
    out.append("$")
    return re.compile("".join(out), re.DOTALL)


class IgnoreRules:
    def __init__(self, rules: list[_Rule]) -> None:
        self.rules = rules
        self.has_exceptions = any(rule.exclusion for rule in rules)

    @classmethod
    def parse(cls, text: str, filename: str = ".containerignore") -> IgnoreRules:
        rules = []
        for number, line in enumerate(text.removeprefix("\ufeff").splitlines(), 1):
            if line.startswith("#"):
                continue
            pattern = line.strip()
            if not pattern:
                continue
            exclusion = pattern.startswith("!")
            if exclusion:
                pattern = pattern[1:].strip()
                if not pattern:
                    raise BuildSyntaxError('illegal exclusion pattern: "!"', filename=filename,
                                           line=number)
            pattern = clean_path(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
            try:
                regex = _compile(pattern)
            except re.error as exc:
                raise BuildSyntaxError(f"bad pattern {line.strip()!r}: {exc}", filename=filename,
                                       line=number) from None
            rules.append(_Rule(pattern, exclusion, regex, tuple(pattern.split("/"))))
        return cls(rules)

    def excluded(self, relpath: str, is_dir: bool = False) -> bool:
        """True when the context-relative path (or a parent dir) is ignored."""
        path = clean_path(relpath.lstrip("/"))
        matched = False
        for rule in self.rules:
            # An inclusion cannot change an already excluded path and vice versa.
            if rule.exclusion != matched:
                continue
            if rule.matches(path):
                matched = not rule.exclusion
        return matched

    def may_contain_included(self, reldir: str) -> bool:
        """Could an exception rule re-include something below this (excluded) dir?"""
        if not self.has_exceptions:
            return False
        parts = clean_path(reldir.lstrip("/")).split("/")
        return any(rule.exclusion and _prefix_may_match(rule.parts, parts) for rule in self.rules)


def _prefix_may_match(pattern: tuple[str, ...], parts: list[str]) -> bool:
    """Can a path starting with ``parts`` match ``pattern``, component by component?"""
    if not parts:
        return True
    if not pattern:
        return False
    head = pattern[0]
    if "**" in head:
        return True  # any depth may follow
    if not _compile(head).match(parts[0]):
        return False
    return _prefix_may_match(pattern[1:], parts[1:])
