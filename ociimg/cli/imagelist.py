"""``ociimg images``: the store's images with docker's columns, filters and templates."""

from __future__ import annotations

from typing import Any

import typer

from ociimg.cli.app import STATE, app
from ociimg.cli.options import JSON_OUT
from ociimg.cli.output import print_json, printable

_DEFAULT = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
_WITH_DIGESTS = ("table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}"
                 "\t{{.Size}}")
HEADERS = {"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID", "Digest": "DIGEST",
           "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE",
           "Name": "NAME", "Labels": "LABELS"}


@app.command(rich_help_panel="Images")
def images(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only image IDs."),
    digests: bool = typer.Option(False, "--digests", help="Show manifest digests."),
    no_trunc: bool = typer.Option(False, "--no-trunc", help="Full image IDs."),
    filters: list[str] = typer.Option([], "--filter", "-f", help="reference=GLOB, "
                                      "dangling=true|false, before=IMAGE, since=IMAGE, "
                                      "label=KEY[=VALUE]."),
    fmt: str = typer.Option(None, "--format", help="Go-template-like: "
                            "'{{.Repository}}:{{.Tag}}', or 'table …' for columns."),
    json_out: bool = JSON_OUT,
) -> None:
    """List the images in the local store (SIZE is uncompressed, as docker shows)."""
    from ociimg.cli.template import render_table
    from ociimg.commands.listing import filter_rows, image_rows
    from ociimg.store import Store

    rows = []
    if (STATE.root / "store" / "index.json").exists():  # a read-only command makes no store
        store = Store.open(STATE.root)
        rows = filter_rows(image_rows(store), filters, store)
    if json_out:
        print_json([{"name": r.name, "digest": str(r.digest), "mediaType": r.media_type,
                     "id": str(r.image_id or ""), "size": r.size,
                     "created": r.created.isoformat() if r.created else None} for r in rows])
        return
    if quiet:
        seen = []
        for r in rows:
            image_id = printable(r.fields(no_trunc=no_trunc)["ID"])
            if image_id not in seen:
                seen.append(image_id)
        lines = seen
    else:
        template = fmt or (_WITH_DIGESTS if digests else _DEFAULT)
        lines = render_table(template, [_escaped(r.fields(no_trunc=no_trunc)) for r in rows],
                             HEADERS)
    for line in lines:
        print(line)


def _escaped(fields: dict[str, Any]) -> dict[str, Any]:
    """Values from the image made safe for the terminal before the template places them
    (the template's own tabs and newlines are the user's)."""
    return {k: {printable(a): printable(b) for a, b in v.items()} if isinstance(v, dict)
            else printable(v) for k, v in fields.items()}
