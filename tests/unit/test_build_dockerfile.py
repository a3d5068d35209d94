"""Containerfile parser tables (ociimg.build.dockerfile)."""

from __future__ import annotations

import pytest

from ociimg.build.dockerfile import EXPANDED, Instruction, parse
from ociimg.errors import BuildSyntaxError
from ociimg.expand import expand, expand_words, parse_key_values


def only(text: str) -> Instruction:
    """The single instruction after ``FROM scratch``."""
    (stage,) = parse("FROM scratch\n" + text).stages
    (instruction,) = stage.instructions
    return instruction


# Dockerfile reference "Format" and "escape": the escape char ending a line (trailing
# blanks allowed) continues it; comment lines and empty lines inside a continuation are
# dropped; leading whitespace of the first line is ignored; keywords are case-insensitive.
LINE_ROWS = [
    ("RUN a \\\n  b", "RUN", ["a   b"]),
    ("RUN a \\   \n b", "RUN", ["a  b"]),                     # blanks after the escape
    ("RUN a \\\n# comment\n  b", "RUN", ["a   b"]),            # comment inside continuation
    ("RUN a \\\n    # indented comment\n b", "RUN", ["a  b"]),
    ("RUN a \\\n\n   \n b", "RUN", ["a  b"]),                  # empty continuation lines
    ("   run   a", "RUN", ["a"]),
    ("RUN a\\\n", "RUN", ["a"]),                               # continuation at EOF
    ("RUN echo a # not a comment", "RUN", ["echo a # not a comment"]),
    ("RUN a \\\r\n b\r\n", "RUN", ["a  b"]),                   # CRLF
    ("Cmd x", "CMD", ["x"]),
]


@pytest.mark.parametrize(("text", "keyword", "args"), LINE_ROWS)
def test_lines(text: str, keyword: str, args: list[str]) -> None:
    instruction = only(text)
    assert (instruction.keyword, instruction.args, instruction.line) == (keyword, args, 2)


def test_line_numbers_and_original() -> None:
    df = parse("# c\n\nFROM scratch\nRUN a \\\n  b\nENV x=1\n")
    run, env = df.stages[0].instructions
    assert (df.stages[0].line, run.line, run.end_line, env.line) == (3, 4, 5, 6)
    assert run.original == "RUN a   b"


def test_bom_is_stripped() -> None:
    assert parse("\ufeffFROM scratch\n").stages[0].base == "scratch"


# Reference "Parser directives": only in the leading comment lines, keys case-insensitive,
# not repeated; an unknown directive, a comment, a blank line or an instruction ends them.
DIRECTIVE_ROWS = [
    ("# escape=`\nFROM scratch\nRUN a `\n b", "`", ["a  b"]),
    ("# ESCAPE = `\nFROM scratch\nRUN a `\n b", "`", ["a  b"]),
    ("# syntax=docker/dockerfile:1\n# escape=`\nFROM scratch\nRUN a `\n b", "`", ["a  b"]),
    ("# check=skip=all\n# escape=`\nFROM scratch\nRUN a `\n b", "`", ["a  b"]),
    ("# comment\n# escape=`\nFROM scratch\nRUN a \\\n b", "\\", ["a  b"]),   # after a comment
    ("\n# escape=`\nFROM scratch\nRUN a \\\n b", "\\", ["a  b"]),            # after a blank line
    ("# unknown=x\n# escape=`\nFROM scratch\nRUN a \\\n b", "\\", ["a  b"]),
    ("FROM scratch\n# escape=`\nRUN a \\\n b", "\\", ["a  b"]),              # after an instruction
    ("# escape=`\nFROM scratch\nRUN C:\\dir", "`", ["C:\\dir"]),
]


@pytest.mark.parametrize(("text", "escape", "args"), DIRECTIVE_ROWS)
def test_directives(text: str, escape: str, args: list[str]) -> None:
    df = parse(text)
    assert df.escape == escape
    assert df.stages[0].instructions[0].args == args


