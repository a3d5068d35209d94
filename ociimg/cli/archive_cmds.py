"""Archive and naming commands: save, load, tag (docker's and podman's verbs)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from ociimg.cli.app import STATE, app
from ociimg.cli.options import PLATFORM, QUIET, parse_platform
from ociimg.cli.output import printable
from ociimg.errors import InvalidArgument


@app.command(rich_help_panel="Images")
def save(
    images: list[str] = typer.Argument(..., help="Images to save: store names or any "
                                       "transport (oci:DIR:TAG, docker-archive:FILE, …)."),
    output: Path = typer.Option(None, "--output", "-o", help="Write to this file "
                                "(default: stdout, if it is not a terminal)."),
    fmt: str = typer.Option("docker-archive", "--format", help="docker-archive (what "
                            "docker load and podman load read) or oci-archive."),
    platform: str = PLATFORM,
) -> None:
    """Write images to a tar archive, as `docker save` does."""
    from ociimg.transports import parse_transport, reference_names, save_images

    if output is None and sys.stdout.isatty():
        raise InvalidArgument("save: refusing to write an archive to a terminal",
                              hint="use -o FILE or redirect stdout")
    sources = []
    try:
        for text in images:
            sources.append(parse_transport(text, STATE.root))
        items = [(s.blobs, s.top, tuple(reference_names([s.name]))) for s in sources]
        if output is None:
            sys.stdout.flush()
            with os.fdopen(os.dup(sys.stdout.fileno()), "wb") as out:
                save_images(None, items, fmt, parse_platform(platform), out=out)
        else:
            save_images(output, items, fmt, parse_platform(platform))
    finally:
        for s in sources:
            s.close()


@app.command(rich_help_panel="Images")
def load(
    input_: Path = typer.Option(None, "--input", "-i", help="Archive to read (default: "
                                "stdin): a docker-archive or an oci-archive."),
    quiet: bool = QUIET,
) -> None:
    """Load the images of a `docker save` or OCI archive into the store."""
    import tempfile

    from ociimg.store import Store
    from ociimg.transports import load_archive

    store = Store.open(STATE.root)
    if input_ is None:
        if sys.stdin.isatty():
            raise InvalidArgument("load: no archive on stdin", hint="use -i FILE")
        # The archive is read in place, by offset: a pipe is spooled first, in the store's
        # own ingest dir (its filesystem, not a small /tmp).
        with tempfile.NamedTemporaryFile(dir=store.ingest_dir, prefix=".load-") as spool:
            with os.fdopen(os.dup(sys.stdin.fileno()), "rb") as stdin:
                while chunk := stdin.read(1 << 20):
                    spool.write(chunk)
            spool.flush()
            loaded = load_archive(Path(spool.name), store)
    else:
        loaded = load_archive(input_, store)
    if not quiet:
        for name, _desc in loaded:
            label = "Loaded image ID" if name.startswith("sha256:") else "Loaded image"
            print(f"{label}: {printable(name)}")


@app.command(rich_help_panel="Images")
def tag(
    source: str = typer.Argument(..., help="Image in the store (name or digest)."),
    target: str = typer.Argument(..., help="New name, e.g. example.com/app:1.0."),
) -> None:
    """Give a stored image another name."""
    from ociimg.commands.resolve import store_name
    from ociimg.reference import parse_reference
    from ociimg.store import Store

    store = Store.open(STATE.root)
    desc = store.resolve(store_name(store, source))
    ref = parse_reference(target)
    if ref.digest is not None:
        raise InvalidArgument(f"tag: {target[:100]!r}: a tag cannot hold a digest",
                              hint="use NAME[:TAG]")
    store.tag(str(ref), desc)
