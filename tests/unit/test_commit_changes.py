"""``--change`` parsing (docker commit's Dockerfile subset) and its effect on a config,
including hostile input: huge, unbalanced quotes, NUL, non-UTF-8, line breaks."""

from __future__ import annotations

import os

import pytest

from ociimg.errors import InvalidArgument
from ociimg.image.changes import (
    MAX_CHANGE_BYTES,
    MAX_EXPOSED_PORTS,
    apply_changes,
    parse_change,
    parse_changes,
)

BASE = {"Env": ["PATH=/usr/bin:/bin", "HOME=/root", "EMPTY="], "Cmd": ["sh"],
        "WorkingDir": "/srv", "Labels": {"keep": "yes"}}


def applied(*texts: str, base: dict | None = None) -> dict:
    return apply_changes(dict(BASE if base is None else base), parse_changes(list(texts)))


@pytest.mark.parametrize("text, key, value", [
    ('CMD ["/bin/echo", "hi there"]', "Cmd", ["/bin/echo", "hi there"]),
    ("CMD echo $HOME", "Cmd", ["/bin/sh", "-c", "echo $HOME"]),  # the shell expands, not us
    ("cmd ['single', 'quotes']", "Cmd", ["/bin/sh", "-c", "['single', 'quotes']"]),
    ("CMD []", "Cmd", []),
    ('ENTRYPOINT ["/init"]', "Entrypoint", ["/init"]),
    ("ENTRYPOINT exec top -b", "Entrypoint", ["/bin/sh", "-c", "exec top -b"]),
    ("ENV A=1", "Env", ["PATH=/usr/bin:/bin", "HOME=/root", "EMPTY=", "A=1"]),
    ('ENV HOME="/home/a b" X=\'$lit\'', "Env",
     ["PATH=/usr/bin:/bin", "EMPTY=", "HOME=/home/a b", "X=$lit"]),
    ("ENV PATH=$PATH:/opt/bin", "Env", ["HOME=/root", "EMPTY=", "PATH=/usr/bin:/bin:/opt/bin"]),
    ("ENV A ${HOME}/x y", "Env", ["PATH=/usr/bin:/bin", "HOME=/root", "EMPTY=", "A=/root/x y"]),
    ("ENV A=${EMPTY:-dflt} B=${EMPTY-set} C=${HOME:+alt} D=${NOPE:+alt}", "Env",
     ["PATH=/usr/bin:/bin", "HOME=/root", "EMPTY=", "A=dflt", "B=", "C=alt", "D="]),
    (r"ENV A=a\ b B=\$HOME", "Env", ["PATH=/usr/bin:/bin", "HOME=/root", "EMPTY=", "A=a b",
                                    "B=$HOME"]),
    ('LABEL "com.x"="a b" keep=no', "Labels", {"keep": "no", "com.x": "a b"}),
    ("EXPOSE 80 53/udp 8000-8001/TCP", "ExposedPorts",
     {"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}}),
    ("USER 1000:1000", "User", "1000:1000"),
    ("USER $HOME", "User", "/root"),
    ("WORKDIR sub/../app", "WorkingDir", "/srv/app"),
    ("WORKDIR /abs", "WorkingDir", "/abs"),
    ("WORKDIR //x", "WorkingDir", "/x"),
    ('VOLUME ["/data", "/with space"]', "Volumes", {"/data": {}, "/with space": {}}),
    ("VOLUME /a /b", "Volumes", {"/a": {}, "/b": {}}),
    ("STOPSIGNAL SIGKILL", "StopSignal", "SIGKILL"),
    ("STOPSIGNAL term", "StopSignal", "SIGTERM"),
    ("STOPSIGNAL 9", "StopSignal", "9"),
    ("STOPSIGNAL SIGRTMIN+3", "StopSignal", "SIGRTMIN+3"),
])
def test_changes_edit_the_config_as_docker_commit_does(text: str, key: str, value: object
                                                       ) -> None:
    assert applied(text)[key] == value


def test_entrypoint_clears_an_inherited_cmd_unless_cmd_is_set_too() -> None:
    assert "Cmd" not in applied('ENTRYPOINT ["/x"]')
    for order in (('ENTRYPOINT ["/x"]', 'CMD ["y"]'), ('CMD ["y"]', 'ENTRYPOINT ["/x"]')):
        assert applied(*order)["Cmd"] == ["y"]


def test_changes_apply_in_order_and_see_earlier_env() -> None:
    cfg = applied("ENV APP=/opt/app", "WORKDIR $APP", "WORKDIR bin", "ENV APP=/other")
    assert cfg["WorkingDir"] == "/opt/app/bin"
    assert "APP=/other" in cfg["Env"] and "APP=/opt/app" not in cfg["Env"]


def test_the_base_config_is_not_modified() -> None:
    base = {"Env": ["A=1"], "Labels": {"a": "1"}}
    apply_changes(base, parse_changes(["ENV A=2", "LABEL a=2"]))
    assert base == {"Env": ["A=1"], "Labels": {"a": "1"}}


@pytest.mark.parametrize("text, message", [
    ("ONBUILD RUN make", "ONBUILD: not supported"),
    ("onbuild ADD . /src", "ONBUILD: not supported"),
    ("RUN rm -rf /", "unknown instruction 'RUN'"),
    ("FROM scratch", "unknown instruction"),
    ("HEALTHCHECK NONE", "unknown instruction"),
    ("", "empty instruction"),
    ("   ", "empty instruction"),
    ("ENV", "requires an argument"),
    ("ENV A", "must have two arguments"),
    ("ENV =x", "can not be blank"),
    ("ENV A=1 B", "can't find = in 'B'"),
    ('ENV A="unterminated', "matching double-quote"),
    ("ENV A='unterminated", "matching single-quote"),
    ("ENV A=${HOME", "missing '}'"),
    ('LABEL "a=1', "matching double-quote"),
    ("EXPOSE http", "invalid port"),
    ("EXPOSE 0", "invalid port range"),
    ("EXPOSE 70000", "invalid port range"),
    ("EXPOSE 90-80", "invalid port range"),
    ("EXPOSE 80/icmp", "invalid port"),
    ("STOPSIGNAL SIGNOPE", "invalid signal"),
    ("STOPSIGNAL 0", "invalid signal"),
    ("STOPSIGNAL 1000", "invalid signal"),
    ("USER a b", "exactly one argument"),
    ("WORKDIR", "requires an argument"),
    ('CMD ["a", 1]', "only strings"),
    ('ENTRYPOINT ["a", null]', "only strings"),
    ('VOLUME ["/a", ""]', "empty volume path"),
    ("ENV A=1\nCMD evil", "line break"),
    ("CMD a\rb", "line break"),
    ("ENV A=b\0c", "NUL byte"),
    ('CMD ["a\\u0000b"]', "NUL byte"),
    ("LABEL a=" + os.fsdecode(b"\xff\xfe"), "not valid UTF-8"),  # argv with bytes ≠ UTF-8
])
def test_bad_changes_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_change(text)
    assert message in err.value.message
    assert "\n" not in err.value.message and len(err.value.message) < 200


@pytest.mark.parametrize("text, message", [
    ("WORKDIR $NOPE", "non-empty argument"),
    ("EXPOSE $NOPE", "no port"),
    ("STOPSIGNAL $HOME", "invalid signal"),
    ("VOLUME $NOPE", "empty volume path"),
])
def test_values_are_checked_again_after_expansion(text: str, message: str) -> None:
    change = parse_change(text)  # syntax fine; the value is known only with the env
    with pytest.raises(InvalidArgument, match=message):
        apply_changes(dict(BASE), [change])


def test_huge_input_is_refused_without_echoing_it() -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_change("LABEL a=" + "x" * (MAX_CHANGE_BYTES + 1))
    assert "limit" in err.value.message and len(err.value.message) < 200
    with pytest.raises(InvalidArgument) as err:
        parse_change("X" * 10_000 + " y")
    assert len(err.value.message) < 200


def test_port_ranges_are_capped_and_unbalanced_input_is_linear() -> None:
    # The widest legal range is accepted; more than MAX_EXPOSED_PORTS ports is refused.
    assert len(applied("EXPOSE 1-65535")["ExposedPorts"]) == 65535
    with pytest.raises(InvalidArgument, match=str(MAX_EXPOSED_PORTS)):
        parse_change("EXPOSE 1-65535/tcp 1-65535/udp")
    # Many quotes, dollars and braces near the size limit parse quickly (no backtracking).
    hostile = "ENV A=" + "'\"$${" * (MAX_CHANGE_BYTES // 6)
    with pytest.raises(InvalidArgument):
        parse_change(hostile)
    deep = "CMD " + "[" * 50_000
    assert parse_change(deep).exec_form is None  # not JSON (too deep): the shell form


@pytest.mark.parametrize("text, expected", [
    ("web:/etc/hosts", ("web", "/etc/hosts")),
    ("web:", ("web", "/")),
    ("/abs/path", (None, "/abs/path")),
    ("./rel:with:colons", (None, "./rel:with:colons")),
    ("dir/file:x", (None, "dir/file:x")),  # a slash before the colon: a host path
    ("-", (None, "-")),
    ("plain", (None, "plain")),
])
def test_cp_tells_container_paths_from_host_paths(text: str, expected: tuple) -> None:
    from ociimg.cli.changes import split_container_path
    assert split_container_path(text) == expected


@pytest.mark.parametrize("text, expected", [
    (None, "localhost/mybox:latest"),
    ("busybox", "docker.io/library/busybox:latest"),
    ("example.com/a/b:v1", "example.com/a/b:v1"),
    ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest"),
])
def test_commit_names(text: str | None, expected: str) -> None:
    from ociimg.commands.changes import image_name
    assert image_name(text, "MyBox") == expected


@pytest.mark.parametrize("text", ["Bad:Name:x", "x@sha256:" + "0" * 64, "", "a b"])
def test_bad_commit_names(text: str) -> None:
    from ociimg.commands.changes import image_name
    from ociimg.errors import OciimgError
    with pytest.raises(OciimgError):
        image_name(text, "c")
