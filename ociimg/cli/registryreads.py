"""Registry reads without pulling (manifest, digest, list-tags, delete, sync) and the
artifacts attached to an image (referrers)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from ociimg.cli.app import STATE, app
from ociimg.cli.inspection import IMAGE_HELP, open_image
from ociimg.cli.options import AUTH_FILE, CA_BUNDLE, INSECURE, JSON_OUT, PLATFORM, client_options
from ociimg.cli.output import print_json, printable


# Registry reads -------------------------------------------------------------------
def _document(ref_text: str, insecure: bool, ca_bundle: Path | None,
              auth_file: Path | None) -> tuple[bytes, str]:
    """The top-level manifest or index of ``ref_text`` as stored, and its digest."""
    from ociimg.commands.imagesource import RemoteImage, is_remote
    from ociimg.reference import Reference, parse_image_name

    if is_remote(ref_text):
        ref = parse_image_name(ref_text)
        assert isinstance(ref, Reference)
        remote = RemoteImage(ref, client_options(insecure, ca_bundle, auth_file))
        try:
            raw, desc, _doc = remote.get_document(ref.manifest_reference)
        finally:
            remote.close()
        return raw, str(desc.digest)
    from ociimg.transports import parse_transport

    with parse_transport(ref_text, STATE.root) as source:
        return source.raw_manifest(), str(source.top.digest)


@app.command(rich_help_panel="Inspection")
def manifest(
    image: str = typer.Argument(..., help=IMAGE_HELP),
    raw: bool = typer.Option(False, "--raw", help="The exact bytes (what the digest is of)."),
    insecure: bool = INSECURE,
    ca_bundle: Path = CA_BUNDLE,
    auth_file: Path = AUTH_FILE,
) -> None:
    """Print an image's manifest or index (from a registry: without pulling)."""
    body, _digest = _document(image, insecure, ca_bundle, auth_file)
    if raw:
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
        return
    print_json(json.loads(body))


@app.command(rich_help_panel="Inspection")
def digest(
    image: str = typer.Argument(..., help=IMAGE_HELP),
    insecure: bool = INSECURE,
    ca_bundle: Path = CA_BUNDLE,
    auth_file: Path = AUTH_FILE,
) -> None:
    """Print the digest of an image's manifest or index (what REPO@DIGEST pins)."""
    from ociimg.commands.imagesource import is_remote

    if is_remote(image):
        from ociimg.reference import parse_reference
        from ociimg.registry.sync import SyncOptions, current_digest

        options = SyncOptions(insecure=insecure, ca_bundle=ca_bundle, auth_file=auth_file)
        try:
            found = current_digest(parse_reference(image), options)
        finally:
            options.close()
        if found is None:
            from ociimg.errors import ManifestUnknown

            raise ManifestUnknown(f"manifest {image.removeprefix('docker://')}: not found")
        print(found)
        return
    print(_document(image, insecure, ca_bundle, auth_file)[1])


@app.command("list-tags", rich_help_panel="Inspection")
def list_tags(
    repository: str = typer.Argument(..., help="docker://HOST/REPO (or HOST/REPO), or "
                                     "oci:DIR for a layout's ref names."),
    page_size: int = typer.Option(None, "--page-size", min=1, help="Tags per request (n=); "
                                  "pages are followed through Link headers."),
    insecure: bool = INSECURE,
    ca_bundle: Path = CA_BUNDLE,
    auth_file: Path = AUTH_FILE,
    json_out: bool = JSON_OUT,
) -> None:
    """List a repository's tags (every page)."""
    if repository.startswith("oci:"):
        from ociimg.reference import LayoutReference, parse_image_name
        from ociimg.store import Store

        layout = parse_image_name(repository)
        assert isinstance(layout, LayoutReference)
        tags = [name for name, _ in Store(layout.path).refs()]
    else:
        from ociimg.reference import parse_reference
        from ociimg.registry.client import RegistryClient

        ref = parse_reference(repository)
        client = RegistryClient.open(ref.domain, ref.api_host,
                                     client_options(insecure, ca_bundle, auth_file),
                                     ref.repository)
        try:
            tags = client.list_tags(ref.repository, page_size)
        finally:
            client.close()
    if json_out:
        print_json({"repository": repository.removeprefix("docker://"), "tags": tags})
        return
    for tag in tags:
        print(printable(tag))