def test_directive_errors() -> None:
    with pytest.raises(BuildSyntaxError, match="Containerfile:2: only one escape"):
        parse("# escape=`\n# escape=\\\nFROM scratch\n")
    with pytest.raises(BuildSyntaxError, match="invalid escape"):
        parse("# escape=x\nFROM scratch\n")


# Reference "Shell and exec form": exec form only when the text is a JSON array of
# strings; anything else (e.g. single quotes) is shell form; a non-string element is an
# error (BuildKit parseMaybeJSON; trap 22).
FORM_ROWS = [
    ('CMD ["a", "b c"]', ["a", "b c"], True),
    ("CMD ['a', 'b']", ["['a', 'b']"], False),
    ('CMD ["a", "b"] x', ['["a", "b"] x'], False),     # trailing text: not JSON
    ('CMD ["a"', ['["a"'], False),
    ("CMD []", [], True),
    ('ENTRYPOINT ["/bin/sh", "-c"]', ["/bin/sh", "-c"], True),
    ('RUN ["echo", "$HOME"]', ["echo", "$HOME"], True),
    ('SHELL ["/bin/bash", "-c"]', ["/bin/bash", "-c"], True),
    ('COPY ["a b", "/c d/"]', ["a b", "/c d/"], True),
    ('VOLUME ["/a", "/b"]', ["/a", "/b"], True),
    ("VOLUME /a /b", ["/a /b"], False),
    ('CMD {"a": 1}', ['{"a": 1}'], False),             # JSON, but not an array
]


@pytest.mark.parametrize(("text", "args", "json_form"), FORM_ROWS)
def test_forms(text: str, args: list[str], json_form: bool) -> None:
    instruction = only(text)
    assert (instruction.args, instruction.json_form) == (args, json_form)


# Reference "Here-Documents" (and BuildKit's heredoc tests): bodies follow the line, one
# per <<NAME word in order; <<- strips leading tabs; a quoted delimiter disables
# expansion; JSON-form instructions have none; CR is kept in the body (trap 14).
HEREDOC_ROWS = [
    ("RUN <<EOF\necho hi\nEOF", [("EOF", "echo hi\n", True, False)]),
    ("RUN <<EOF\nEOF", [("EOF", "", True, False)]),
    ("RUN <<-EOF\n\techo hi\n\t\tx\n\tEOF", [("EOF", "echo hi\nx\n", True, True)]),
    ("RUN <<'EOF'\n$X\nEOF", [("EOF", "$X\n", False, False)]),
    ('RUN <<"EOF"\n$X\nEOF', [("EOF", "$X\n", False, False)]),
    ("RUN <<A <<B cat\na\nA\nb\nB", [("A", "a\n", True, False), ("B", "b\n", True, False)]),
    ("RUN python3 <<EOF\nprint(1)\nEOF", [("EOF", "print(1)\n", True, False)]),
    ("RUN 3<<EOF cat /dev/fd/3\nx\nEOF", [("EOF", "x\n", True, False)]),
    ("COPY <<EOF /etc/x\nline\nEOF", [("EOF", "line\n", True, False)]),
    ("ADD <<A <<B /dst/\na\nA\nb\nB", [("A", "a\n", True, False), ("B", "b\n", True, False)]),
    ("RUN <<EOF\r\nset -e\r\nEOF\r\n", [("EOF", "set -e\r\n", True, False)]),
    ("RUN <<EOF\n  EOF\nEOF", [("EOF", "  EOF\n", True, False)]),  # terminator must be exact
    ('RUN ["cat", "<<EOF"]', []),
    ("RUN echo a<<b", []),                                             # not a word of its own
    ("CMD <<EOF", []),                                                  # CMD takes no heredoc
    ("RUN <<EOF \\\n  && true\nbody\nEOF", [("EOF", "body\n", True, False)]),  # with continuation
    ("RUN <<eof\nx\neof", [("eof", "x\n", True, False)]),          # buildah#3474: any case
]


@pytest.mark.parametrize(("text", "expected"), HEREDOC_ROWS)
def test_heredocs(text: str, expected: list[tuple[str, str, bool, bool]]) -> None:
    instruction = only(text)
    assert [(h.name, h.content, h.expand, h.chomp) for h in instruction.heredocs] == expected


