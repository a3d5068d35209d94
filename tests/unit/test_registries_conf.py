"""Per-registry settings read from containers' registries.conf (v2 TOML)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ociimg.errors import InvalidDocument
from ociimg.registry import ClientOptions, RegistryClient
from ociimg.registry.registries import config_files, insecure_registries, is_insecure

CONF = """
unqualified-search-registries = ["docker.io"]

[[registry]]
location = "registry.internal:5000"
insecure = true

[[registry]]
location = "secure.example.com"
insecure = false

[[registry]]
prefix = "team.example.com/project"
location = "team.example.com/project"
insecure = true
"""


def write(tmp_path: Path, text: str, name: str = "registries.conf") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_insecure_locations(tmp_path: Path) -> None:
    conf = write(tmp_path, CONF)
    assert insecure_registries([conf]) == {"registry.internal:5000", "team.example.com/project"}
    assert is_insecure("registry.internal:5000", [conf])
    assert is_insecure("team.example.com", [conf])  # TLS settings are per host
    assert not is_insecure("secure.example.com", [conf])
    assert not is_insecure("registry.internal", [conf])  # another port is another registry


def test_later_files_win(tmp_path: Path) -> None:
    first = write(tmp_path, CONF, "a.conf")
    second = write(tmp_path, '[[registry]]\nlocation = "registry.internal:5000"\n'
                             'insecure = false\n', "b.conf")
    assert not is_insecure("registry.internal:5000", [first, second])


def test_missing_files_are_fine_and_bad_toml_is_a_clear_error(tmp_path: Path) -> None:
    assert insecure_registries([tmp_path / "absent.conf"]) == set()
    bad = write(tmp_path, "[[registry]\nlocation = ")
    with pytest.raises(InvalidDocument, match="not valid TOML"):
        insecure_registries([bad])


def test_env_override_and_client_wiring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = write(tmp_path, CONF)
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(conf))
    assert config_files() == [conf]
    insecure = RegistryClient.open("registry.internal:5000", "registry.internal:5000",
                                   ClientOptions(), "x/y")
    secure = RegistryClient.open("secure.example.com", "secure.example.com",
                                 ClientOptions(), "x/y")
    try:
        assert insecure.transport.options.insecure is True
        assert secure.transport.options.insecure is False
    finally:
        insecure.close()
        secure.close()
