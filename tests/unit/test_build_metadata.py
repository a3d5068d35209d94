"""Metadata instructions on a stage's state, row by row against the Dockerfile reference
(and BuildKit where it is vague): ENTRYPOINT and an inherited CMD, ENV's old values,
EXPOSE ranges, HEALTHCHECK durations, SHELL's JSON form, history texts."""

from __future__ import annotations

import pytest

from ociimg.build import metadata
from ociimg.build.dockerfile import parse
from ociimg.build.stages import StageState
from ociimg.errors import BuildError


def run(lines: str, base: dict | None = None, build_args: dict | None = None
        ) -> tuple[StageState, list[str]]:
    df = parse("FROM x\n" + lines)
    state = StageState.from_base(base or {}, {})
    ctx = metadata.Context(df.escape, build_args or {}, {"GLOBAL": "g"})
    history = []
    for ins in df.stages[0].instructions:
        text = metadata.apply(state, ins, ctx)
        assert text is not None, ins.keyword
        history.append(text)
    return state, history


@pytest.mark.parametrize(("lines", "cmd"), [
    ('ENTRYPOINT ["/app"]\n', None),                           # inherited CMD dropped
    ('CMD ["a"]\nENTRYPOINT ["/app"]\n', ["a"]),               # this stage's CMD kept
    ('ENTRYPOINT ["/app"]\nCMD ["b"]\n', ["b"]),
    ("CMD echo hi\n", ["/bin/sh", "-c", "echo hi"]),           # shell form through SHELL
    ('SHELL ["/bin/bash", "-c"]\nCMD echo hi\n', ["/bin/bash", "-c", "echo hi"]),
])
def test_entrypoint_and_cmd(lines: str, cmd: list[str] | None) -> None:
    state, _ = run(lines, {"Cmd": ["inherited"]})
    assert state.config.get("Cmd") == cmd


def test_env_sees_the_old_values_and_history_texts() -> None:
    state, history = run("ENV a=x\nENV a=bye b=$a\nLABEL l=$a k=v\nARG V=1\nARG GLOBAL\n",
                         build_args={"V": "2"})
    assert state.env()["a"] == "bye" and state.env()["b"] == "x"
    assert state.config["Labels"] == {"l": "bye", "k": "v"}
    assert state.args == {"V": "2", "GLOBAL": "g"}
    assert history == ["ENV a=x", "ENV a=bye b=x", "LABEL l=bye k=v", "ARG V=2",
                       "ARG GLOBAL=g"]


def test_expose_volume_user_stopsignal_healthcheck_onbuild() -> None:
    state, history = run("EXPOSE 80 53/udp 8000-8002\nVOLUME /a /b\nVOLUME [\"/c\"]\n"
                         "USER app:app\nSTOPSIGNAL 9\n"
                         "HEALTHCHECK --interval=1m30s --timeout=500ms --retries=3 CMD [\"t\"]\n"
                         "ONBUILD RUN make\nMAINTAINER me\n")
    cfg = state.config
    assert cfg["ExposedPorts"] == {p: {} for p in ("80/tcp", "53/udp", "8000/tcp",
                                                    "8001/tcp", "8002/tcp")}
    assert cfg["Volumes"] == {"/a": {}, "/b": {}, "/c": {}}
    assert cfg["User"] == "app:app" and cfg["StopSignal"] == "9"  # kept as written
    assert cfg["Healthcheck"] == {"Test": ["CMD", "t"], "Interval": 90 * 10**9,
                                  "Timeout": 500 * 10**6, "Retries": 3}
    assert cfg["OnBuild"] == ["RUN make"] and state.author == "me"
    assert history[-3] == 'HEALTHCHECK ["CMD" "t"]'


@pytest.mark.parametrize(("lines", "needle"), [
    ("EXPOSE 70000\n", "invalid port range"),
    ("EXPOSE 8080/tcpx\n", "invalid port"),
    ("SHELL /bin/bash -c\n", "JSON form"),
    ("HEALTHCHECK --interval=soon CMD true\n", "not a duration"),
    ("HEALTHCHECK --retries=x CMD true\n", "not a number"),
])
def test_bad_metadata_is_an_error(lines: str, needle: str) -> None:
    with pytest.raises(BuildError) as exc:
        run(lines)
    assert needle in exc.value.message


def test_filesystem_instructions_are_not_metadata() -> None:
    df = parse("FROM x\nRUN true\nCOPY a b\nWORKDIR /w\n")
    state = StageState.from_base({}, {})
    ctx = metadata.Context("\\", {}, {})
    assert all(metadata.apply(state, ins, ctx) is None for ins in df.stages[0].instructions)
