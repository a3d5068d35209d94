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
    regex: _Matcher
    parts: tuple[str, ...]

    def matches(self, path: str) -> bool:
        """The path itself or one of its parent dirs matches."""
        return bool(self.regex.match(path))


# A pattern becomes tokens: one-char regexes, and the unbounded ones: STAR ``[^/]*``,
# DSTAR ``(.*/)?`` and ANY (a final ``**``). Python's re backtracks, so k unbounded
# tokens can cost len(path)**k (``*a*a*a*a*a*ab`` against a 100-char name took 13 s, eight
# ``**/`` against a 40-deep path 50 s): a hostile context could stall the build. Runs
# whose leftmost match is provably the right one are made atomic (as fnmatch does); a
# pattern still left with more than one of each kind runs on a linear NFA instead.
_STAR, _DSTAR, _ANY = "[^/]*", "(.*/)?", ".*"
_UNBOUNDED = (_STAR, _DSTAR, _ANY)


def _tokens(pattern: str) -> list[str]:
    """patternmatcher's translation: ``*`` → ``[^/]*``, ``**/`` → ``(.*/)?``."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*" and pattern[i:i + 1] == "*":
            i += 1
            if pattern[i:i + 1] == "/":
                i += 1
            token = _ANY if i == len(pattern) else _DSTAR
            if not (token == _DSTAR and out[-1:] == [_DSTAR]):  # (.*/)?(.*/)? is one
                out.append(token)
        elif ch == "*":
            out.append(_STAR)
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":  # a regex class as written, one token ("[" alone: re's error)
            close = pattern.find("]", i + 1 if pattern[i:i + 1] in ("]", "^") else i)
            close = pattern.find("]", close + 1) if pattern[i:i + 2] == "^]" else close
            out.append(pattern[i - 1:close + 1] if close != -1 else ch)
            i = close + 1 if close != -1 else i
        elif ch in _REGEX_SPECIAL:
            out.append("\\" + ch)
        elif ch == "\\":
            out.append("\\" + pattern[i] if i < len(pattern) else "\\\\")
            i += 1
        else:
            out.append(ch)
    return out


def _compile(pattern: str) -> _Matcher:
    tokens = _tokens(pattern)
    out, loose, i = ["^"], {_STAR: 0, _DSTAR: 0, _ANY: 0}, 0
    while i < len(tokens):
        token = tokens[i]
        j = i + 1
        while j < len(tokens) and tokens[j] not in _UNBOUNDED:
            j += 1
        seg_tokens = tokens[i + 1:j]
        seg = "".join(seg_tokens)
        after = tokens[j] if j < len(tokens) else None
        # Leftmost is right, for a seg without classes (a regex class may match '/'): for
        # STAR when the next is STAR too (the classic glob argument) or when seg has a '/'
        # (then it can occur only once); for DSTAR when seg ends a directory and another
        # DSTAR follows (that one can reach every later start).
        plain = not any(t.startswith("[") and len(t) > 1 for t in seg_tokens)  # [^a] takes '/'
        if token == _STAR and seg and plain and (after == _STAR or "/" in seg_tokens):
            out.append(f"(?>[^/]*?{seg})")
        elif token == _DSTAR and plain and seg_tokens[-1:] == ["/"] and after == _DSTAR:
            out.append(f"(?>(?:.*?/)??{seg})")
        else:
            if token in loose:
                loose[token] += 1
            out.append(token + seg)
        i = j
    out.append("(/.*)?$")  # or a parent dir matches
    if loose[_STAR] > 1 or loose[_DSTAR] + loose[_ANY] > 1:
        return _Nfa(tokens)
    return re.compile("".join(out), re.DOTALL)


class _Nfa:
    """The tokens as a Thompson NFA: time linear in the path for any pattern."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.chars = [None if t in _UNBOUNDED else re.compile(t, re.DOTALL) for t in tokens]

    def _closure(self, states: set[int]) -> set[int]:
        todo = list(states)
        while todo:
            i = todo.pop()
            if 0 <= i < len(self.tokens) and self.tokens[i] in _UNBOUNDED \
                    and i + 1 not in states:
                states.add(i + 1)
                todo.append(i + 1)
        return states

    def match(self, path: str) -> bool:
        end = len(self.tokens)  # and -1 - i: inside DSTAR i, after its first char
        states = self._closure({0})
        for ch in path:
            if end in states and ch == "/":
                return True  # a parent dir matched
            nxt: set[int] = set()
            for i in states:
                if i < 0:  # inside DSTAR -1 - i: anything, a '/' may end it
                    nxt.add(i)
                    if ch == "/":
                        nxt.add(-i)  # the token after DSTAR -1 - i
                    continue
                if i == end:
                    continue
                token, one = self.tokens[i], self.chars[i]
                if one is not None:
                    if one.fullmatch(ch):
                        nxt.add(i + 1)
                elif token == _STAR:
                    if ch != "/":
                        nxt.add(i)
                elif token == _ANY:
                    nxt.add(i)
                else:  # DSTAR: start consuming
                    nxt.add(-1 - i)
                    if ch == "/":
                        nxt.add(i + 1)
            if not nxt:
                return False
            states = self._closure(nxt)
        return end in states


_Matcher = re.Pattern[str] | _Nfa


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
    for depth, part in enumerate(parts):  # a loop: both may be thousands deep
        if depth == len(pattern):
            return False
        head = pattern[depth]
        if "**" in head:
            return True  # any depth may follow
        if not _compile(head).match(part):
            return False
    return True
