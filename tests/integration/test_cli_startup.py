"""The CLI's start-up import budget: `ociimg --version`, `images`, `ps` and `inspect NAME`
(issue 12: <= 100 ms each) load typer, the app and their own command module (and what it
imports), never the heavy stacks another command needs: the registry client (requests,
urllib3, http, ssl), rich's progress bars, jsonschema, the layer applier, the image
builder, unrelated commands' modules (ociimg/cli/__init__.py: COMMAND_HOMES)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ociimg.cli import COMMAND_HOMES, COMMAND_MODULES, command_name
from ociimg.reference import parse_image_name
from ociimg.store import Store
from ociimg.transports import import_image
from tests.conftest import cached_fixture_layout

REPO = Path(__file__).resolve().parents[2]

# Run as the console script runs it, with the modules loaded by the end written out.
_DRIVER = """
import os, sys
report, args = sys.argv[1], sys.argv[2:]
sys.path.insert(0, os.getcwd())
from ociimg.cli import main
code = main(args)
with open(report, "w") as f:
    f.write(" ".join(sorted(sys.modules)))
sys.stdout.flush()
os._exit(code)
"""

# Packages (a name and everything below it) no budgeted command may load.
HEAVY = ("requests", "urllib3", "http", "ssl", "email", "rich", "jsonschema", "pydantic",
         "zstandard", "isal", "concurrent", "ociimg.registry", "ociimg.layers", "ociimg.build",
         "ociimg.image", "ociimg.commands.unpack")
# Command modules none of them needs (the build's, volumes', networks').
UNRELATED = {"ociimg.cli.build", "ociimg.cli.volumes", "ociimg.cli.network"}
ALL_COMMANDS = {f"ociimg.cli.{m}" for m in COMMAND_MODULES}


def _loaded(root: Path, report: Path, *args: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", _DRIVER, str(report), *args], cwd=REPO,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "OCIIMG_ROOT": str(root),
                               "OCIIMG_RUNTIME_ROOT": str(root / "runtime")}, timeout=60)
    assert proc.returncode == 0, (args, proc.stderr)
    modules = set(report.read_text().split())
    assert "ociimg.cli" in modules
    return modules


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.fixture(scope="module")
def root_with_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-startup")
    ref = parse_image_name(f"oci:{cached_fixture_layout()}:busybox")
    store = Store.open(root)
    name = import_image(ref, store)  # type: ignore[arg-type]
    store.tag("budget:latest", store.resolve(name))
    return root


@pytest.mark.parametrize("args", [("--version",), ("images",), ("images", "--json"),
                                  ("ps", "-a"), ("inspect", "budget:latest")])
def test_budgeted_commands_load_no_heavy_module(root_with_image: Path, tmp_path: Path,
                                                args: tuple[str, ...]) -> None:
    modules = _loaded(root_with_image, tmp_path / "modules", *args)
    assert (_heavy(modules), sorted(modules & UNRELATED)) == ([], [])
    if args == ("--version",):
        assert "typer" not in modules  # answered before the app is built


def test_the_driver_sees_a_heavy_command(root_with_image: Path, tmp_path: Path) -> None:
    """The check can fail: `logout` loads the registry client; the other commands'
    modules are not imported for it either."""
    modules = _loaded(root_with_image, tmp_path / "modules", "logout", "127.0.0.1:1")
    assert {"urllib3", "ociimg.registry.client"} <= set(_heavy(modules))
    assert "ociimg.cli.images" in modules and not modules & UNRELATED
    modules = _loaded(root_with_image, tmp_path / "modules", "--help")
    assert ALL_COMMANDS <= modules  # the help lists every command


def test_command_homes_name_where_each_command_is_defined() -> None:
    """COMMAND_HOMES is only a shortcut (an unlisted command imports every module), but a
    wrong entry would make its command 'No such command'."""
    import importlib

    from typer.main import get_command_name

    from ociimg.cli.app import app

    defined = {}
    for module in COMMAND_MODULES:
        importlib.import_module(f"ociimg.cli.{module}")
    for info in app.registered_commands:
        name = info.name or get_command_name(info.callback.__name__)  # type: ignore[union-attr]
        defined[name] = info.callback.__module__.rsplit(".", 1)[1]  # type: ignore[union-attr]
    for group in app.registered_groups:  # the module that holds the group's Typer
        defined[group.name] = next(  # type: ignore[index]
            m for m in COMMAND_MODULES
            if group.typer_instance in vars(sys.modules[f"ociimg.cli.{m}"]).values())
    wrong = {name: home for name, home in COMMAND_HOMES.items() if defined.get(name) != home}
    assert wrong == {}
    assert set(defined) <= set(COMMAND_HOMES)  # every command has its shortcut


@pytest.mark.parametrize("args, name", [(["--root", "/x", "ps", "-a"], "ps"),
                                        (["--debug", "--root=/x", "images"], "images"),
                                        (["--", "run"], "run"), (["--help"], None),
                                        (["--root", "images"], None)])
def test_command_name_skips_global_options(args: list[str], name: str | None) -> None:
    assert command_name(args) == name
