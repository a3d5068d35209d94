"""Dockerfile word expansion tables (ociimg.expand)."""

from __future__ import annotations

import pytest

from ociimg.expand import (
    ExpandError,
    expand,
    expand_heredoc,
    expand_words,
    parse_arg_decls,
    parse_key_values,
    parse_words,
    split_key_values,
)

ENV = {"V": "val", "EMPTY": "", "SP": "a b", "PATH": "/usr/local/bin:/usr/bin", "F": "file.tar.gz"}

# Dockerfile reference, "Environment replacement": $V / ${V}, the ${V:-w} ${V:+w} family,
# the pattern forms, escapes (\$), single quotes literal; unset expands to "".
# Where the reference is silent, the rows follow BuildKit's shell lexer (lex.go).
EXPAND_ROWS = [
    ("$V", "val"),
    ("${V}", "val"),
    ("x${V}y", "xvaly"),
    ("$V/x", "val/x"),
    ("$Vx", ""),                       # the name is Vx: unset
    ("$UNSET", ""),
    ("${UNSET}", ""),
    ("${UNSET:-def}", "def"),
    ("${EMPTY:-def}", "def"),
    ("${EMPTY-def}", ""),             # no colon: only unset takes the default
    ("${UNSET-def}", "def"),
    ("${V:-def}", "val"),
    ("${V:+alt}", "alt"),
    ("${EMPTY:+alt}", ""),
    ("${EMPTY+alt}", "alt"),
    ("${UNSET+alt}", ""),
    ("${V:?must}", "val"),
    ("${UNSET:-$V}", "val"),           # the word is expanded too
    ("${UNSET:-'a b'}", "a b"),        # and its quotes processed
    ("\\$V", "$V"),
    ("\\${V}", "${V}"),
    ("'$V'", "$V"),                    # single quotes: literal
    ("'a\\b'", "a\\b"),                # no escapes inside single quotes
    ('"$V"', "val"),
    ('"\\$V"', "$V"),
    ('"a\\"b"', 'a"b'),
    ('"a\\b"', "a\\b"),                # \ before other chars is kept inside "
    ('"a\\\\b"', "a\\b"),
    ("a\\ b", "a b"),
    ("a\\", "a"),                      # escape at the end of a word is dropped
    ("$", "$"),
    ("a$", "a$"),
    ("$/", "$/"),
    ("$1", ""),
    ("${F%.gz}", "file.tar"),
    ("${F%%.*}", "file"),
    ("${F#*.}", "tar.gz"),
    ("${F##*.}", "gz"),
    ("${F/tar/zip}", "file.zip.gz"),
    ("${PATH//bin/sbin}", "/usr/local/sbin:/usr/sbin"),
    ("${SP}", "a b"),                  # no word splitting in expand()
]


@pytest.mark.parametrize(("word", "expected"), EXPAND_ROWS)
def test_expand(word: str, expected: str) -> None:
    assert expand(word, ENV) == expected


# Reference "Environment replacement": ${V:?msg} fails with msg; BuildKit also rejects
# ${} and unterminated quotes/braces (lex.go) rather than guessing.
ERROR_ROWS = [
    ("${UNSET:?must be set}", "UNSET: must be set"),
    ("${UNSET?}", "UNSET: is not allowed to be unset"),
    ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
    ("${}", "bad substitution"),
    ("${:-x}", "bad substitution"),
    ("${V", "missing '}'"),
    ("${V:-x", "missing '}'"),
    ("'abc", "single-quote"),
    ('"abc', "double-quote"),
    ("${V:=x}", "unsupported modifier"),
]


@pytest.mark.parametrize(("word", "message"), ERROR_ROWS)
def test_expand_errors(word: str, message: str) -> None:
    with pytest.raises(ExpandError, match=message.replace("$", r"\$").replace("{", r"\{")):
        expand(word, ENV)


