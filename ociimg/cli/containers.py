"""Container commands: run, exec, ps, stop, rm, logs, and the runc-compatible `runtime`."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import typer

from ociimg.cli import netopts
from ociimg.cli.app import STATE, app
from ociimg.cli.options import (
    ENV,
    HOSTNAME,
    INSECURE,
    JSON_OUT,
    PLATFORM,
    USER,
    WORKDIR,
    find_init,
    parse_pairs,
    parse_platform,
    parse_security_opts,
    parse_size,
)
from ociimg.cli.output import print_json, printable, progress_for
from ociimg.cli.signing import POLICY, policy_name, policy_verifier, precheck_source
from ociimg.errors import OciimgError


@app.command(rich_help_panel="Containers", context_settings={"allow_interspersed_args": False})
def run(
    image: str = typer.Argument(..., help="Image: store name, oci:PATH[:TAG] or registry "
                                "reference (pulled if missing)."),
    command: list[str] = typer.Argument(None, help="Command and arguments (replace Cmd)."),
    name: str = typer.Option(None, "--name", help="Name for the container."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Run in the background."),
    rm: bool = typer.Option(False, "--rm", help="Remove the container when it exits."),
    interactive: bool = typer.Option(False, "--interactive", "-i", help="Keep stdin open."),
    tty: bool = typer.Option(False, "--tty", "-t", help="Allocate a pseudo-terminal."),
    env: list[str] = ENV,
    workdir: str = WORKDIR,
    user: str = USER,
    entrypoint: str = typer.Option(None, "--entrypoint", help="Replace the Entrypoint."),
    hostname: str = HOSTNAME,
    volume: list[str] = typer.Option([], "--volume", "-v", help="[NAME|/HOST:]/CTR[:OPTS]: "
                                     "a named, anonymous or bind mount; OPTS ro, rw, z, nocopy."),
    tmpfs: list[str] = typer.Option([], "--tmpfs", help="/CTR[:size=10m,mode=1777,...]."),
    read_only: bool = typer.Option(False, "--read-only", help="Read-only root filesystem."),
    memory: str = typer.Option(None, "--memory", "-m", help="Memory limit, e.g. 256m."),
    cpus: float = typer.Option(None, "--cpus", help="CPU quota in CPUs, e.g. 0.5."),
    pids_limit: int = typer.Option(None, "--pids-limit", help="Maximum number of processes."),
    network: str = netopts.NETWORK,  # h-net: network flags, parsed in cli/netopts.py
    publish: list[str] = netopts.PUBLISH,
    publish_all: bool = netopts.PUBLISH_ALL,
    dns: list[str] = netopts.DNS,
    dns_search: list[str] = netopts.DNS_SEARCH,
    dns_option: list[str] = netopts.DNS_OPTION,
    add_host: list[str] = netopts.ADD_HOST,
    network_alias: list[str] = netopts.NETWORK_ALIAS,
    ip: str = netopts.IP,
    mac_address: str = netopts.MAC_ADDRESS,
    init: bool = typer.Option(False, "--init", help="Run a tiny init as PID 1 that reaps "
                              "zombies and forwards signals (catatonit or tini)."),
    init_path: Path = typer.Option(None, "--init-path", help="Static init binary to use."),
    cap_add: list[str] = typer.Option([], "--cap-add", help="Add a capability (or ALL)."),
    cap_drop: list[str] = typer.Option([], "--cap-drop", help="Drop a capability (or ALL)."),
    security_opt: list[str] = typer.Option([], "--security-opt",
                                           help="seccomp=unconfined or no-new-privileges=false."),
    annotation: list[str] = typer.Option([], "--annotation", help="Add KEY=VALUE to config."),
    platform: str = PLATFORM,
    insecure: bool = INSECURE,
    policy: Path = POLICY,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No pull/unpack progress."),
    runtime_: str = typer.Option(None, "--runtime", help="A runc-compatible OCI runtime "
                                 "(name or path, e.g. runc) instead of the built-in one."),
    # h-vol: volumes and docker's run flags (parsed in cli/runopts.py)
    mount: list[str] = typer.Option([], "--mount", help="type=bind|volume|tmpfs,source=,"
                                    "target=[,readonly,tmpfs-size=,...]."),
    volumes_from: list[str] = typer.Option([], "--volumes-from", help="CONTAINER[:ro|rw]."),
    env_file: list[Path] = typer.Option([], "--env-file", help="Read NAME=VALUE lines."),
    device: list[str] = typer.Option([], "--device", help="/dev/HOST[:/dev/CTR][:rwm]."),
    ulimit: list[str] = typer.Option([], "--ulimit", help="NAME=SOFT[:HARD], e.g. nofile=512."),
    sysctl: list[str] = typer.Option([], "--sysctl", help="A namespaced sysctl NAME=VALUE."),
    privileged: bool = typer.Option(False, "--privileged", help="All capabilities and host "
                                    "devices, no seccomp, no masked paths."),
    pull: str = typer.Option("missing", "--pull", help="always, missing or never."),
    authfile: Path = typer.Option(None, "--authfile", help="Credentials file (docker format)."),
    cidfile: Path = typer.Option(None, "--cidfile", help="Write the container id here."),
    stop_signal: str = typer.Option(None, "--stop-signal", help="Signal `stop` sends first."),
    stop_timeout: float = typer.Option(None, "--stop-timeout", help="Seconds `stop` waits."),
    shm_size: str = typer.Option(None, "--shm-size", help="Size of /dev/shm, e.g. 64m."),
    group_add: list[str] = typer.Option([], "--group-add", help="An extra group (name or gid)."),
    userns: str = typer.Option(None, "--userns", help="host (the only mode)."),
) -> None:
    """Run a command in a new container (like `docker run` / `podman run`)."""
    from ociimg.bundle import BundleOptions
    from ociimg.bundle.runflags import parse_ulimit
    from ociimg.cli import runopts
    from ociimg.containers.manager import CreateOptions

    with runopts.docker_exit_codes():
        net = netopts.network_options(network, publish, publish_all, dns, dns_search,
                                      dns_option, add_host, network_alias, ip, mac_address,
                                      hostname)
        runopts.check_userns(userns)
        runopts.check_cidfile(cidfile)
        mounts = runopts.mount_flags(volume, mount, tmpfs)
        bundle = BundleOptions(
            args=list(command) if command else None,
            entrypoint=None if entrypoint is None else ([entrypoint] if entrypoint else []),
            env=runopts.environment(list(env), list(env_file)), cwd=workdir, user=user,
            hostname=hostname, terminal=tty, readonly_rootfs=read_only, mounts=mounts.binds,
            tmpfs=mounts.tmpfs,
            memory=parse_size(memory) if memory else None, cpus=cpus, pids_limit=pids_limit,
            cap_add=list(cap_add), cap_drop=list(cap_drop), annotations=parse_pairs(annotation),
            init=str(init_path or find_init()) if init or init_path else None,
            devices=[runopts.parse_device(d) for d in device],
            ulimits=[parse_ulimit(u) for u in ulimit], sysctls=runopts.parse_sysctls(sysctl),
            group_add=list(group_add), shm_size=parse_size(shm_size) if shm_size else None,
            privileged=privileged, **parse_security_opts(security_opt))
        options = CreateOptions(
            name=name, remove=rm, interactive=interactive, bundle=bundle, runtime=runtime_,
            network=net, volumes=mounts.volumes,
            volumes_from=[runopts.parse_volumes_from(v) for v in volumes_from],
            stop_signal=runopts.check_stop_signal(stop_signal), stop_timeout=stop_timeout)
        manager = _manager()
        verifier = policy_verifier(policy, "run", insecure)
        precheck_source(verifier, image)  # a layout or archive: judged before it is imported
        with progress_for(quiet) as progress:
            resolved = runopts.resolve_for_run(
                image, STATE.root, policy=pull, platform=parse_platform(platform),
                pull_options=_pull_options(insecure, authfile, verifier), progress=progress)
            if verifier is not None:  # an image already in the store is checked too
                verifier(policy_name(image, resolved.name), resolved.descriptor, None)
            c = manager.create(resolved, options, progress)
        runopts.write_cidfile(cidfile, c.id)
        if detach:
            _start_or_remove(manager, c, None, rm)
            print(c.id)
            return
        code = _run_attached(manager, c, rm)
    raise typer.Exit(code)


def _manager() -> Any:
    """The container manager over this root; the runtime's state root from
    OCIIMG_RUNTIME_ROOT (read here, never at import by the library)."""
    import os

    from ociimg.containers.manager import DEFAULT_RUNTIME_ROOT, ContainerManager
    return ContainerManager(STATE.root, runtime_root=Path(
        os.environ.get("OCIIMG_RUNTIME_ROOT") or DEFAULT_RUNTIME_ROOT))


def _start_or_remove(manager: Any, c: Any, stdio: tuple[int, int, int] | None,
                     remove: bool) -> None:
    """Start; a container whose monitor could not even be spawned is removed (--rm)."""
    try:
        # Attached, the CLI (one thread) forks the monitor: no interpreter start (~60 ms of
        # `run --rm`). Detached, a lean spawned monitor: it lives as long as the container
        # (~13 MB RSS against ~22 MB for a fork of the CLI).
        manager.start(c, stdio=stdio, fork=stdio is not None)
    except OciimgError:
        if remove and c.path.exists():
            with contextlib.suppress(OciimgError, OSError):
                manager.remove(c, force=True)
        raise


_FORWARDED = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


def _run_attached(manager: Any, c: Any, remove: bool) -> int:
    """Attached: the monitor copies the container's output to our fds; signals we get
    are forwarded to the container (SIGWINCH to the monitor, which resizes the pty)."""
    import os
    import signal

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(OciimgError, OSError):
            if signum == signal.SIGWINCH:
                pid = manager.monitor_pid(c)
                if pid:
                    os.kill(pid, signum)
            else:
                manager.kill(c, signum)

    saved = {}
    for name in (*_FORWARDED, "SIGWINCH"):
        sig = signal.Signals[name]
        saved[sig] = signal.signal(sig, forward)
    try:
        _start_or_remove(manager, c, (0, 1, 2), remove)
        code = manager.wait(c)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert code is not None
    return code


@app.command(rich_help_panel="Containers")
def ps(
    all_: bool = typer.Option(False, "--all", "-a", help="Also show exited containers."),
    json_out: bool = JSON_OUT,
) -> None:
    """List containers."""
    from ociimg.containers.manager import ACTIVE

    manager = _manager()
    rows = []
    for c in manager.list():
        st = manager.status(c).as_dict()
        if not all_ and st["status"] not in ACTIVE:
            continue
        rows.append({"id": c.id, "name": c.name, "image": c.meta.get("image"),
                     "command": c.meta.get("command"), "created": c.meta.get("created"), **st})
    if json_out:
        print_json(rows)
        return
    print(f"{'CONTAINER ID':14}{'IMAGE':40}{'COMMAND':24}{'STATUS':16}NAME")
    for r in rows:
        status = r["status"] + (f" ({r['exitCode']})" if "exitCode" in r else "")
        cmd = printable(" ".join(r["command"] or []))[:22]  # the image's Cmd: escaped
        image = printable(r["image"] or "")[:38]
        print(f"{r['id'][:12]:14}{image:40}{cmd:24}{status:16}{printable(r['name'])}")


@app.command(rich_help_panel="Containers")
def stop(
    names: list[str] = typer.Argument(..., help="Container names or ids."),
    time_: float = typer.Option(None, "--time", "-t", help="Seconds to wait before SIGKILL "
                                "(default: the container's --stop-timeout, else 10)."),
) -> None:
    """Stop containers: their StopSignal, then SIGKILL after --time seconds."""
    manager = _manager()
    for key in names:
        manager.stop(manager.get(key), time_)
        print(key)


@app.command("rm", rich_help_panel="Containers")
def rm_(
    names: list[str] = typer.Argument(..., help="Container names or ids."),
    force: bool = typer.Option(False, "--force", "-f", help="Kill running containers first."),
    volumes: bool = typer.Option(False, "--volumes", "-v", help="Also remove its anonymous "
                                 "volumes."),
) -> None:
    """Remove containers (their rootfs, logs and state)."""
    manager = _manager()
    for key in names:
        manager.remove(manager.get(key), force, volumes=volumes)
        print(key)


@app.command("exec", rich_help_panel="Containers",
             context_settings={"allow_interspersed_args": False})
def exec_(
    name: str = typer.Argument(..., help="Container name or id."),
    command: list[str] = typer.Argument(..., help="Command and arguments."),
    interactive: bool = typer.Option(False, "--interactive", "-i", help="Keep stdin open."),
    tty: bool = typer.Option(False, "--tty", "-t", help="Allocate a pseudo-terminal."),
    env: list[str] = ENV,
    workdir: str = WORKDIR,
    user: str = USER,
) -> None:
    """Run a command in a running container (like `docker exec` / `podman exec`)."""
    manager = _manager()
    c = manager.get(name)
    raise typer.Exit(manager.exec(c, list(command), env=list(env), cwd=workdir, user=user,
                                  tty=tty, interactive=interactive))


@app.command(rich_help_panel="Containers")
def logs(
    name: str = typer.Argument(..., help="Container name or id."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new output."),
) -> None:
    """Print the output of a detached container."""
    import sys

    manager = _manager()
    out = sys.stdout.buffer
    for chunk in manager.logs(manager.get(name), follow=follow):
        out.write(chunk)
        out.flush()


@app.command(rich_help_panel="Containers",
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                               "help_option_names": []})
def runtime(ctx: typer.Context) -> None:
    """The runc-compatible OCI runtime, same as `ociimg-runtime` (create, start, state, ...)."""
    from ociimg.runtime.cli import main as runtime_main

    raise typer.Exit(runtime_main(list(ctx.args)))


def _pull_options(insecure: bool, auth_file: Path | None = None,
                  verifier: object = None) -> object:
    """PullOptions only when they differ from the default: importing the registry client
    costs ~25 ms of every `run` of an image that is already present (resolve_image
    imports it itself when it must pull)."""
    if not insecure and auth_file is None and verifier is None:
        return None
    from ociimg.registry import PullOptions
    return PullOptions(insecure=insecure, auth_file=auth_file,
                       verifier=verifier)  # type: ignore[arg-type]
