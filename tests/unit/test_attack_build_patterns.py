"""Attacks on the build's pattern matchers (.containerignore, COPY --exclude, COPY/ADD
wildcards): Python's re backtracks, so a pattern with many stars against a long name was
exponential (``*a*a*a*a*a*ab`` on a 100-char name: 13 s; eight ``**/`` on a 40-deep
path: 50 s). Every matcher here must answer hostile input in bounded time, with the same
answers as before on ordinary input."""

from __future__ import annotations

import random
import re
import time

import pytest

from ociimg.build import ignore
from ociimg.build.ignore import IgnoreRules

HOSTILE = [("*a" * 12 + "b", "a" * 250), ("**/" * 40 + "x", "a/" * 2000 + "y"),
           ("**/a/" * 30 + "b", "a/" * 2000 + "y"), ("*a**/" * 20 + "b", "aa/" * 1000 + "y"),
           ("[^a]*" * 20 + "b", "bb/" * 1000), ("a/" * 3000 + "b", "a/" * 3000 + "c")]


@pytest.mark.parametrize(("pattern", "path"), HOSTILE)
def test_hostile_ignore_patterns_answer_in_bounded_time(pattern: str, path: str) -> None:
    rules = IgnoreRules.parse(f"{pattern}\n!{pattern}/keep")
    started = time.process_time()
    rules.excluded(path)
    rules.may_contain_included(path)
    assert time.process_time() - started < 2


def _reference(pattern: str) -> re.Pattern[str]:
    """The plain backtracking translation (patternmatcher's) on small input."""
    out = "".join(".*" if t == ignore._ANY else t for t in ignore._tokens(pattern))
    return re.compile(f"^{out}(/.*)?$", re.DOTALL)


def test_same_answers_as_the_plain_translation() -> None:
    rnd = random.Random(7)
    pieces = ["a", "b", "*", "**", "**/", "?", "/", "[ab]", "[^a]", "[]a]", "[^]]", ".",
              "\\*", "[a-b]", "a/", "*a*", "[/]"]
    for _ in range(4000):
        pattern = ignore.clean_path("".join(rnd.choice(pieces)
                                            for _ in range(rnd.randint(1, 8)))).lstrip("/")
        pattern = pattern or "a"
        try:
            want = _reference(pattern)
        except re.error:  # "[" unclosed: parse() makes it a BuildSyntaxError
            continue
        got, nfa = ignore._compile(pattern), ignore._Nfa(ignore._tokens(pattern))
        for _ in range(8):
            path = ignore.clean_path("".join(rnd.choice("ab/*.]aaa")
                                             for _ in range(rnd.randint(1, 12))).strip("/"))
            expected = bool(want.match(path))
            assert bool(got.match(path)) == expected == nfa.match(path), (pattern, path)


def test_copy_wildcards_and_trims_answer_in_bounded_time() -> None:
    """``COPY *a*a*a...b`` against a long name in the context, ``${V##*a*a...b}`` and
    ``${V/*a*a...b/x}`` against a long value (a base image's ENV)."""
    from ociimg.build.context import _component_regex
    from ociimg.expand import expand
    started = time.process_time()
    assert _component_regex("*a" * 12 + "b").fullmatch("a" * 250) is None
    assert _component_regex("*a" * 12 + "b").fullmatch("a" * 250 + "b")
    env = {"V": "a" * 300}
    assert expand("${V##" + "*a" * 10 + "b}", env) == env["V"]
    assert expand("${V%%" + "*a" * 10 + "b}", env) == env["V"]
    assert expand("${V#*a*a}", env) == "a" * 298 and expand("${V##*a*a}", env) == ""
    assert expand("${V/" + "*a" * 10 + "b/x}", env) == env["V"]
    assert expand("${V//a*a/x}", {"V": "baab-ab"}) == "bxb"  # the longest: aab-a
    assert expand("${V/a?/x}", {"V": "baab"}) == "bxb"
    assert time.process_time() - started < 2
