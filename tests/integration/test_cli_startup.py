"""The CLI's start-up import budget: `ociimg --version`, `images`, `ps`, `inspect NAME` and
`history NAME` (issue 12: <= 100 ms each) load typer, the app and their own command module,
never the heavy stacks another command needs: the registry client (requests, urllib3,
http, ssl), rich's progress bars, jsonschema, the layer applier, the image builder, the
network package, the bundle converter (ps), the other commands' modules
(ociimg/cli/__init__.py: COMMAND_HOMES)."""

from __future__ import annotations

import os
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
HEAVY = ("requests", "urllib3", "http", "ssl", "socket", "email", "rich", "jsonschema",
         "pydantic", "zstandard", "isal", "concurrent", "ociimg.registry", "ociimg.layers",
         "ociimg.build", "ociimg.image", "ociimg.commands.unpack",
         "ociimg.network", "ociimg.signing", "ociimg.api")
# What one command needs beyond that (none may load typer's rich output either).
ALSO_HEAVY = {"ps": ("ociimg.bundle", "ociimg.spec", "ociimg.store.layout", "ociimg.store.gc",
                     "ociimg.containers.monitor", "ociimg.containers.volumes", "hashlib",
                     "_hashlib", "secrets")}
OTHER_COMMANDS = {f"ociimg.cli.{m}" for m in COMMAND_MODULES}
# Command modules a budgeted command's module imports for shared options or printers.
SHARED = {"ps": {"ociimg.cli.lifecycle", "ociimg.cli.signing"},
          "inspect": {"ociimg.cli.inspection", "ociimg.cli.signing"},
          "history": {"ociimg.cli.images", "ociimg.cli.signing"}}


def _loaded(root: Path, report: Path, *args: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", _DRIVER, str(report), *args], cwd=REPO,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "OCIIMG_ROOT": str(root),
                               "OCIIMG_RUNTIME_ROOT": str(root / "runtime")}, timeout=60)
    assert proc.returncode == 0, (args, proc.stderr)
    modules = set(report.read_text().split())
    assert "ociimg.cli" in modules
    return modules


def _heavy(modules: set[str], command: str = "") -> list[str]:
    heavy = (*HEAVY, *ALSO_HEAVY.get(command, ()))
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in heavy))


@pytest.fixture(scope="module")
def root_with_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-startup")
    ref = parse_image_name(f"oci:{cached_fixture_layout()}:busybox")
    store = Store.open(root)
    name = import_image(ref, store)  # type: ignore[arg-type]
    store.tag("budget:latest", store.resolve(name))
    # An exited container, so that `ps -a` reads every record a row shows.
    subprocess.run([sys.executable, "-m", "ociimg", "--root", str(root), "run", "-q",
                    "--network", "none", "--name", "budget-ctr", "budget:latest", "true"],
                   cwd=REPO, check=True, capture_output=True, timeout=120,
                   env={**os.environ, "OCIIMG_RUNTIME_ROOT": str(root / "runtime")})
    return root


@pytest.mark.parametrize("args", [("--version",), ("-v",), ("images",), ("images", "--json"),
                                  ("ps", "-a"), ("ps", "-a", "--json"), ("ps", "-q"),
                                  ("inspect", "budget:latest"), ("history", "budget:latest")])
def test_budgeted_commands_load_no_heavy_module(root_with_image: Path, tmp_path: Path,
                                                args: tuple[str, ...]) -> None:
    modules = _loaded(root_with_image, tmp_path / "modules", *args)
    own = {f"ociimg.cli.{COMMAND_HOMES[args[0]]}"} if args[0] in COMMAND_HOMES else set()
    own |= SHARED.get(args[0], set())
    assert (_heavy(modules, args[0]), sorted(modules & OTHER_COMMANDS - own)) == ([], [])
    if args[0] == "ps":
        assert "ociimg.containers.manager" in modules  # the rows were read
    if args[0].startswith("-"):
        assert "typer" not in modules  # answered before the app is built


def test_the_driver_sees_a_heavy_command(root_with_image: Path, tmp_path: Path) -> None:
    """The check can fail: `logout` loads the registry client; the other commands'
    modules are not imported for it either."""
    modules = _loaded(root_with_image, tmp_path / "modules", "logout", "127.0.0.1:1")
    assert {"urllib3", "ociimg.registry.client"} <= set(_heavy(modules))
    assert modules & OTHER_COMMANDS == {"ociimg.cli.images", "ociimg.cli.signing"}
    modules = _loaded(root_with_image, tmp_path / "modules", "--help")
    assert OTHER_COMMANDS <= modules  # the help lists every command


def test_command_homes_name_where_each_command_is_defined() -> None:
    """COMMAND_HOMES is only a shortcut (an unlisted command imports every module), but a
    wrong entry would make its command 'No such command'; every command and group has one."""
    import importlib

    from ociimg.cli import typer_command_name
    from ociimg.cli.app import app

    defined = {}
    for module in COMMAND_MODULES:
        importlib.import_module(f"ociimg.cli.{module}")
    for info in app.registered_commands:
        defined[typer_command_name(info)] = info.callback.__module__.rsplit(".", 1)[1]  # type: ignore[union-attr]
    for group in app.registered_groups:
        callbacks = [c.callback for c in group.typer_instance.registered_commands]  # type: ignore[union-attr]
        defined[group.name] = callbacks[0].__module__.rsplit(".", 1)[1]  # type: ignore[union-attr]
    assert {name: home for name, home in COMMAND_HOMES.items()
            if defined.get(name) != home} == {}
    assert sorted(set(defined) - set(COMMAND_HOMES)) == []


def test_one_command_view_leaves_the_app_whole(capsys: pytest.CaptureFixture[str]) -> None:
    """`ociimg ps` builds a click group of ps alone; the app keeps every command for the
    next call in the same process (the API server and tests call main() again)."""
    from ociimg.cli import main, typer_main

    assert main(["ps", "--help"]) == 0
    assert set(typer_main(["ps"]).commands) == {"ps"}
    assert {"ps", "run", "images", "container", "network"} <= set(typer_main().commands)
    assert main(["--help"]) == 0
    assert "network" in capsys.readouterr().out


@pytest.mark.parametrize("args, name", [(["--root", "/x", "ps", "-a"], "ps"),
                                        (["--debug", "--root=/x", "images"], "images"),
                                        (["--", "run"], "run"), (["--help"], None),
                                        (["--root", "images"], None)])
def test_command_name_skips_global_options(args: list[str], name: str | None) -> None:
    assert command_name(args) == name
