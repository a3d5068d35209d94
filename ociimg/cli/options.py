"""Parsing of command-line values shared by several commands."""

from __future__ import annotations

import typer

from ociimg.containers.options import (  # noqa: F401  (re-exported)
    INIT_CANDIDATES,
    find_init,
    parse_security_opts,
    parse_size,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from ociimg.registry.client import ClientOptions
    from ociimg.spec import Platform

PLATFORM_HELP = "OS/ARCH[/VARIANT] to select from a multi-platform image (default: this host)."
INSECURE_HELP = "Allow plain HTTP and unverified TLS for this registry."

# Options several commands share (typer reads these defaults as metadata, so one object
# can serve every command).
PLATFORM = typer.Option(None, "--platform", help=PLATFORM_HELP)
INSECURE = typer.Option(False, "--insecure", help=INSECURE_HELP)
CA_BUNDLE = typer.Option(None, "--ca-bundle", help="PEM file of CAs to trust.")
AUTH_FILE = typer.Option(None, "--authfile", help="Credentials file (docker format).")
RETRIES = typer.Option(5, "--retry-times", min=0, max=20,
                       help="Retries of a request after a network error, 5xx or 429.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress output.")
JSON_OUT = typer.Option(False, "--json", help="Print as JSON.")
WORKDIR = typer.Option(None, "--workdir", "-w", help="Working directory.")
USER = typer.Option(None, "--user", "-u", help="USER[:GROUP], names or ids.")
HOSTNAME = typer.Option(None, "--hostname", help="Container hostname.")
ENV = typer.Option([], "--env", "-e", help="Set KEY=VALUE in the environment.")


def client_options(insecure: bool, ca_bundle: Path | None, auth_file: Path | None,
                   image: str = "docker://") -> ClientOptions | None:
    """Options for reading a registry; None for a local image (importing the registry
    client costs ~100 ms of start-up that a store image never needs)."""
    if not image.startswith("docker://"):
        return None
    from ociimg.registry.client import ClientOptions

    return ClientOptions(insecure=insecure, ca_bundle=ca_bundle, auth_file=auth_file)


def parse_platform(text: str | None) -> Platform | None:
    from ociimg.spec import Platform  # here: `ociimg ps` and `--help` need no image spec

    return Platform.parse(text) if text else None


def parse_pairs(items: list[str], flag: str = "--annotation") -> dict[str, str]:
    """``KEY=VALUE`` values of ``flag`` (annotations, labels, sysctls), the last wins."""
    from ociimg.errors import InvalidArgument
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise InvalidArgument(f"invalid {flag} {item!r}", hint="use KEY=VALUE")
        out[key] = value
    return out

