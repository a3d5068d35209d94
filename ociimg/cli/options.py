"""Parsing of command-line values shared by several commands."""

from __future__ import annotations

import os
import re

import typer

from ociimg.errors import OciimgError

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


_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)([bkmg]?)b?$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """``512m``, ``1g``, ``65536`` → bytes (docker's --memory units)."""
    m = _SIZE_RE.match(text.strip())
    if not m:
        raise OciimgError(f"invalid size {text!r}", hint="use a number with b, k, m or g")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


INIT_CANDIDATES = ("/usr/bin/catatonit", "/usr/libexec/podman/catatonit", "/usr/bin/tini-static",
                   "/usr/bin/tini")


def find_init() -> str:
    for path in INIT_CANDIDATES:
        if os.path.isfile(path):
            return path
    raise OciimgError("--init: no static init binary found",
                      hint="apt-get install catatonit, or give one with --init-path")


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


def parse_security_opts(items: list[str]) -> dict[str, bool]:
    """The podman/docker --security-opt values ociimg understands."""
    known = {"seccomp=unconfined": ("seccomp", False),
             "no-new-privileges": ("no_new_privileges", True),
             "no-new-privileges=true": ("no_new_privileges", True),
             "no-new-privileges=false": ("no_new_privileges", False)}
    out = {}
    for item in items:
        if item not in known:
            raise OciimgError(f"unsupported --security-opt {item!r}",
                              hint="supported: " + ", ".join(known))
        key, value = known[item]
        out[key] = value
    return out
