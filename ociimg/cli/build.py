"""``ociimg build``: a Containerfile → an image in the store."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from ociimg.cli.app import STATE, app
from ociimg.cli.output import printable, progress_for
from ociimg.cli.signing import POLICY, policy_verifier
from ociimg.errors import InvalidArgument


class StepLog:
    """Build progress for people, over ``progress_for``'s (bars for base-image pulls on a
    terminal, plain lines otherwise): each step's line, then its output; "cached" for a
    step the cache had. Quiet: nothing."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def start(self, key: str, description: str, total: int | None) -> None:
        if key.startswith("step-"):
            self.inner.log(description)
        else:
            self.inner.start(key, description, total)

    def advance(self, key: str, amount: int) -> None:
        self.inner.advance(key, amount)

    def done(self, key: str, message: str | None = None) -> None:
        if not key.startswith("step-"):
            self.inner.done(key, message)
        elif message:
            self.inner.log(f"--> {message}")

    def log(self, message: str) -> None:
        self.inner.log(message)


class JsonEvents:
    """``--json``: one JSON object per line on stdout (step, output, cached, then the
    result), for CI."""

    def _emit(self, doc: dict) -> None:
        sys.stdout.write(json.dumps(doc) + "\n")
        sys.stdout.flush()

    def start(self, key: str, description: str, total: int | None) -> None:
        self._emit({"event": "step", "step": key, "text": description})

    def advance(self, key: str, amount: int) -> None:
        pass

    def done(self, key: str, message: str | None = None) -> None:
        if key.startswith("step-"):
            self._emit({"event": message or "done", "step": key})

    def log(self, message: str) -> None:
        self._emit({"event": "output", "text": message})


def _pairs(items: list[str], what: str) -> dict[str, str]:
    import os
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise InvalidArgument(f"{what} {item!r}: expected KEY=VALUE")
        if not sep:  # docker: --build-arg NAME takes the value from the environment
            if key not in os.environ:
                continue
            value = os.environ[key]
        out[key] = value
    return out


def _secrets(items: list[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        fields = dict(part.partition("=")[::2] for part in item.split(","))
        ident, src = fields.get("id"), fields.get("src") or fields.get("source")
        if not ident or not src:
            raise InvalidArgument(f"--secret {item!r}: expected id=ID,src=PATH")
        if not Path(src).is_file():
            raise InvalidArgument(f"--secret {item!r}: {src} is not a file")
        out[ident] = Path(src)
    return out


@app.command(rich_help_panel="Images")
def build(
    context: str = typer.Argument(..., help="The build context: a directory, or - for a "
                                  "tar on stdin."),
    tag: list[str] = typer.Option([], "--tag", "-t", help="NAME[:TAG] for the image "
                                  "(repeatable)."),
    file: str = typer.Option(None, "--file", "-f", help="The Containerfile (- for stdin; "
                             "default: Containerfile, else Dockerfile in the context)."),
    build_arg: list[str] = typer.Option([], "--build-arg", help="KEY=VALUE for an ARG."),
    target: str = typer.Option(None, "--target", help="Build up to this stage."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Run every step again."),
    pull: bool = typer.Option(False, "--pull", help="Pull base images even if stored."),
    platform: str = typer.Option(None, "--platform", help="OS/ARCH of the image."),
    network: str = typer.Option("private", "--network",
                                help="RUN's network: private (none), none or host."),
    secret: list[str] = typer.Option([], "--secret", help="id=ID,src=PATH for "
                                     "RUN --mount=type=secret."),
    squash: bool = typer.Option(False, "--squash/--layers", help="One layer for the "
                                "final stage's steps (default: one per step)."),
    compression: str = typer.Option("gzip", "--compression", help="gzip, zstd or none."),
    timestamp: int = typer.Option(None, "--timestamp", help="Seconds since the epoch for "
                                  "every time in the image (default: $SOURCE_DATE_EPOCH)."),
    iidfile: str = typer.Option(None, "--iidfile", help="Write the image ID here."),
    label: list[str] = typer.Option([], "--label", help="KEY=VALUE added to the image."),
    output: str = typer.Option(None, "--output", "-o", help="Also write "
                               "type=oci-archive,dest=FILE."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the image ID."),
    json_out: bool = typer.Option(False, "--json", help="JSON events, one per line."),
    policy: Path = POLICY,
) -> None:
    """Build an image from a Containerfile (like `docker build` / `buildah bud`)."""
    from ociimg.build.builder import BuildOptions
    from ociimg.cli.changes import source_date_epoch
    from ociimg.commands.building import BuildRequest, build_image, parse_output
    from ociimg.spec import Platform

    if output:
        parse_output(output)
    options = BuildOptions(
        tags=list(tag), build_args=_pairs(build_arg, "--build-arg"), target=target,
        no_cache=no_cache, pull=pull, platform=Platform.parse(platform) if platform else None,
        network=network, secrets=_secrets(secret), squash=squash, compression=compression,
        timestamp=timestamp if timestamp is not None else source_date_epoch(),
        labels=_pairs(label, "--label"))
    stdin = sys.stdin.buffer if "-" in (context, file) else None
    with progress_for(quiet=quiet, json_mode=json_out) as inner:
        progress = JsonEvents() if json_out else StepLog(inner)
        request = BuildRequest(context, file, output, policy_verifier(policy, "build"))
        result = build_image(STATE.root, request, options,
                             stdin=stdin, progress=progress)  # type: ignore[arg-type]
    if iidfile:
        Path(iidfile).write_text(str(result.image_id))
    if json_out:
        sys.stdout.write(json.dumps({"event": "result", **result.as_dict()}) + "\n")
        return
    if not quiet:
        for t in result.tags:
            sys.stderr.write(f"Successfully tagged {printable(t)}\n")
    print(str(result.image_id))
