"""config.json → RuntimeConfig: strict where the runtime acts, errors name the JSON path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ociimg.errors import ContainerError, InvalidDocument
from ociimg.oskit.linux import CLONE
from ociimg.runtime.config import load_config, parse_config
from ociimg.runtime.namespaces import format_id_map, new_namespace_flags

BUNDLE = Path("/b")


def doc(**over: object) -> dict:
    base = {
        "ociVersion": "1.2.0",
        "root": {"path": "rootfs", "readonly": True},
        "process": {"args": ["sh"], "cwd": "/", "env": ["PATH=/bin", "A=1", "A=2"],
                    "user": {"uid": 1000, "gid": 100, "additionalGids": [5]},
                    "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20}]},
        "hostname": "h",
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"},
                                 {"type": "network", "path": "/proc/1/ns/net"}],
                  "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
                  "maskedPaths": ["/proc/kcore"]},
    }
    base.update(over)
    return base


def test_parse_full() -> None:
    cfg = parse_config(doc(), BUNDLE)
    assert cfg.root_path == "/b/rootfs" and cfg.root_readonly
    assert cfg.process.args == ("sh",) and cfg.process.user.uid == 1000
    assert cfg.process.user.additional_gids == (5,)
    assert cfg.process.env_value("A") == "2" and cfg.process.env_value("B") is None
    assert cfg.process.rlimits[0].type == "RLIMIT_NOFILE" and cfg.process.rlimits[0].hard == 20
    assert cfg.has_namespace("pid") and cfg.namespace("network").path == "/proc/1/ns/net"
    assert cfg.masked_paths == ("/proc/kcore",)
    assert format_id_map(cfg.uid_mappings) == "0 1000 1\n"
    # Joined namespaces are not created.
    assert new_namespace_flags(cfg.namespaces) == CLONE.NEWPID | CLONE.NEWNS


def test_absolute_root_path_replaces_bundle() -> None:
    cfg = parse_config(doc(root={"path": "/srv/root"}), BUNDLE)
    assert cfg.root_path == "/srv/root"


@pytest.mark.parametrize(("mutate", "path"), [
    (lambda d: d.update(ociVersion="0.9"), "ociVersion"),
    (lambda d: d.pop("root"), "root.path"),
    (lambda d: d["process"].update(args=[]), "process.args"),
    (lambda d: d["process"].update(args=["sh", 1]), "process.args[1]"),
    (lambda d: d["process"].update(cwd="relative"), "process.cwd"),
    (lambda d: d["process"]["user"].update(uid="0"), "process.user.uid"),
    (lambda d: d["process"].update(rlimits=[{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]),
     "process.rlimits[0].type"),
    (lambda d: d["linux"]["namespaces"].append({"type": "pid"}), "linux.namespaces[3].type"),
    (lambda d: d["linux"]["namespaces"].append({"type": "nope"}), "linux.namespaces[3].type"),
    (lambda d: d["linux"]["namespaces"].append({"type": "ipc", "path": "rel"}),
     "linux.namespaces[3].path"),
    (lambda d: d.update(mounts=[{"type": "tmpfs"}]), "mounts[0].destination"),
    (lambda d: d.update(hooks={"prestart": [{"path": "relative"}]}), "hooks.prestart[0].path"),
    (lambda d: d.update(annotations={"a": 1}), "annotations.a"),
    (lambda d: d["linux"].update(timeOffsets={"realtime": {"secs": 1}}),
     "linux.timeOffsets.realtime"),
])
def test_errors_name_the_json_path(mutate, path: str) -> None:
    d = doc()
    mutate(d)
    with pytest.raises(InvalidDocument) as info:
        parse_config(d, BUNDLE)
    assert f"config.json: {path}:" in str(info.value)
    assert info.value.hint


def test_load_config_missing_and_bad_json(tmp_path: Path) -> None:
    with pytest.raises(InvalidDocument, match="no config.json"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InvalidDocument, match="cannot read JSON"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(doc()))
    assert load_config(tmp_path).bundle == str(tmp_path)


def test_process_is_optional_for_parsing() -> None:
    d = doc()
    d.pop("process")
    assert parse_config(d, BUNDLE).process is None


@pytest.mark.parametrize(("text", "number"), [
    ("9", 9), ("KILL", 9), ("SIGKILL", 9), ("term", 15), ("SIGRTMIN+3", 37), ("RTMIN", 34),
    ("RTMAX-1", 63),
])
def test_parse_signal(text: str, number: int) -> None:
    from ociimg.runtime.cli import parse_signal
    assert parse_signal(text) == number


@pytest.mark.parametrize("text", ["NOPE", "RTMIN+99", "SIG", "SIG_IGN", "_DFL", "SIG_BLOCK"])
def test_parse_signal_rejects_unknown(text: str) -> None:
    from ociimg.errors import ContainerError
    from ociimg.runtime.cli import parse_signal
    with pytest.raises(ContainerError, match="unknown signal"):
        parse_signal(text)


def test_intermediate_creates_neither_the_user_nor_the_cgroup_namespace() -> None:
    # The user ns comes first on its own (id maps); the cgroup ns is made by the init once
    # it is in the container's cgroups, so its root is the container's cgroup.
    from ociimg.runtime.config import Namespace
    spaces = tuple(Namespace(t) for t in ("pid", "mount", "user", "cgroup", "network"))
    assert new_namespace_flags(spaces) == CLONE.NEWPID | CLONE.NEWNS | CLONE.NEWNET


def test_exec_user_is_numeric_uid_gid() -> None:
    from ociimg.runtime.cli import exec_request, parse_args
    from ociimg.runtime.execution import process_spec

    def request(user: str):
        return exec_request(parse_args(["exec", "-e", "E=1", "-u", user, "c1", "true"]))
    cfg = parse_config(doc(), BUNDLE)
    req = request("5:6")
    spec = process_spec(cfg, req.args, env=req.env, user=req.user)
    assert (spec.user.uid, spec.user.gid, spec.args) == (5, 6, ("true",))
    assert spec.env[-1] == "E=1"
    for bad in ("bob", "1:staff", "-1", "1:"):
        with pytest.raises(ContainerError, match="is not UID"):
            request(bad)
