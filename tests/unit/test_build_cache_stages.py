"""The builder's pure parts: step-cache keys and entries, the stage graph (only what the
target needs, cycles, unknown stages), and ARG/ENV scoping (reference.md "ARG",
"Predefined ARGs"; BuildKit's behaviour)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ociimg.build.cache import CachedStep, StepCache, step_key
from ociimg.build.dockerfile import parse
from ociimg.build.stages import PROXY_ARGS, StageState, build_order, from_reference
from ociimg.digest import Digest
from ociimg.errors import BuildError
from ociimg.spec import Descriptor
from tests.storeimage import tar_layer


def test_step_key_is_stable_and_covers_every_part() -> None:
    a = step_key(parent="sha256:" + "1" * 64, op="RUN", argv=["sh", "-c", "x"], env=["A=1"])
    assert a == step_key(env=["A=1"], argv=["sh", "-c", "x"], op="RUN",
                         parent="sha256:" + "1" * 64)
    assert a != step_key(parent="sha256:" + "1" * 64, op="RUN", argv=["sh", "-c", "x"],
                         env=["A=2"])
    assert a != step_key(parent="sha256:" + "2" * 64, op="RUN", argv=["sh", "-c", "x"],
                         env=["A=1"])


class _Snaps:
    def __init__(self, have: set[Digest]) -> None:
        self.have = have

    def has(self, chain: Digest) -> bool:
        return chain in self.have


def test_cache_entry_is_a_miss_once_its_blob_or_snapshot_is_gone(tmp_path: Path) -> None:
    from ociimg.store import Store
    store = Store.open(tmp_path / "root")
    blob = tar_layer({"f": b"x"})
    digest = store.put_blob(blob)
    chain = Digest.of(b"chain")
    entry = CachedStep(chain, Descriptor("application/vnd.oci.image.layer.v1.tar", digest,
                                         len(blob)), digest, "2023-11-14T22:13:20Z")
    cache = StepCache(tmp_path / "root")
    cache.put("k1", entry)
    assert cache.get("k1", store, _Snaps({chain})) == entry  # type: ignore[arg-type]
    assert cache.get("k1", store, _Snaps(set())) is None  # type: ignore[arg-type]
    assert cache.get("k1", store, _Snaps({chain})) is None  # type: ignore[arg-type]  # dropped
    cache.put("k2", entry)
    store.blob_path(digest).unlink()
    assert cache.get("k2", store, _Snaps({chain})) is None  # type: ignore[arg-type]
    (cache.path / "k3.json").write_text("{not json")
    assert cache.get("k3", store, _Snaps({chain})) is None  # type: ignore[arg-type]
    assert not (cache.path / "k3.json").exists()


GRAPH = """\
FROM busybox AS base
RUN true
FROM base AS unused
RUN exit 1
FROM alpine AS other
COPY --from=base /x /x
FROM scratch
COPY --from=other /x /x
RUN --mount=type=bind,from=base,target=/m true
"""


def _bases(text: str) -> tuple:
    df = parse(text)
    return df, {s.index: s.base for s in df.stages}


def test_only_the_stages_the_target_needs_in_dependency_order() -> None:
    df, bases = _bases(GRAPH)
    assert build_order(df, bases, None) == [0, 2, 3]
    assert build_order(df, bases, "unused") == [0, 1]
    assert build_order(df, bases, "BASE") == [0]  # stage names are case-insensitive


@pytest.mark.parametrize(("text", "target", "needle"), [
    ("FROM a AS x\nCOPY --from=y / /\nFROM b AS y\nCOPY --from=x / /\n", None,
     "circular dependency"),
    ("FROM a AS x\n", "nope", "target stage 'nope' could not be found"),
    ("FROM a\nCOPY --from=1 / /\nFROM b\n", None, "stage 1 is not an earlier stage"),
    ("FROM a AS x\nCOPY --from=x / /\n", None, "refers to itself"),
])
def test_graph_errors(text: str, target: str | None, needle: str) -> None:
    df, bases = _bases(text)
    with pytest.raises(BuildError) as exc:
        build_order(df, bases, target)
    assert needle in exc.value.message


def test_from_reference_takes_names_indexes_and_images() -> None:
    df = parse("FROM a AS first\nFROM b\nCOPY --from=first / /\n")
    stage = df.stages[1]
    assert from_reference(df, stage, "first", "--from") == 0
    assert from_reference(df, stage, "0", "--from") == 0
    assert from_reference(df, stage, "docker.io/library/alpine", "--from") is None


def test_arg_and_env_scoping() -> None:
    state = StageState.from_base({"Env": ["A=from-image"]}, {})
    assert state.env()["PATH"].startswith("/usr/local/sbin")  # added when the base has none
    build_args = {"V": "cli", "HTTP_PROXY": "http://proxy:3128", "UNUSED": "x"}
    meta = {"TARGETARCH": "amd64", "GLOBAL": "g"}
    state.declare_arg("V", "default", build_args, meta)
    state.declare_arg("W", "default", build_args, meta)
    state.declare_arg("GLOBAL", None, build_args, meta)  # imports the meta ARG's value
    state.declare_arg("UNSET", None, build_args, meta)
    state.declare_arg("A", "from-arg", build_args, meta)
    env = dict(e.split("=", 1) for e in state.run_env(build_args))
    assert env["V"] == "cli" and env["W"] == "default" and env["GLOBAL"] == "g"
    assert env["A"] == "from-image"  # ENV wins over an ARG of the same name
    assert "UNSET" not in env and "UNUSED" not in env and "TARGETARCH" not in env
    assert env["HTTP_PROXY"] == "http://proxy:3128"  # predefined: no declaration needed
    assert "HTTP_PROXY" in PROXY_ARGS and "HTTP_PROXY" not in state.args  # not in history
    assert state.expansion_env()["A"] == "from-image"
    state.set_env("A", "new")
    assert state.config["Env"][-1] == "A=new" and state.env()["A"] == "new"


def test_onbuild_triggers_are_taken_from_the_base_and_cleared() -> None:
    state = StageState.from_base({"OnBuild": ["RUN echo hi"], "Cmd": ["sh"]}, {})
    assert state.base_onbuild == ["RUN echo hi"] and "OnBuild" not in state.config