def test_heredoc_then_next_instruction() -> None:
    df = parse("FROM scratch\nCOPY <<EOF /x\nRUN not an instruction\nEOF\nUSER 1\n")
    copy, user = df.stages[0].instructions
    assert copy.heredocs[0].content == "RUN not an instruction\n"
    assert (copy.end_line, user.line, user.args) == (4, 5, ["1"])


def test_heredoc_fd() -> None:
    assert only("RUN 3<<EOF cat /dev/fd/3\nx\nEOF").heredocs[0].fd == 3


def test_onbuild_heredoc() -> None:
    instruction = only("ONBUILD RUN <<EOF\nx\nEOF")
    assert instruction.trigger is not None
    assert instruction.trigger.heredocs[0].content == "x\n"


# Reference "COPY"/"ADD"/"RUN --mount"/"FROM"/"HEALTHCHECK" options: --flag=value words
# before the arguments; bool flags; repeatable --mount/--exclude; anything else rejected.
FLAG_ROWS = [
    ("COPY --from=build --chown=1:2 a /b", {"from": ["build"], "chown": ["1:2"]}, ["a /b"]),
    ("COPY --chmod=0755 --link --parents a /b/",
     {"chmod": ["0755"], "link": ["true"], "parents": ["true"]}, ["a /b/"]),
    ("COPY --link=false a /b", {"link": ["false"]}, ["a /b"]),
    ("RUN --mount=type=cache,target=/c --mount=type=tmpfs,target=/t make",
     {"mount": ["type=cache,target=/c", "type=tmpfs,target=/t"]}, ["make"]),
    ("RUN --network=none true", {"network": ["none"]}, ["true"]),
    ('RUN --mount="type=bind,source=a b" x', {"mount": ["type=bind,source=a b"]}, ["x"]),
    ("ADD --chown=app --checksum=sha256:ab https://x/y /z",
     {"chown": ["app"], "checksum": ["sha256:ab"]}, ["https://x/y /z"]),
    ("COPY --exclude=*.md --exclude=*.txt . /", {"exclude": ["*.md", "*.txt"]}, [". /"]),
    ("RUN -- --mount=x", {}, ["--mount=x"]),                          # -- ends the flags
    ("RUN echo --mount=x", {}, ["echo --mount=x"]),                   # flags only lead
    ('COPY --from=b ["a", "/c"]', {"from": ["b"]}, ["a", "/c"]),
]


@pytest.mark.parametrize(("text", "flags", "args"), FLAG_ROWS)
def test_flags(text: str, flags: dict[str, list[str]], args: list[str]) -> None:
    instruction = only(text)
    assert (instruction.flags, instruction.args) == (flags, args)


# Reference "FROM": [--platform] image [AS name]; names case-insensitive, not starting
# with a digit; ARGs before the first FROM are meta args; other instructions are not.
def test_stages() -> None:
    df = parse("ARG V=1\nARG B\nFROM --platform=$P alpine:$V AS Builder\nRUN x\n"
               "FROM builder\nFROM scratch as out\n")
    assert [a.args for a in df.meta_args] == [["V=1"], ["B"]]
    assert [(s.index, s.name, s.base, s.platform, s.line) for s in df.stages] == [
        (0, "builder", "alpine:$V", "$P", 3), (1, None, "builder", None, 5),
        (2, "out", "scratch", None, 6)]
    assert [i.keyword for i in df.stages[0].instructions] == ["RUN"]


# Reference "HEALTHCHECK": NONE, CMD exec form or CMD shell form; options first.
HEALTH_ROWS = [
    ("HEALTHCHECK NONE", ["NONE"], False),
    ("HEALTHCHECK none", ["NONE"], False),
    ('HEALTHCHECK --retries=3 CMD ["curl", "-f", "x"]', ["CMD", "curl", "-f", "x"], True),
    ("HEALTHCHECK CMD curl -f x || exit 1", ["CMD-SHELL", "curl -f x || exit 1"], False),
]


