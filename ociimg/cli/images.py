"""Image commands: pull, push, copy, images, inspect, rmi, gc, fsck, login, logout."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from ociimg.cli.app import STATE, app
from ociimg.cli.options import (
    AUTH_FILE,
    CA_BUNDLE,
    INSECURE,
    JSON_OUT,
    PLATFORM,
    QUIET,
    RETRIES,
    parse_platform,
    parse_size,
)
from ociimg.cli.output import print_json, printable, progress_for
from ociimg.cli.signing import POLICY, policy_verifier, precheck_source
from ociimg.errors import InvalidReference
from ociimg.reference import LAYOUT_KINDS, parse_image_name, parse_registry_name
from ociimg.store import Store

LOCAL_PREFIXES = tuple(f"{kind}:" for kind in LAYOUT_KINDS)


def store_name(store: Store, text: str) -> str:
    """ociimg.commands.resolve.store_name, imported on use: that module brings in the
    bundle and layer stages, which a pull never needs (~20 ms of its start-up)."""
    from ociimg.commands.resolve import store_name as resolve_store_name

    return resolve_store_name(store, text)


def open_store() -> Store:
    return Store.open(STATE.root)


@app.command(rich_help_panel="Images")
def pull(
    image: str = typer.Argument(..., help="Image reference, e.g. busybox, "
                                "127.0.0.1:5000/app:1.0 or repo@sha256:…"),
    platform: str = PLATFORM,
    all_platforms: bool = typer.Option(False, "--all-platforms",
                                       help="Pull every platform of a multi-platform image."),
    insecure: bool = INSECURE,
    ca_bundle: Path = CA_BUNDLE,
    auth_file: Path = AUTH_FILE,
    jobs: int = typer.Option(4, "--jobs", "-j", min=1, max=32, help="Parallel blob downloads."),
    retries: int = RETRIES,
    policy: Path = POLICY,
    quiet: bool = QUIET,
    json_out: bool = JSON_OUT,
) -> None:
    """Download an image into the local store (resumable; verified)."""
    from ociimg.registry import PullOptions
    from ociimg.registry import pull as do_pull

    if image.startswith(LOCAL_PREFIXES):  # podman pulls from archives too: a load of one
        from ociimg.transports import import_image

        name = import_image(parse_image_name(image), open_store(),  # type: ignore[arg-type]
                            parse_platform(platform), all_platforms=all_platforms)
        if not quiet:
            print(name)
        return
    ref = parse_registry_name(image)
    verifier = policy_verifier(policy, "pull", insecure, ca_bundle, auth_file, ref)
    options = PullOptions(platform=parse_platform(platform), all_platforms=all_platforms,
                          insecure=insecure, ca_bundle=ca_bundle, auth_file=auth_file,
                          concurrency=jobs, retries=retries, verifier=verifier)
    store = open_store()
    with progress_for(quiet, json_out) as progress:
        result = do_pull(ref, store, options, progress)
    if json_out:
        print_json({
            "reference": str(result.reference),
            "digest": str(result.descriptor.digest),
            "mediaType": result.descriptor.media_type,
            "manifests": [{"digest": str(d.digest), "platform": str(d.platform) if d.platform
                           else None} for d, _ in result.images],
        })
    elif not quiet:
        print(f"{result.reference}\n  digest: {result.descriptor.digest}")


@app.command(rich_help_panel="Images")
def push(
    source: str = typer.Argument(..., help="Image name in the local store, or "
                                 "oci:/oci-archive:/docker-archive:/dir: transports."),
    destination: str = typer.Argument(None, help="Registry reference to push to "
                                      "(default: the source name)."),
    insecure: bool = INSECURE,
    ca_bundle: Path = CA_BUNDLE,
    auth_file: Path = AUTH_FILE,
    jobs: int = typer.Option(4, "--jobs", "-j", min=1, max=32, help="Parallel blob uploads."),
    retries: int = RETRIES,
    platform: str = typer.Option(None, "--platform", help="Push only this platform's "
                                 "image of a multi-platform index."),
    chunk_size: str = typer.Option(None, "--chunk-size", help="Upload blobs in chunks of "
                                   "this size (e.g. 16m) instead of one request."),
    mount_from: list[str] = typer.Option([], "--mount-from", help="Repository on the same "
                                         "registry to mount existing blobs from."),
    quiet: bool = QUIET,
    json_out: bool = JSON_OUT,
) -> None:
    """Upload an image from the local store to a registry (digest preserved)."""
    from ociimg.registry import PushOptions
    from ociimg.registry import push as do_push

    if source.startswith(LOCAL_PREFIXES):
        _push_local(source, destination, insecure, ca_bundle, auth_file, jobs, retries,
                    parse_platform(platform), quiet, json_out)
        return
    store = open_store()
    name = store_name(store, source)
    dest = parse_registry_name(destination or name)
    options = PushOptions(insecure=insecure, ca_bundle=ca_bundle, auth_file=auth_file,
                          concurrency=jobs, retries=retries, platform=parse_platform(platform),
                          chunk_size=parse_size(chunk_size) if chunk_size else None,
                          mount_from=tuple(mount_from))
    with progress_for(quiet, json_out) as progress:
        digest = do_push(store, name, dest, options, progress)
    if json_out:
        print_json({"reference": str(dest), "digest": str(digest)})
    elif not quiet:
        print(f"{dest}\n  digest: {digest}")


def _push_local(source: str, destination: str | None, insecure: bool, ca_bundle: Path,
                auth_file: Path, jobs: int, retries: int, platform: Any, quiet: bool,
                json_out: bool) -> None:
    """push from an archive, layout or dir: image: a copy to the registry."""
    from ociimg.registry import CopyOptions
    from ociimg.transports import copy_image

    if not destination:
        raise InvalidReference(f"push {source}: give the registry reference to push to")
    dest = parse_registry_name(destination)
    options = CopyOptions(platform=platform, all_platforms=platform is None,
                          dest_insecure=insecure, ca_bundle=ca_bundle, auth_file=auth_file,
                          concurrency=jobs, retries=retries)
    with progress_for(quiet, json_out) as progress:
        digest = copy_image(source, f"docker://{dest}", options, progress)
    if json_out:
        print_json({"reference": str(dest), "digest": str(digest)})
    elif not quiet:
        print(f"{dest}\n  digest: {digest}")


@app.command(rich_help_panel="Images")
def copy(
    source: str = typer.Argument(..., help="docker://REF, a store name, oci:PATH[:TAG], "
                                 "oci-archive:FILE[:TAG], docker-archive:FILE[:TAG] or "
                                 "dir:PATH."),
    destination: str = typer.Argument(..., help="Same forms as SOURCE."),
    platform: str = PLATFORM,
    all_platforms: bool = typer.Option(True, "--all-platforms/--single-platform",
                                       help="Copy every platform (default) so the digest "
                                       "stays the same, or only one."),
    insecure: bool = INSECURE,
    ca_bundle: Path = CA_BUNDLE,
    auth_file: Path = AUTH_FILE,
    jobs: int = typer.Option(4, "--jobs", "-j", min=1, max=32, help="Parallel blob transfers."),
    retries: int = RETRIES,
    policy: Path = POLICY,
    with_signatures: bool = typer.Option(False, "--with-signatures", help="Also copy the "
                                         "image's cosign .sig, .att and .sbom tags "
                                         "(registry to registry, as `cosign copy`)."),
    quiet: bool = QUIET,
    json_out: bool = JSON_OUT,
) -> None:
    """Copy an image between registries and OCI layouts, keeping its digest."""
    from ociimg.registry import CopyOptions
    from ociimg.transports import copy_image

    options = CopyOptions(platform=parse_platform(platform), all_platforms=all_platforms,
                          src_insecure=insecure, dest_insecure=insecure, ca_bundle=ca_bundle,
                          auth_file=auth_file, concurrency=jobs, retries=retries,
                          verifier=policy_verifier(policy, "copy", insecure, ca_bundle, auth_file))
    precheck_source(options.verifier, source)
    if with_signatures:  # refused before anything is copied when either end has no tags
        from ociimg.commands.cosigncopy import registry_ref
        registry_ref(source), registry_ref(destination)
    attached: list[str] = []
    with progress_for(quiet, json_out) as progress:
        digest = copy_image(source, destination, options, progress)
        if with_signatures:
            from ociimg.commands.cosigncopy import copy_cosign_tags
            attached = copy_cosign_tags(source, destination, digest, options, progress)
    if json_out:
        print_json({"source": source, "destination": destination, "digest": str(digest),
                    "attachments": attached})
    elif not quiet:
        print(f"{destination}\n  digest: {digest}")
        for tag in attached:
            print(f"  attached: {tag}")


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


@app.command(rich_help_panel="Images")
def inspect(
    image: str = typer.Argument(..., help="Image: a store name, oci:PATH[:TAG] or "
                                "docker://REF (read from the registry, no layers fetched)."),
    platform: str = PLATFORM,
    format_: str = typer.Option(None, "--format", "-f", help="Print one field with a Go "
                                "template, e.g. '{{.Digest}}' or '{{json .Config.Env}}'."),
    insecure: bool = INSECURE,
    ca_bundle: Path = CA_BUNDLE,
    auth_file: Path = AUTH_FILE,
    json_out: bool = JSON_OUT,
) -> None:
    """Show an image's manifest, config, layers, history and attached artifacts."""
    from ociimg.cli.inspection import print_inspect, print_template
    from ociimg.cli.options import client_options
    from ociimg.commands.inspect import inspect_image

    doc = inspect_image(image, STATE.root, parse_platform(platform),
                        client_options(insecure, ca_bundle, auth_file, image))
    if format_ is not None:
        print_template(format_, doc)
    elif json_out:
        print_json(doc)
    else:
        print_inspect(doc)


