"""Fuzz the JSON document parsers: whatever bytes arrive, the result is a parsed document
or an OciimgError (a one-line error for the user), never another exception.

Seeded and bounded (``OCIIMG_FUZZ_SECONDS``, default 2 s per parser;
``OCIIMG_FUZZ_SEED`` to replay a failure): mutated valid documents (every path given
every wrong type, removed, nested deep), generated ones, and byte-level damage
(truncation, flips, NULs, duplicate keys).
"""

from __future__ import annotations

import copy
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ociimg import spec
from ociimg.cli.output import printable
from ociimg.errors import OciimgError
from ociimg.store import Store

SEED = int(os.environ.get("OCIIMG_FUZZ_SEED", "20261207"))
SECONDS = float(os.environ.get("OCIIMG_FUZZ_SECONDS", "2"))
D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64

MANIFEST: dict[str, Any] = {
    "schemaVersion": 2, "mediaType": spec.OCI_MANIFEST,
    "config": {"mediaType": spec.OCI_CONFIG, "digest": D1, "size": 10},
    "layers": [{"mediaType": spec.OCI_LAYER_GZIP, "digest": D2, "size": 20,
                "annotations": {"k": "v"}, "urls": ["https://example.com/x"]}],
    "subject": {"mediaType": spec.OCI_MANIFEST, "digest": D2, "size": 3},
    "annotations": {"org.opencontainers.image.title": "x"}, "artifactType": "a/b"}
INDEX: dict[str, Any] = {
    "schemaVersion": 2, "mediaType": spec.OCI_INDEX,
    "manifests": [{"mediaType": spec.OCI_MANIFEST, "digest": D1, "size": 10,
                   "platform": {"os": "linux", "architecture": "arm", "variant": "v7",
                                "os.features": ["f"], "os.version": "1"},
                   "annotations": {spec.ANNOTATION_REF_NAME: "v1"}}],
    "annotations": {"a": "b"}}
CONFIG: dict[str, Any] = {
    "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z", "author": "me",
    "config": {"Env": ["A=1"], "Entrypoint": ["/bin/sh"], "Cmd": ["-c", "true"],
               "User": "1:1", "WorkingDir": "/", "Labels": {"l": "v"}, "StopSignal": "SIGTERM",
               "ExposedPorts": {"80/tcp": {}}},
    "rootfs": {"type": "layers", "diff_ids": [D1, D2]},
    "history": [{"created_by": "x", "empty_layer": True}]}

WRONG_VALUES: list[Any] = [None, True, 0, -1, 2**63, 2**64 + 1, 1.5, "", "x", "\ud800",
                           "a\x00b", "\x1b[2J", [], [None], {}, {"": None}, D1,
                           "sha256:../../etc/passwd"]


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from paths(v, (*prefix, i))


def replaced(doc: Any, path: tuple[Any, ...], value: Any, delete: bool = False) -> Any:
    if not path:
        return value
    out = copy.deepcopy(doc)
    node = out
    for part in path[:-1]:
        node = node[part]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def nested(depth: int, leaf: Any = 1) -> Any:
    doc = leaf
    for i in range(depth):
        doc = [doc] if i % 2 else {"n": doc}
    return doc


def encode(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=True).encode()  # \ud800 escapes stay escapes


def systematic(base: dict[str, Any]) -> Iterator[bytes]:
    """Every path: every wrong value, removed, and wrapped deep."""
    for path in paths(base):
        for value in WRONG_VALUES:
            yield encode(replaced(base, path, value))
        if path:
            yield encode(replaced(base, path, None, delete=True))
        yield encode(replaced(base, path, nested(150)))
    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    yield from (deep, b"[" * 100_000, b"1" * 5000, b"1e400", b"NaN", b'"\\ud800"', b"")
    yield encode(base)[:-1] + b',"x":' + deep + b"}"
    yield encode(base).replace(b"{", b'{"schemaVersion":1,', 1)  # duplicate keys
    yield encode(base).replace(b'"schemaVersion": 2', b'"schemaVersion": 2e400')
    yield encode(base).replace(b'"', b'"\x00', 3)
    yield encode(base).replace(b"}", b", \"k\": 1e999}", 1)
    yield encode(base).decode().encode("utf-16")
    yield b"\xff\xfe\x00" + encode(base)


