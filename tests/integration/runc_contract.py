"""runc and ociimg-runtime driven side by side on one bundle: each with its own --root and
its own container id, the same command in the same container state, and what a caller
sees compared (test_runc_contract.py holds the table)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.runtime_helpers import REPO, WRITTEN_CGROUPS

RUNC = shutil.which("runc") or "/usr/sbin/runc"

# The substrings callers look for in a runtime's error (its stderr, or the last "error"
# entry of --log): containerd's shim (pkg/process: checkKillError, Init.delete),
# go-runc's users and podman. Each must appear in our message exactly where it appears
# in runc's.
PHRASES = ("container not running", "no such process", "does not exist",
           "process already finished", "already exists", "container with id exists",
           "not paused", "is paused", "is not running", "not stopped", "not created",
           "is not created", "cannot exec", "paused", "stopped", "running",
           "executable file not found", "no such file or directory")

# Those that change what a caller does (containerd's checkKillError: "not found" instead
# of a failed kill): never in a hint, where they would mean nothing to runc's callers.
DECISIVE = PHRASES[:8]

STATES = ("created", "running", "paused", "stopped", "nonexistent")


@dataclass
class Outcome:
    """One command's result as a caller sees it."""
    code: int
    stderr: str
    stdout: str = ""
    json_error: str | None = None   # msg of the last "error" entry, --log-format json
    text_error: str | None = None   # the same, --log-format text
    plain_stderr: str | None = None  # stderr without --log
    after: str = ""                 # the container's status afterwards


@dataclass
class Side:
    """One runtime: its command line, state root and container id."""
    name: str
    argv: list[str]
    root: Path
    cid: str
    logs: Path
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, log: str | None = None, fmt: str = "json",
            stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
        """Output to files: a created container keeps the caller's stdio open."""
        head = [*self.argv, "--root", str(self.root)]
        if log:
            head += ["--log", log, "--log-format", fmt]
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.run([*head, *args], stdout=out, stderr=err, timeout=60,
                                  cwd=REPO, input=stdin, env=self.env or None)
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(proc.args, proc.returncode,
                                               out.read().decode(), err.read().decode())

    def must(self, *args: str) -> None:
        done = self.run(*args)
        if done.returncode != 0:
            raise AssertionError(f"{self.name} {' '.join(args)}: {done.returncode}\n"
                                 f"{done.stdout}{done.stderr}")

    def status(self) -> str:
        done = self.run("state", self.cid)
        if done.returncode != 0:
            return "nonexistent" if "does not exist" in done.stderr else \
                f"state failed: {done.stderr.strip()}"
        return json.loads(done.stdout)["status"]

    def wait_status(self, wanted: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while (now := self.status()) != wanted:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: {now}, not {wanted}")
            time.sleep(0.02)

    def prepare(self, bundle: Path, state: str) -> None:
        if state == "nonexistent":
            return
        self.must("create", "--bundle", str(bundle), self.cid)
        if state == "created":
            return
        self.must("start", self.cid)
        if state == "paused":
            self.must("pause", self.cid)
        elif state == "stopped":
            self.must("kill", self.cid, "KILL")
            self.wait_status("stopped")

    def cleanup(self) -> None:
        if (self.root / self.cid).exists():  # both keep a container's state in ROOT/ID
            self.run("delete", "--force", self.cid)

    def invoke(self, args: list[str]) -> Outcome:
        """The command with --log in JSON (containerd's way); one that failed (and so
        changed nothing) again with --log-format text and without --log."""
        log = self.logs / f"{self.name}.json"
        done = self.run(*args, log=str(log))
        outcome = Outcome(done.returncode, done.stderr, done.stdout,
                          json_error=last_error(log, "json"))
        if done.returncode != 0:
            text = self.logs / f"{self.name}.text"
            self.run(*args, log=str(text), fmt="text")
            outcome.text_error = last_error(text, "text")
            outcome.plain_stderr = self.run(*args).stderr
        outcome.after = self.status()
        return outcome


def sides(tmp: Path) -> tuple[Side, Side]:
    """runc and ociimg-runtime, ids of the same length (their messages are compared with
    the id replaced) and distinct cgroups (the bundle names none: each is named after
    its container)."""
    tag = uuid.uuid4().hex[:10]
    env = dict(os.environ, PYTHONPATH=REPO)
    runc = Side("runc", [RUNC], tmp / "runc-root", f"rc-{tag}", tmp)
    # -S as bin/ociimg-runtime starts it (no site: ~50 ms less per command); the
    # runtime imports nothing from site-packages.
    ours = Side("ociimg", [sys.executable, "-S", "-m", "ociimg.runtime"], tmp / "ociimg-root",
                f"oc-{tag}", tmp, env)
    WRITTEN_CGROUPS.extend((f"/{runc.cid}", f"/ociimg/{ours.cid}"))
    return runc, ours


_TEXT = re.compile(r'level=(\w+) msg=("(?:[^"\\]|\\.)*"|\S*)')


def last_error(path: Path, fmt: str) -> str | None:
    """The msg of the log's last "error" entry (containerd's getLastRuntimeError)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return None
    finally:
        path.unlink(missing_ok=True)
    found = None
    for line in lines:
        if fmt == "json":
            entry = json.loads(line)
            assert set(entry) == {"level", "msg", "time"}, line
            level, msg = entry["level"], entry["msg"]
        else:
            match = _TEXT.search(line)
            assert match, line
            level, msg = match.group(1), match.group(2)
            if msg.startswith('"'):
                msg = json.loads(msg)  # Go's %q, as far as runc's messages go
        if level == "error":
            found = msg.strip()
    return found


def normalize(text: str | None, side: Side, bundle: Path) -> str | None:
    """Ids, bundle and state paths, pids and times out of a message."""
    if text is None:
        return None
    # runc names itself where create and run fail: "runc create failed: ..."
    text = re.sub(r"^runc (create|run) failed: ", "", text)
    text = text.replace(str(side.root), "ROOT").replace(str(bundle), "BUNDLE")
    text = text.replace(side.cid, "ID")
    return re.sub(r"\b\d{2,}\b", "N", text)


def phrases(text: str | None) -> list[str]:
    return [p for p in PHRASES if text and p in text]
