"""Container filesystem commands: diff, commit, export, cp."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from ociimg.cli.app import STATE, app
from ociimg.cli.options import JSON_OUT
from ociimg.cli.output import print_json, printable
from ociimg.errors import InvalidArgument


@app.command(rich_help_panel="Containers")
def diff(
    name: str = typer.Argument(..., help="Container name or id, or the first of two images."),
    other: str = typer.Argument(None, help="A second image: compare IMAGE1 with it."),
    json_out: bool = JSON_OUT,
) -> None:
    """Show what changed in a container's filesystem, or between two images (by content
    digest): A added, C changed, D deleted."""
    if other is not None:
        from ociimg.cli.inspection import diff_images

        diff_images(name, other, json_out)
        return
    from ociimg.commands.changes import container_changes

    changes = container_changes(STATE.root, name)
    if json_out:
        print_json([{"kind": kind, "path": path} for kind, path in changes])
        return
    for kind, path in changes:
        print(f"{kind} {printable(path)}")


@app.command(rich_help_panel="Containers")
def commit(
    name: str = typer.Argument(..., help="Container name or id."),
    image: str = typer.Argument(None, help="NAME[:TAG] for the new image "
                                "(default: localhost/CONTAINER:latest)."),
    message: str = typer.Option("", "--message", "-m", help="Commit message (history)."),
    author: str = typer.Option("", "--author", "-a", help="Author, e.g. 'Name <mail>'."),
    change: list[str] = typer.Option([], "--change", "-c", help="Apply a Dockerfile "
                                     "instruction: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, "
                                     "USER, VOLUME, WORKDIR, STOPSIGNAL."),
    pause: bool = typer.Option(True, "--pause/--no-pause", "-p",
                               help="Pause a running container while committing."),
    compression: str = typer.Option("gzip", "--compression",
                                     help="Layer compression: gzip, zstd or none."),
    json_out: bool = JSON_OUT,
) -> None:
    """Create an image from a container's changes (like `docker commit`)."""
    from ociimg.commands.changes import CommitOptions, commit_container

    result = commit_container(STATE.root, name, CommitOptions(
        name=image, message=message, author=author, changes=tuple(change), pause=pause,
        compression=compression, source_date_epoch=source_date_epoch()))
    if json_out:
        print_json(result.as_dict())
        return
    print(f"{printable(result.name)} {result.descriptor.digest}")


@app.command(rich_help_panel="Containers")
def export(
    name: str = typer.Argument(..., help="Container name or id."),
    output: str = typer.Option(None, "--output", "-o",
                               help="Tar file to write ('-': stdout)."),
) -> None:
    """Write a container's whole filesystem as a tar (like `docker export`)."""
    from ociimg.commands.copying import export_container, export_to_file

    if output is None or output == "-":
        if output is None and sys.stdout.isatty():
            raise InvalidArgument("export: refusing to write a tar to a terminal",
                                  hint="use -o FILE, or redirect stdout")
        sys.stdout.flush()
        export_container(STATE.root, name, sys.stdout.buffer)  # type: ignore[arg-type]
        sys.stdout.buffer.flush()
        return
    export_to_file(STATE.root, name, Path(output))


@app.command(rich_help_panel="Containers")
def cp(
    src: str = typer.Argument(..., help="CONTAINER:SRC_PATH or host path ('-': a tar on "
                              "stdin)."),
    dest: str = typer.Argument(..., help="Host path ('-': a tar on stdout) or "
                               "CONTAINER:DEST_PATH."),
    archive: bool = typer.Option(False, "--archive", "-a",
                                 help="Keep owners (uid/gid) and xattrs."),
    follow: bool = typer.Option(False, "--follow-link", "-L",
                                help="Follow a symlink named as SRC_PATH."),
) -> None:
    """Copy files between a container and the host (like `docker cp`)."""
    from ociimg.commands.copying import CopyOptions, copy_from_container, copy_to_container

    src_ctr, src_path = split_container_path(src)
    dest_ctr, dest_path = split_container_path(dest)
    options = CopyOptions(archive=archive, follow=follow)
    if (src_ctr is None) == (dest_ctr is None):
        raise InvalidArgument("cp: name a container on exactly one side",
                              hint="ociimg cp CONTAINER:SRC HOSTPATH, or "
                                   "ociimg cp HOSTPATH CONTAINER:DEST")
    if src_ctr is not None:
        if dest == "-" and sys.stdout.isatty():
            raise InvalidArgument("cp: refusing to write a tar to a terminal",
                                  hint="redirect stdout, or name a host path")
        target = sys.stdout.buffer if dest == "-" else dest
        copy_from_container(STATE.root, src_ctr, src_path, target, options)  # type: ignore[arg-type]
        if options.skipped:
            print(f"ociimg: warning: not copied to the host (device nodes, sockets): "
                  f"{printable(', '.join(options.skipped[:10]))}", file=sys.stderr)
        return
    assert dest_ctr is not None
    source = sys.stdin.buffer if src == "-" else src
    copy_to_container(STATE.root, dest_ctr, source, dest_path, options)  # type: ignore[arg-type]


def source_date_epoch() -> int | None:
    """$SOURCE_DATE_EPOCH (reproducible-builds.org), when set."""
    text = os.environ.get("SOURCE_DATE_EPOCH")
    if not text:
        return None
    if not text.isdigit() or int(text) > 253402300799:  # 9999-12-31
        raise InvalidArgument(f"SOURCE_DATE_EPOCH={printable(text[:40])}: not a Unix time",
                              hint="seconds since 1970-01-01 UTC, e.g. $(git log -1 --format=%ct)")
    return int(text)


def split_container_path(text: str) -> tuple[str | None, str]:
    """``CONTAINER:PATH`` → (container, path); a host path (``/x``, ``./a:b``, ``-``) →
    (None, text), as docker cp decides: a colon before any slash names a container."""
    if text.startswith(("/", ".")) or ":" not in text:
        return None, text
    name, _, path = text.partition(":")
    if "/" in name:
        return None, text
    if not name:
        raise InvalidArgument(f"cp: {printable(text)}: empty container name")
    return name, path or "/"