def random_value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(12 if depth < 4 else 8)
    if pick < 8:
        return rng.choice([*WRONG_VALUES, rng.randrange(-2**70, 2**70), rng.random(),
                           "".join(chr(rng.randrange(0x110000)) for _ in range(4))])
    if pick < 10:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["mediaType", "digest", "size", "manifests", "layers", "config",
                        "rootfs", "diff_ids", "os", "architecture", "Labels", "Env",
                        "annotations", "platform", "schemaVersion", "type", "x"]):
            random_value(rng, depth + 1) for _ in range(rng.randrange(5))}


def random_docs(base: dict[str, Any], rng: random.Random) -> Iterator[bytes]:
    all_paths = list(paths(base))
    while True:
        doc = base
        for _ in range(rng.randrange(1, 4)):
            path = rng.choice(all_paths)
            try:
                doc = replaced(doc, path, random_value(rng), delete=rng.random() < 0.2)
            except (KeyError, IndexError, TypeError):
                continue  # an earlier mutation removed the path
        raw = bytearray(encode(doc))
        damage = rng.randrange(6)
        if damage == 0 and raw:
            raw = raw[:rng.randrange(len(raw))]
        elif damage == 1 and raw:
            for _ in range(rng.randrange(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
        elif damage == 2:
            raw = bytearray(encode(random_value(rng)))
        yield bytes(raw)


def exercise(result: Any) -> None:
    """What the rest of ociimg does with a parsed document must not raise either."""
    if isinstance(result, list):
        for d in result:
            spec.canonical_json(d.to_json())
            printable(d.annotations)
        return
    out = result.to_json()
    spec.canonical_json(out)
    printable(out)
    if isinstance(result, spec.ImageConfig):
        _ = (result.env, result.entrypoint, result.cmd, result.working_dir, result.user,
             result.labels, result.stop_signal, spec.chain_ids(result.diff_ids))
    if isinstance(result, spec.Index):
        result.platforms()
        try:
            spec.match_platform(result, spec.Platform.parse("linux/arm/v7"))
        except OciimgError:
            pass


def layout_index(tmp: Path) -> Callable[[bytes], Any]:
    store = Store(tmp / "layout")
    store.init()

    def parse(raw: bytes) -> Any:
        store.index_path.write_bytes(raw)
        store.refs()
        return store.entries()
    return parse


PARSERS: dict[str, tuple[dict[str, Any], Any]] = {
    "manifest": (MANIFEST, lambda _tmp: spec.parse_manifest),
    "index": (INDEX, lambda _tmp: spec.parse_index),
    "manifest-or-index": (MANIFEST, lambda _tmp: spec.parse_manifest_or_index),
    "config": (CONFIG, lambda _tmp: spec.parse_config),
    "layout-index.json": (INDEX, layout_index),
}


@pytest.mark.parametrize("name", list(PARSERS))
def test_parsers_raise_only_ociimg_errors(name: str, tmp_path: Path) -> None:
    base, make = PARSERS[name]
    parse = make(tmp_path)
    rng = random.Random(f"{SEED}-{name}")
    deadline = time.monotonic() + SECONDS
    counts = {"ok": 0, "refused": 0}

    def check(raw: bytes) -> None:
        try:
            exercise(parse(raw))
        except OciimgError:  # messages may echo input: the CLI prints them escaped
            counts["refused"] += 1
            return
        except Exception as exc:  # the bug this test exists for
            pytest.fail(f"{name}: {type(exc).__name__}: {str(exc)[:200]} for input "
                        f"{raw[:300]!r} (OCIIMG_FUZZ_SEED={SEED})")
        counts["ok"] += 1

    for raw in systematic(base):
        check(raw)
    for raw in random_docs(base, rng):
        if time.monotonic() > deadline:
            break
        check(raw)
    assert counts["ok"] and counts["refused"] > 100, counts


def test_lone_surrogates_become_replacement_characters() -> None:
    raw = encode({**CONFIG, "config": {"Labels": {"\ud800k": "v\udfff"}, "Env": ["X=\ud83d"]}})
    config = spec.parse_config(raw)
    assert config.labels == {"\ufffdk": "v\ufffd"} and config.env == ["X=\ufffd"]
    assert config.raw == raw  # the digest is still over the bytes received
    spec.canonical_json(config.to_json())