# Reference "Environment replacement" and BuildKit wordsTest: words split on unquoted
# whitespace after expansion; quoted text never splits; empty quotes give no word.
WORDS_ROWS = [
    ("a b  c", ["a", "b", "c"]),
    ('"a b" c', ["a b", "c"]),
    ("'a b' c", ["a b", "c"]),
    ("a\\ b c", ["a b", "c"]),
    ("$SP /dst", ["a", "b", "/dst"]),   # unquoted expansion splits
    ('"$SP" /dst', ["a b", "/dst"]),
    ('x"y z"w', ["xy zw"]),
    ('"" a', ["a"]),
    ("  lead trail  ", ["lead", "trail"]),
]


@pytest.mark.parametrize(("text", "expected"), WORDS_ROWS)
def test_expand_words(text: str, expected: list[str]) -> None:
    assert expand_words(text, ENV) == expected


def test_backtick_escape_char() -> None:
    # Reference "escape": with `# escape=``, the backslash is an ordinary char.
    assert expand("C:\\dir\\$V", ENV, escape="`") == "C:\\dir\\val"
    assert expand("`$V", ENV, escape="`") == "$V"


# Reference "ENV": ``ENV k=v ...`` and the legacy ``ENV k v`` (value = the rest of the
# line); every word sees the env from before the instruction ("ENV abc=bye def=$abc").
KEY_VALUE_ROWS = [
    ('a=1 b="x y"', [("a", "1"), ("b", "x y")]),
    ("a=1 b=$a", [("a", "1"), ("b", "old")]),          # same-instruction: old value
    ("k v w", [("k", "v w")]),                          # legacy form
    ('k "v w"', [("k", "v w")]),
    ("a=", [("a", "")]),
    ("a=x\\ y", [("a", "x y")]),
    ("$K=v", [("key", "v")]),                           # keys expand too
    ("a='$V'", [("a", "$V")]),
]


@pytest.mark.parametrize(("text", "expected"), KEY_VALUE_ROWS)
def test_parse_key_values(text: str, expected: list[tuple[str, str]]) -> None:
    env = {"a": "old", "K": "key", "V": "val"}
    assert parse_key_values(text, env, "\\") == expected


@pytest.mark.parametrize(("text", "message"), [
    ("a", "must have two arguments"),
    ("a=1 b", "can't find ="),
    ("=x", "can not be blank"),
    ("", "at least one argument"),
])
def test_key_value_errors(text: str, message: str) -> None:
    with pytest.raises(ExpandError, match=message):
        split_key_values(text, "ENV")


# Reference "ARG": ``ARG name`` or ``ARG name=default``; defaults may use earlier values.
def test_arg_decls() -> None:
    assert parse_arg_decls("a b=1 c=$b", {"b": "0"}) == [("a", None), ("b", "1"), ("c", "0")]
    assert parse_arg_decls('x="a b"') == [("x", '"a b"')]  # verbatim without env
    with pytest.raises(ExpandError):
        parse_arg_decls("=v", {})


# BuildKit parseWords (the parser's split): quotes and escapes stay in the words.
@pytest.mark.parametrize(("text", "expected"), [
    ('a="b c" d', ['a="b c"', "d"]),
    ("a='b \\' c", ["a='b \\'", "c"]),
    ("a\\ b", ["a\\ b"]),
    ("x \\", ["x"]),
])
def test_parse_words(text: str, expected: list[str]) -> None:
    assert parse_words(text) == expected


# POSIX "Here-Document": an unquoted delimiter expands $ forms; quotes are text;
# backslash quotes only $, \ and newline.
@pytest.mark.parametrize(("body", "expected"), [
    ("hello $V\n", "hello val\n"),
    ("'$V' \"$V\"\n", "'val' \"val\"\n"),
    ("\\$V \\\\ \\n\n", "$V \\ \\n\n"),
    ("${UNSET:-d}\n", "d\n"),
])
def test_expand_heredoc(body: str, expected: str) -> None:
    assert expand_heredoc(body, ENV) == expected
