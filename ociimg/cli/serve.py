"""``ociimg serve``: the Docker Engine API for docker's own tools (api/server.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from ociimg.cli.app import STATE, app


@app.command(rich_help_panel="Other")
def serve(
    host: list[str] = typer.Option(
        None, "--host", "-H", help="Where to listen: unix:///PATH (default "
        "unix:///run/ociimg/docker.sock) or tcp://IP:PORT; repeatable."),
    tcp: str = typer.Option(None, "--tcp", help="Also listen on IP:PORT (loopback only "
                            "unless --tls-cert/--tls-key/--tls-ca are given)."),
    group: str = typer.Option(None, "--group", "-G", help="Group that may use the unix "
                              "socket (mode 0660; default root)."),
    tls_cert: Path = typer.Option(None, "--tls-cert", help="Server certificate for TCP."),
    tls_key: Path = typer.Option(None, "--tls-key", help="Its private key."),
    tls_ca: Path = typer.Option(None, "--tls-ca", help="CA that signs client certificates "
                                "(clients must present one)."),
) -> None:
    """Serve the Docker Engine API (1.43; docker CLI, docker-py, compose) until stopped.

    Point a client at it with DOCKER_HOST=unix:///run/ociimg/docker.sock. Containers keep
    running when the server stops; a restarted server sees them again.
    """
    from ociimg.api.server import DEFAULT_SOCKET, ServeOptions
    from ociimg.api.server import serve as run_server

    hosts = list(host or [f"unix://{DEFAULT_SOCKET}"])
    if tcp:
        hosts.append(f"tcp://{tcp}")
    run_server(STATE.root, ServeOptions(hosts=hosts, group=group, tls_cert=tls_cert,
                                        tls_key=tls_key, tls_ca=tls_ca, debug=STATE.debug))
