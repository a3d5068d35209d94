"""The runtime's start-up import budget (ociimg/runtime/startup.py): each command, run as
bin/ociimg-runtime runs it (``python -I -S``, no ``site``), loads none of the modules the
budget keeps out."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from ociimg.runtime import startup
from tests.integration.runtime_helpers import REPO, base_config, write_config

# bin/ociimg-runtime's Python part, on this checkout, then the modules loaded by the end
# of main() written to the file named by the first argument.
_DRIVER = """
import gc, os, sys
gc.disable()
report, sys.argv[1:] = sys.argv[1], sys.argv[2:]
sys.path.insert(0, os.getcwd())
from ociimg.runtime.cli import main
code = main()
with open(report, "w") as f:
    f.write(" ".join(sorted(sys.modules)))
sys.stdout.flush()
os._exit(code)
"""


def _loaded(state_root: Path, report: Path, *args: str) -> set[str]:
    # stderr to a file: a created container keeps the runtime's stdio open.
    with tempfile.TemporaryFile() as err:
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", _DRIVER, str(report),
                               "--root", str(state_root), *args], cwd=REPO,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=err, timeout=60)
        err.seek(0)
        assert proc.returncode == 0, (args, err.read().decode())
    modules = set(report.read_text().split())
    assert "ociimg.runtime.cli" in modules
    return modules


def test_no_command_loads_what_the_budget_keeps_out(runtime_env: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    bundle, state_root = runtime_env
    write_config(bundle, base_config(["sleep", "30"]))
    report = tmp_path / "modules"
    loaded = {}
    for args in (("create", "--bundle", str(bundle), "c1"), ("state", "c1"),
                 ("start", "c1"), ("exec", "c1", "true"), ("kill", "c1", "KILL"),
                 ("delete", "c1")):
        loaded[args[0]] = _loaded(state_root, report, *args)
    write_config(bundle, base_config(["true"]))
    loaded["run"] = _loaded(state_root, report, "run", "--bundle", str(bundle), "c2")
    over = {verb: sorted(modules & (startup.NEVER_LIGHT if verb in startup.LIGHT_COMMANDS
                                    else startup.NEVER))
            for verb, modules in loaded.items()}
    assert over == {verb: [] for verb in loaded}