@app.command(rich_help_panel="Images")
def rmi(
    names: list[str] = typer.Argument(..., help="Image names to remove from the store."),
    prune: bool = typer.Option(True, "--prune/--no-prune",
                               help="Also delete blobs no other image uses (runs gc)."),
) -> None:
    """Remove images (their names) from the store; unused blobs go with --prune."""
    from ociimg.errors import ImageNotFound
    store = open_store()
    for text in names:
        try:
            name = store_name(store, text)
            store.untag(name)
        except ImageNotFound as exc:  # the store's hint says "pull it first": not for rmi
            raise ImageNotFound(exc.message, hint="nothing to remove; list the images with "
                                "`ociimg images`") from exc
        print(f"Untagged: {printable(name)}")
    if prune:
        gc(json_out=False)


@app.command(rich_help_panel="Images")
def gc(json_out: bool = JSON_OUT) -> None:
    """Remove blobs and snapshots no image references; report the space freed."""
    from ociimg.commands.maintenance import collect_garbage
    from ociimg.containers.store import containers_locked, list_containers

    with containers_locked(STATE.root):
        report = collect_garbage(STATE.root, [c.meta for c in list_containers(STATE.root)])
    for warning in report.warnings:
        print(f"warning: {printable(warning)}", file=sys.stderr)
    if json_out:
        print_json({"removedBlobs": report.removed_blobs, "bytesFreed": report.bytes_freed,
                    "removedSnapshots": report.removed_snapshots,
                    "snapshotBytesFreed": report.snapshot_bytes_freed,
                    "warnings": list(report.warnings)})
        return
    print(f"Deleted {report.removed_blobs} blobs, freed {human_size(report.bytes_freed)}")
    print(f"Deleted {report.removed_snapshots} snapshots, "
          f"freed {human_size(report.snapshot_bytes_freed)}")


