"""Hostile config.json, generated from the runtime-spec schema (tests/hostileconfig.py):
parse_config either accepts a document the schema accepts too, or refuses it with an
InvalidDocument of one line that names the JSON path. Never another exception."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from ociimg.errors import InvalidDocument
from ociimg.runtime.config import load_config, parse_config
from tests import ocischema
from tests.hostileconfig import nested, schema_leaves, variants
from tests.integration.runtime_helpers import base_config


def is_schema_valid(doc: dict) -> bool:
    try:
        ocischema.validate(doc, "runtime-spec", "config-schema.json")
    except jsonschema.ValidationError:
        return False
    return True


def outcome(doc: dict) -> str:
    """"accepted", or the one-line error (any other exception fails the test)."""
    try:
        parse_config(doc, "/bundle")
    except InvalidDocument as exc:
        assert "\n" not in exc.message and exc.message.startswith("config.json: ")
        return exc.message
    return "accepted"


def test_base_config_is_valid() -> None:
    base = base_config(["true"])
    assert is_schema_valid(base) and outcome(base) == "accepted"


def test_every_leaf_of_the_schema_is_covered() -> None:
    paths = {path for path, _ in schema_leaves()}
    for needed in ("process.consoleSize.height", "linux.resources.pids.limit",
                   "linux.devices[0].major", "hooks.prestart[0].timeout",
                   "process.rlimits[0].soft", "linux.resources",
                   "linux.seccomp.syscalls[0].args[0].op",
                   "linux.resources.hugepageLimits[0].pageSize", "process.user.uid"):
        assert needed in paths


def test_hostile_variants_are_refused_in_one_line_or_schema_valid() -> None:
    accepted_invalid = []
    count = 0
    for path, value, doc in variants(base_config(["true"])):
        count += 1
        if outcome(doc) == "accepted" and not is_schema_valid(doc):
            accepted_invalid.append(f"{path} = {value!r:.60}")
    assert count > 2000
    assert accepted_invalid == [], "\n".join(accepted_invalid)


@pytest.mark.parametrize(("path", "value", "where"), [
    ("hooks.prestart", [{"path": "/bin/true", "timeout": 10**30}], "hooks.prestart[0].timeout"),
    ("process.consoleSize", {"height": "24", "width": 80}, "process.consoleSize.height"),
    ("process.consoleSize", {"height": 2**40, "width": 80}, "process.consoleSize.height"),
    ("linux.resources", {"pids": {"limit": "100"}}, "linux.resources.pids.limit"),
    ("linux.devices", [{"type": "c", "path": "/dev/x", "major": "1", "minor": 3}],
     "linux.devices[0].major"),
    ("linux.devices", [{"type": "c", "path": "/dev/x", "major": 2**40, "minor": 3}],
     "linux.devices[0].major"),
    ("linux.resources", "x", "linux.resources"),
    ("process.rlimits", [{"type": "RLIMIT_NOFILE", "soft": -5, "hard": 10}],
     "process.rlimits[0].soft"),
    ("process.rlimits", [{"type": "RLIMIT_NOFILE", "soft": 2**63, "hard": 2**63}],
     "process.rlimits[0].soft"),
    ("process.rlimits", [{"type": "RLIMIT_NOFILE", "soft": 20, "hard": 10}],
     "process.rlimits[0].soft"),
    ("process.user", {"uid": 2**32 - 1, "gid": 0}, "process.user.uid"),
    ("linux.resources", {"hugepageLimits": [{"pageSize": "2MB/../../x", "limit": 1}]},
     "linux.resources.hugepageLimits[0].pageSize"),
    ("linux.resources", {"devices": [{"allow": True, "major": 2**40}]},
     "linux.resources.devices[0].major"),
    ("process.oomScoreAdj", 5000, "process.oomScoreAdj"),
])
def test_reported_cases_name_their_path(path: str, value: object, where: str) -> None:
    doc = base_config(["true"])
    node = doc
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    assert outcome(doc).startswith(f"config.json: {where}: ")


def test_unlimited_rlimit_is_rlim_infinity() -> None:
    doc = base_config(["true"])
    doc["process"]["rlimits"] = [{"type": "RLIMIT_CORE", "soft": 2**64 - 1,
                                  "hard": 2**64 - 1},
                                 {"type": "RLIMIT_NOFILE", "soft": 10, "hard": 2**64 - 1}]
    import resource
    limits = parse_config(doc, "/b").process.rlimits
    assert [(r.soft, r.hard) for r in limits] == [(resource.RLIM_INFINITY,) * 2,
                                                  (10, resource.RLIM_INFINITY)]


def test_deeply_nested_json_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(nested(100)).replace("1", "[" * 100000
                                                                          + "]" * 100000))
    with pytest.raises(InvalidDocument, match="nested too deeply"):
        load_config(tmp_path)