@pytest.mark.parametrize(("text", "args", "json_form"), HEALTH_ROWS)
def test_healthcheck(text: str, args: list[str], json_form: bool) -> None:
    instruction = only(text)
    assert (instruction.args, instruction.json_form) == (args, json_form)


# Reference "ENV", "LABEL", "ARG": key=value forms (several per line, quotes) and the
# legacy "ENV key value"; the parser keeps the text and checks its shape.
@pytest.mark.parametrize("text", [
    'ENV a=1 b="x y"', "ENV legacy v w", "LABEL a=b", "LABEL k v", "ARG a", "ARG a=1 b",
    "MAINTAINER me <me@x>", "STOPSIGNAL SIGTERM", "USER 1000:1000", "WORKDIR /a b",
    "EXPOSE 80/tcp 53/udp"])
def test_raw_text_instructions(text: str) -> None:
    instruction = only(text)
    assert instruction.args == [text.split(None, 1)[1]] and not instruction.json_form


def test_onbuild_trigger() -> None:
    instruction = only("ONBUILD COPY --from=x a /b")
    assert instruction.args == ["COPY --from=x a /b"]
    assert instruction.trigger is not None
    assert (instruction.trigger.keyword, instruction.trigger.flags) == ("COPY", {"from": ["x"]})