@app.command(rich_help_panel="Images")
def fsck(
    remove: bool = typer.Option(False, "--remove", help="Delete corrupt blobs."),
    json_out: bool = JSON_OUT,
) -> None:
    """Re-hash every blob in the store; report (and optionally remove) corrupt ones."""
    problems = open_store().fsck(remove=remove)
    if json_out:
        print_json([{"digest": str(p.digest), "problem": p.message} for p in problems])
    else:
        for p in problems:
            print(f"{p.digest}: {printable(p.message)}")
        print("store is clean" if not problems else f"{len(problems)} problem(s) found")
    if problems:
        raise typer.Exit(1)


@app.command(rich_help_panel="Images")
def login(
    registry: str = typer.Argument(..., help="Registry host, e.g. 127.0.0.1:5000."),
    username: str = typer.Option(..., "--username", "-u", prompt=True),
    password: str = typer.Option(None, "--password", "-p", help="Prefer --password-stdin."),
    password_stdin: bool = typer.Option(False, "--password-stdin",
                                        help="Read the password from stdin."),
    insecure: bool = INSECURE,
    ca_bundle: Path = CA_BUNDLE,
    auth_file: Path = typer.Option(None, "--authfile", help="Credentials file to write."),
) -> None:
    """Check credentials against a registry and save them (docker config format)."""
    from ociimg.registry import login as do_login

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif password is None:
        password = typer.prompt("Password", hide_input=True)
    from ociimg.registry.registries import is_insecure
    from ociimg.registry.transport import TransportOptions

    options = TransportOptions(insecure=insecure or is_insecure(registry), ca_bundle=ca_bundle)
    path = do_login(registry, username, password, auth_file, options=options)
    print(f"Login succeeded (credentials saved to {path})", file=sys.stderr)


@app.command(rich_help_panel="Images")
def logout(
    registry: str = typer.Argument(..., help="Registry host."),
    auth_file: Path = typer.Option(None, "--authfile", help="Credentials file."),
) -> None:
    """Forget the saved credentials for a registry."""
    from ociimg.registry import logout as do_logout

    if do_logout(registry, auth_file=auth_file):
        print(f"Removed login credentials for {registry}", file=sys.stderr)
    else:
        print(f"Not logged in to {registry}", file=sys.stderr)