@app.command(rich_help_panel="Inspection")
def delete(
    image: str = typer.Argument(..., help="docker://REF: a tag (its manifest is deleted, "
                                "with every tag on it) or a digest."),
    insecure: bool = INSECURE,
    ca_bundle: Path = CA_BUNDLE,
    auth_file: Path = AUTH_FILE,
) -> None:
    """Delete an image's manifest from a registry (skopeo delete)."""
    from ociimg.errors import InvalidReference, ManifestUnknown
    from ociimg.reference import parse_reference
    from ociimg.registry.sync import SyncOptions, current_digest

    if not image.startswith("docker://"):
        raise InvalidReference(f"{image}: delete takes a registry image, docker://REF",
                               hint="for the local store use: ociimg rmi")
    ref = parse_reference(image)
    options = SyncOptions(insecure=insecure, ca_bundle=ca_bundle, auth_file=auth_file)
    try:
        found = ref.digest or current_digest(ref, options)
        if found is None:
            raise ManifestUnknown(f"manifest {ref}: not found")
        options.client(ref).delete_manifest(ref.repository, found)
    finally:
        options.close()
    print(f"Deleted: {printable(ref.name)}@{found}")


@app.command("sync", rich_help_panel="Inspection")
def sync_images(
    args: list[str] = typer.Argument(..., help="SOURCE... DEST. A SOURCE without a tag is "
                                     "every tag of the repository (or every image of an "
                                     "oci: layout); DEST is docker://HOST[/PATH] or oci:DIR."),
    page_size: int = typer.Option(None, "--page-size", min=1, help="Tags per list request."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be copied."),
    insecure: bool = INSECURE,
    ca_bundle: Path = CA_BUNDLE,
    auth_file: Path = AUTH_FILE,
    json_out: bool = JSON_OUT,
) -> None:
    """Copy repositories or images between registries and layouts; skip what the
    destination already has (same digest)."""
    from ociimg.errors import InvalidArgument
    from ociimg.registry.sync import SyncOptions, SyncResult, sync

    if len(args) < 2:
        raise InvalidArgument("sync: give at least one SOURCE and a DEST")

    def report(r: SyncResult) -> None:
        if not json_out:
            what = ("would copy" if dry_run else "copied") if r.copied else "present"
            print(printable(f"{what:10} {r.source} -> {r.destination}  {r.digest}"))

    results = sync(args[:-1], args[-1], SyncOptions(
        insecure=insecure, ca_bundle=ca_bundle, auth_file=auth_file, page_size=page_size,
        dry_run=dry_run), report)
    if json_out:
        print_json([r.__dict__ for r in results])


@app.command(rich_help_panel="Inspection")
def referrers(
    image: str = typer.Argument(..., help=IMAGE_HELP),
    extract: str = typer.Option(None, "--extract", help="Write this artifact (digest) to "
                                "--output: its manifest.json and one file per blob."),
    output: Path = typer.Option(None, "--output", "-o", help="Directory for --extract."),
    platform: str = PLATFORM,
    insecure: bool = INSECURE,
    json_out: bool = JSON_OUT,
) -> None:
    """List the artifacts attached to an image (SBOMs, signatures, attestations: OCI
    referrers and Docker attestation manifests), or extract one."""
    from ociimg.commands.referrers import extract_attachment, list_attachments
    from ociimg.errors import InvalidArgument

    img = open_image(image, platform, insecure)
    if extract:
        if output is None:
            raise InvalidArgument("--extract needs --output DIR")
        for path in extract_attachment(img, extract, output):
            print(printable(path))
        return
    rows = list_attachments(img)
    if json_out:
        print_json(rows)
        return
    print(f"{'DIGEST':71} {'SOURCE':9} {'SIZE':>8}  TYPE")
    for r in rows:
        print(printable(f"{r['digest']:71} {r['source']:9} {r['size']:>8}  "
                        f"{r['artifactType'] or r['mediaType']}"))
