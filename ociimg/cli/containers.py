"""Container commands: run, exec, ps, stop, rm, logs, and the runc-compatible `runtime`."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import typer

from ociimg.cli import lifecycle as lifeopts
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
from ociimg.cli.signing import POLICY, policy_verifier, precheck_source
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
    restart: str = lifeopts.RESTART,
    label: list[str] = lifeopts.LABEL,
    health_cmd: str = lifeopts.HEALTH_CMD,
    health_interval: str = lifeopts.HEALTH_INTERVAL,
    health_timeout: str = lifeopts.HEALTH_TIMEOUT,
    health_start_period: str = lifeopts.HEALTH_START_PERIOD,
    health_retries: int = lifeopts.HEALTH_RETRIES,
    no_healthcheck: bool = lifeopts.NO_HEALTHCHECK,
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
            ulimits=[parse_ulimit(u) for u in ulimit], sysctls=parse_pairs(sysctl, "--sysctl"),
            group_add=list(group_add), shm_size=parse_size(shm_size) if shm_size else None,
            privileged=privileged, **parse_security_opts(security_opt))
        options = CreateOptions(
            name=name, remove=rm, interactive=interactive, bundle=bundle, runtime=runtime_,
            network=net, volumes=mounts.volumes,
            volumes_from=[runopts.parse_volumes_from(v) for v in volumes_from],
            stop_signal=runopts.check_stop_signal(stop_signal), stop_timeout=stop_timeout,
            **lifeopts.create_options(restart, label, health_cmd, health_interval,
                                      health_timeout, health_start_period, health_retries,
                                      no_healthcheck, rm))
        manager = _manager()
        verifier = policy_verifier(policy, "run", insecure)
        precheck_source(verifier, image)  # a layout or archive: judged before it is imported
        with progress_for(quiet) as progress:
            resolved = runopts.resolve_for_run(
                image, STATE.root, policy=pull, platform=parse_platform(platform),
                pull_options=_pull_options(insecure, authfile, verifier), progress=progress)
            if verifier is not None:  # an image already in the store is checked too
                from ociimg.signing.images import policy_name
                verifier(policy_name(image, resolved.name), resolved.descriptor, None)
            c = manager.create(resolved, options, progress)
        runopts.write_cidfile(cidfile, c.id)
        if detach:
            _start_or_remove(manager, c, None)
            print(c.id)
            return
        code = _run_attached(manager, c)
    raise typer.Exit(code)


def _manager() -> Any:
    """The container manager over this root; the runtime's state root from
    OCIIMG_RUNTIME_ROOT (read here, never at import by the library)."""
    import os

    from ociimg.containers.manager import DEFAULT_RUNTIME_ROOT, ContainerManager
    return ContainerManager(STATE.root, runtime_root=Path(
        os.environ.get("OCIIMG_RUNTIME_ROOT") or DEFAULT_RUNTIME_ROOT))


def _start_or_remove(manager: Any, c: Any, stdio: tuple[int, int, int] | None) -> None:
    """Start; a container that could not be started is removed: a failed run never
    leaves a container holding its name."""
    try:
        # Attached, the CLI (one thread) forks the monitor: no interpreter start (~60 ms of
        # `run --rm`). Detached, a lean spawned monitor: it lives as long as the container
        # (~13 MB RSS against ~22 MB for a fork of the CLI).
        manager.start(c, stdio=stdio, fork=stdio is not None)
    except (OciimgError, OSError):
        if c.path.exists():
            with contextlib.suppress(OciimgError, OSError):
                manager.remove(c, force=True)
        raise


_FORWARDED = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


def _run_attached(manager: Any, c: Any) -> int:
    """Attached: the monitor copies the container's output to our fds; signals we get
    are forwarded to the container (SIGWINCH to the monitor, which resizes the pty)."""
    import os
    import signal
    import sys

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
        _start_or_remove(manager, c, (0, 1, 2))
        code = manager.wait(c)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    if code is None:  # detached with ctrl-p ctrl-q: it runs on, as docker's
        print(f"\r\ndetached from {c.name}", file=sys.stderr)
        return 0
    return code


@app.command(rich_help_panel="Containers")
def ps(
    all_: bool = typer.Option(False, "--all", "-a", help="Also show exited containers."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the ids."),
    format_: str = typer.Option(None, "--format", help="Go template: '{{.Names}} "
                                "{{.Status}}', 'table {{.ID}}\\t{{.Image}}', '{{json .}}'."),
    filter_: list[str] = typer.Option([], "--filter", "-f", help="name=, status=, label=, "
                                      "ancestor=, id=, exited=, health= (repeatable)."),
    no_trunc: bool = typer.Option(False, "--no-trunc", help="Full ids and commands."),
    size: bool = typer.Option(False, "--size", "-s", help="Show the writable layer's size."),
    json_out: bool = JSON_OUT,
) -> None:
    """List containers (running ones; -a: all)."""
    from ociimg.cli import psformat
    from ociimg.containers.manager import ACTIVE

    manager = _manager()
    filters = psformat.parse_filters(filter_)
    rows = []
    for c in reversed(manager.list()):  # newest first, as docker
        row = _ps_row(manager, c, size)
        shown = all_ or row["status"] in ACTIVE or bool(filters.get("status"))
        if shown and psformat.matches(filters, row):
            rows.append(row)
    if json_out:
        print_json([{k: v for k, v in r.items() if k not in ("statusText", "runningFor",
                                                            "sizeText")} for r in rows])
    elif quiet:
        for r in rows:
            print(r["id"] if no_trunc else r["id"][:12])
    else:
        template = format_ or ("table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t"
                               "{{.Status}}\t{{.Names}}" + ("\t{{.Size}}" if size else ""))
        _print_template(template, rows, no_trunc)


def _ps_row(manager: Any, c: Any, size: bool) -> dict[str, Any]:
    from ociimg.containers.listing import ps_row, writable_size
    row = ps_row(manager, c)
    if size:
        row["size"] = writable_size(manager, c)
        row["sizeText"] = _human_size(row["size"])
    return row


def _human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.3g}{unit}"
        n /= 1000
    return f"{n}"


def _print_template(template: str, rows: list[dict[str, Any]], no_trunc: bool) -> None:
    """A ``table`` template: a header and columns padded like docker's tabwriter."""
    from ociimg.cli import psformat
    table = template.startswith("table")
    body = template[5:].strip() if table else template
    lines = [psformat.render(body, r, no_trunc) for r in rows]
    if not table:
        for line in lines:
            print(printable(line).replace("\\t", "\t"))
        return
    grid = [psformat.header(body).split("\t")] + [printable(line).split("\\t")
                                                 for line in lines]
    widths = [max(len(r[i]) for r in grid if i < len(r)) for i in range(len(grid[0]))]
    for r in grid:
        print("   ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip())


def _all_or_named(manager: Any, names: list[str] | None, all_: bool) -> list[tuple[str, Any]]:
    """(what to print, container): the names given, or every container's name."""
    if all_:
        return [(c.name, c) for c in manager.list()]
    if not names:
        raise OciimgError("give container names or ids, or --all", hint="list them: ociimg ps -a")
    return [(key, manager.get(key)) for key in names]


@app.command(rich_help_panel="Containers")
def stop(
    names: list[str] = typer.Argument(None, help="Container names or ids."),
    time_: float = typer.Option(None, "--time", "-t", help="Seconds to wait before SIGKILL "
                                "(default: the container's --stop-timeout, else 10)."),
    all_: bool = typer.Option(False, "--all", "-a", help="Stop every running container."),
) -> None:
    """Stop containers: their StopSignal, then SIGKILL after --time seconds."""
    manager = _manager()
    for key, c in _all_or_named(manager, names, all_):
        if all_ and manager.status(c).status not in ("running", "paused", "restarting"):
            continue
        manager.stop(c, time_)
        print(key)


@app.command("rm", rich_help_panel="Containers")
def rm_(
    names: list[str] = typer.Argument(None, help="Container names or ids."),
    force: bool = typer.Option(False, "--force", "-f", help="Kill running containers first."),
    all_: bool = typer.Option(False, "--all", "-a", help="Remove every container."),
    volumes: bool = typer.Option(False, "--volumes", "-v", help="Also remove its anonymous "
                                 "volumes."),
) -> None:
    """Remove containers (their rootfs, logs and state)."""
    manager = _manager()
    for key, c in _all_or_named(manager, names, all_):
        manager.remove(c, force, volumes=volumes)
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
    tail: str = typer.Option("all", "--tail", "-n", help="Only the last N lines (or all)."),
    since: str = typer.Option(None, "--since", help="Only output since a time "
                              "(2026-12-07T05:00:00Z, or a duration ago: 10s, 5m, 1h)."),
    until: str = typer.Option(None, "--until", help="Only output before a time or duration."),
    timestamps: bool = typer.Option(False, "--timestamps", "-t", help="Show each line's time."),
) -> None:
    """Print a container's output: its stdout to ours, its stderr to our stderr."""
    import sys

    from ociimg.cli.lifecycle import parse_since, parse_tail
    manager = _manager()
    c = manager.get(name)
    outs = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}
    line_start = {"stdout": True, "stderr": True}
    for rec in manager.log_records(c, follow=follow, tail=parse_tail(tail),
                            since=parse_since(since), until=parse_since(until)):
        out = outs[rec.stream]
        if timestamps and line_start[rec.stream]:
            out.write(rec.stamp.encode() + b" ")
        out.write(rec.data)
        line_start[rec.stream] = rec.data.endswith(b"\n")
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
