"""exec: another process in a running container, through its OCI runtime's ``exec
--process``; its stdio are pipes copied to and from the caller's fds (stdio.py)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
from typing import Any

from ociimg.containers import stdio as pipes
from ociimg.errors import InvalidDocument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ociimg.containers.protocol import OciRuntime
    from ociimg.containers.store import Container


def run_exec(c: Container, runtime: OciRuntime, argv: list[str], *, env: list[str],
             cwd: str | None, user: str | None, tty: bool, interactive: bool,
             stdio: tuple[int, int, int], pid_file: str | None = None) -> int:
    process = exec_process(c, argv, env=env, cwd=cwd, user=user, tty=tty)
    path = c.path / f".exec-{secrets.token_hex(8)}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(process, f)
    try:
        if tty:  # the runtime proxies the pty to these fds; the container only has the pty
            return runtime.exec(c.id, path, stdio=stdio, pid_file=pid_file)
        return _exec_relayed(c, runtime, path, interactive, stdio, pid_file)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def exec_process(c: Container, argv: list[str], *, env: list[str], cwd: str | None,
                 user: str | None, tty: bool) -> dict[str, Any]:
    """The container's process (its bundle's config.json, written by create) with this
    command: env extended, the rest replaced where given. A user name is resolved in the
    container's own /etc/passwd and /etc/group."""
    try:
        with open(c.path / "config.json", "rb") as f:
            base = json.load(f)["process"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidDocument(f"container {c.name}: unreadable config.json ({exc})") from exc
    process = dict(base, args=list(argv), env=list(base.get("env", [])) + list(env),
                   terminal=tty)
    if cwd:
        process["cwd"] = cwd
    if user:
        from ociimg.users import resolve_user
        found = resolve_user(user, c.rootfs)
        process["user"] = {"uid": found.uid, "gid": found.gid,
                           "additionalGids": list(found.additional_gids)}
    process.pop("consoleSize", None)
    return process


def _exec_relayed(c: Container, runtime: OciRuntime, process: os.PathLike[str],
                  interactive: bool, stdio: tuple[int, int, int],
                  pid_file: str | None) -> int:
    theirs: list[int] = []
    if interactive:
        in_r, in_w = os.pipe2(os.O_CLOEXEC)
        theirs.append(in_r)
        pipes.feed(stdio[0], in_w)
    else:  # at EOF at once; never the host's /dev/null, which root inside could chmod
        in_r, in_w = os.pipe2(os.O_CLOEXEC)
        os.close(in_w)
        theirs.append(in_r)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    theirs += [out_w, err_w]
    # The copy stops when told (the runtime has returned: its process exited), not at
    # EOF: a background process of the container may hold the pipes open for ever.
    stop_r, stop_w = os.pipe2(os.O_CLOEXEC)
    copier = threading.Thread(target=pipes.copy_until_exit,
                              args=([(out_r, stdio[1]), (err_r, stdio[2])], stop_r),
                              daemon=True, name="ociimg-exec-output")
    copier.start()
    try:
        return runtime.exec(c.id, process, stdio=(in_r, out_w, err_w), pid_file=pid_file)
    finally:
        for fd in theirs:
            os.close(fd)
        os.write(stop_w, b"x")
        copier.join()
        os.close(stop_w)
        os.close(stop_r)