# Errors name file:line and the instruction (issue 10 "Errors"); messages follow
# BuildKit's (instructions/parse.go, line_parsers.go) where it has one.
ERROR_ROWS = [
    ("FROM scratch\nFOO bar", "Dockerfile:2: unknown instruction: FOO"),
    ("FROM scratch\nRUN", "Dockerfile:2: RUN: RUN requires at least one argument"),
    ("FROM scratch\nRUN []", "Dockerfile:2: RUN: RUN requires at least one argument"),
    ('FROM scratch\nCMD ["a", 1]', "Dockerfile:2: CMD: when using JSON array syntax, arrays"),
    ("FROM scratch\nCOPY a", "Dockerfile:2: COPY: COPY requires at least two arguments"),
    ('FROM scratch\nCOPY ["a"]', "Dockerfile:2: COPY: COPY requires at least two arguments"),
    ("FROM scratch\nSHELL /bin/sh", "SHELL requires the arguments to be in JSON form"),
    ("FROM scratch\nENV a", "Dockerfile:2: ENV: ENV must have two arguments"),
    ("FROM scratch\nENV a=1 b", "can't find ="),
    ("FROM scratch\nLABEL", "LABEL requires at least one argument"),
    ("FROM scratch\nCOPY --form=x a b", "Dockerfile:2: COPY: unknown flag: form"),
    ("FROM scratch\nCOPY --from a b", "missing a value on flag: from"),
    ("FROM scratch\nCOPY --from=a --from=b a b", "duplicate flag specified: from"),
    ("FROM scratch\nCOPY --link=maybe a b", "expecting boolean value"),
    ("FROM scratch\nUSER --x=1 a", "unknown flag: x"),
    ("FROM scratch\nRUN <<EOF\nno end", "Dockerfile:2: RUN: unterminated heredoc"),
    ("FROM scratch\nONBUILD ONBUILD RUN x", "Chaining ONBUILD"),
    ("FROM scratch\nONBUILD FROM x", "FROM isn't allowed as an ONBUILD trigger"),
    ("FROM scratch\nONBUILD MAINTAINER x", "MAINTAINER isn't allowed"),
    ("FROM scratch\nHEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
    ("FROM scratch\nHEALTHCHECK CURL x", "Unknown type 'CURL' in HEALTHCHECK"),
    ("FROM scratch\nHEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
    ("RUN x\nFROM scratch", "Dockerfile:1: RUN: no build stage in current context"),
    ("", "Dockerfile:1: file with no instructions"),
    ("# only a comment\n", "file with no instructions"),
    ("ARG a\n", "no FROM instruction"),
    ("FROM", "FROM requires at least one argument"),
    ("FROM a b", "FROM requires either one or three arguments"),
    ("FROM a AS", "FROM requires either one or three arguments"),
    ("FROM a INTO b", "FROM requires either one or three arguments"),
    ("FROM a AS 1st", "invalid name for build stage"),
    ("FROM a AS x\nFROM b AS X", "Dockerfile:2: FROM: duplicate stage name 'x'"),
    ("FROM a\nCOPY \"a /b", "double-quote"),                          # caught at parse time
    ("FROM a\nWORKDIR ${}", "bad substitution"),
    ("FROM --platform linux/arm64 a", "missing a value on flag: platform"),
]


@pytest.mark.parametrize(("text", "message"), ERROR_ROWS)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(BuildSyntaxError) as info:
        parse(text, "Dockerfile")
    assert message in str(info.value)


def test_error_carries_location() -> None:
    with pytest.raises(BuildSyntaxError) as info:
        parse("FROM scratch\n\nRUN a \\\n b\nBOGUS x\n", "ctx/Containerfile")
    assert (info.value.filename, info.value.line) == ("ctx/Containerfile", 5)
    assert info.value.hint is not None and "RUN" in info.value.hint


def test_run_is_not_expanded_at_parse_time() -> None:
    # Reference "Environment replacement": RUN/CMD/ENTRYPOINT are left to the shell, so an
    # unterminated quote there is the shell's business, not a parse error.
    assert only("RUN echo \"unterminated").args == ['echo "unterminated']


# Cross-checked for real with `buildah bud` 1.28.2 (Debian) on FROM scratch: the Env,
# Labels, WorkingDir, User and ExposedPorts it wrote are the expected values below.
# (buildah 1.28 lacks ${V-w} and ignores `# escape=` in expansion; those rows follow
# the Dockerfile reference instead and live in the tables above.)
BUILDAH_CHECKED = """\
FROM scratch
ENV a=1 b="x y" c=$a
ENV a=2 d=$a e=${UNSET:-def} f='$a' g=\\$a h="${a}x" i=${a:+set}
ENV legacy v   w
ENV k="q\\"uote" l=a\\ b m=${c:-no}${a}
LABEL l1="a b" l2=$d "l 3"=x
WORKDIR /w/$a
USER ${UNSET:-1000}:${a}
EXPOSE $a/udp 80
"""


def test_env_chain_as_buildah_built_it() -> None:
    env: dict[str, str] = {}
    labels: dict[str, str] = {}
    seen: dict[str, object] = {}
    for instruction in parse(BUILDAH_CHECKED).stages[0].instructions:
        text = instruction.args[0]
        if instruction.keyword == "ENV":
            env.update(parse_key_values(text, dict(env)))
        elif instruction.keyword == "LABEL":
            labels.update(parse_key_values(text, env, keyword="LABEL"))
        else:
            seen[instruction.keyword] = (expand_words(text, env) if instruction.keyword == "EXPOSE"
                                         else expand(text, env))
    assert env == {"a": "2", "b": "x y", "c": "", "d": "1", "e": "def", "f": "$a", "g": "$a",
                   "h": "1x", "i": "set", "legacy": "v   w", "k": 'q"uote', "l": "a b", "m": "no2"}
    assert labels == {"l1": "a b", "l2": "1", "l 3": "x"}
    assert seen == {"WORKDIR": "/w/2", "USER": "1000:2", "EXPOSE": ["2/udp", "80"]}


def test_directive_after_comment_as_buildah_built_it() -> None:
    # buildah bud gave Env p=1 q=C:dir: the escape directive after a comment is ignored.
    df = parse("# comment first\n# escape=`\nFROM scratch\nENV p=1 \\\n  q=C:\\dir\n")
    assert df.escape == "\\"
    assert df.stages[0].instructions[0].args == ["p=1   q=C:\\dir"]


def test_expanded_instructions() -> None:
    # Reference "Environment replacement": the list of instructions the builder expands;
    # RUN, CMD, ENTRYPOINT (the shell's job), ONBUILD (expanded when triggered),
    # SHELL, HEALTHCHECK and MAINTAINER are not.
    assert EXPANDED == {"ADD", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL", "USER",
                        "VOLUME", "WORKDIR", "ARG"}
