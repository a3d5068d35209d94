"""Attacks on the Containerfile parser and the word expander: hostile nesting and size
are one-line errors (or plain text) in bounded time, never a RecursionError or a
quadratic parse."""

from __future__ import annotations

import pytest

from ociimg.build import dockerfile
from ociimg.errors import BuildSyntaxError
from ociimg.expand import ExpandError, expand


def test_deeply_nested_substitutions_are_an_error() -> None:
    assert expand("${a:-" * 60 + "x" + "}" * 60, {}) == "x"
    for depth in (65, 600, 50_000):
        with pytest.raises(ExpandError, match="nested"):
            expand("${a:-" * depth + "x" + "}" * depth, {})


def test_chained_onbuild_is_refused_without_recursing() -> None:
    with pytest.raises(BuildSyntaxError, match="Chaining ONBUILD"):
        dockerfile.parse("FROM x\nONBUILD ONBUILD RUN x\n")
    with pytest.raises(BuildSyntaxError, match="Chaining ONBUILD"):
        dockerfile.parse("FROM x\n" + "ONBUILD " * 10_000 + "RUN x\n")


def test_deeply_nested_json_is_the_shell_form() -> None:
    text = "[" * 100_000 + "]" * 100_000
    df = dockerfile.parse(f"FROM x\nRUN {text}\n")
    run = df.stages[0].instructions[0]
    assert not run.json_form and run.args == [text]


def test_a_long_continuation_parses_whole() -> None:
    """4 MB of continuation lines (the reader accepts 16 MiB), joined once: a join per
    line was quadratic (80 s)."""
    text = "FROM x\nRUN a \\\n" + "b \\\n" * 1_000_000 + "c\n"
    df = dockerfile.parse(text)
    assert df.stages[0].instructions[0].args[0].count("b") == 1_000_000


def test_mount_fields_without_a_value_are_only_the_flags() -> None:
    """``--mount=target`` bound the whole context at WORKDIR/true; BuildKit refuses it."""
    from ociimg.build.stages import parse_mount_fields
    from ociimg.errors import BuildError
    assert parse_mount_fields("type=bind,source=a,target=/t,ro,rw,required") == {
        "type": "bind", "source": "a", "target": "/t", "ro": "true", "rw": "true",
        "required": "true"}
    for bad in ("target", "type=bind,source", "type=cache,target=/c,id"):
        with pytest.raises(BuildError, match="key=value"):
            parse_mount_fields(bad)
