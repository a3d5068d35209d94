"""Inspection commands: history, ls, cat, du, and the registry reads (manifest, digest,
list-tags, delete, sync, referrers). IMAGE is a store name, oci:DIR[:REF] or
docker://REF everywhere."""

from __future__ import annotations

import json
import stat
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ociimg.cli.app import STATE, app
from ociimg.cli.images import human_size
from ociimg.cli.options import INSECURE, JSON_OUT, PLATFORM, client_options, parse_platform
from ociimg.cli.output import print_json, printable

if TYPE_CHECKING:
    from ociimg.commands.imagefs import Entry
    from ociimg.commands.imagesource import OpenedImage

IMAGE_HELP = "Image: a store name, oci:DIR[:REF] or docker://REF."


def open_image(text: str, platform: str | None, insecure: bool = False,
               ca_bundle: Path | None = None, auth_file: Path | None = None) -> OpenedImage:
    from ociimg.commands.imagesource import open_image as do_open

    return do_open(text, STATE.root, parse_platform(platform),
                   client_options(insecure, ca_bundle, auth_file, text))


@app.command(rich_help_panel="Inspection")
def history(
    image: str = typer.Argument(..., help=IMAGE_HELP),
    no_trunc: bool = typer.Option(False, "--no-trunc", help="Do not shorten CREATED BY."),
    platform: str = PLATFORM,
    insecure: bool = INSECURE,
    json_out: bool = JSON_OUT,
) -> None:
    """Show the steps that made an image, newest first (like `docker history`)."""
    from ociimg.commands.history import history_rows, short_created_by
    from ociimg.commands.inspect import layer_sizes

    img = open_image(image, platform, insecure)
    rows = history_rows(img.manifest, img.config, layer_sizes(img))
    if json_out:
        print_json(rows)
        return
    print(f"{'LAYER':14} {'CREATED':20} {'CREATED BY':46} {'SIZE':>10} {'COMPRESSED':>10}  "
          "COMMENT")
    for row in rows:
        created_by = short_created_by(row["createdBy"])
        if not no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        layer = row["layer"][7:19] if row["layer"] else "<missing>"
        unpacked = row["uncompressedSize"]
        print(f"{layer:14} {printable(row['created'][:19].replace('T', ' ')):20} "
              f"{printable(created_by):46} "
              f"{human_size(unpacked) if unpacked is not None else '?':>10} "
              f"{human_size(row['size']):>10}  {printable(row['comment'])}")


def mode_string(entry: Entry) -> str:
    from ociimg.commands.imagefs import TYPE_BITS

    if entry.kind in ("whiteout", "opaque"):
        return entry.kind.ljust(10)
    return stat.filemode(TYPE_BITS.get(entry.kind, 0) | entry.mode)


def entry_line(path: str, entry: Entry | None, layer: int, long: bool) -> str:
    if entry is None:
        return f"/{path}" if not long else f"{'d?????????':10} {'-':>9} {'-':>10} " \
            f"{'-':16} {'-':>4} /{path}"
    shown = "/" + path
    if entry.kind == "whiteout":
        shown += " (deleted)"
    elif entry.kind == "opaque":
        shown += "/ (opaque: lower contents hidden)"
    elif entry.kind == "symlink":
        shown += f" -> {entry.linkname}"
    elif entry.kind == "hardlink":
        shown += f" link to /{entry.linkname}"
    if not long:
        return printable(shown)
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(max(0, min(entry.mtime, 2**33))))
    owner = f"{entry.uid}/{entry.gid}"
    return printable(f"{mode_string(entry)} {owner:>9} {entry.size:>10} {when} "
                     f"L{layer:<3} {shown}")


def entry_json(path: str, entry: Entry | None, layer: int) -> dict[str, Any]:
    if entry is None:
        return {"path": "/" + path, "type": "dir", "layer": layer, "implicit": True}
    doc = {"path": "/" + path, "type": entry.kind, "mode": f"{entry.mode:04o}",
           "uid": entry.uid, "gid": entry.gid, "size": entry.size, "mtime": entry.mtime,
           "layer": layer}
    if entry.linkname:
        doc["linkTarget"] = entry.linkname
    return doc


class _Printer:
    """Lines (or a streamed JSON array) to stdout, written in blocks."""

    def __init__(self, json_out: bool) -> None:
        self.json_out = json_out
        self.first = True
        self.out: list[str] = []

    def add(self, path: str, entry: Entry | None, layer: int, long: bool) -> None:
        if self.json_out:
            text = json.dumps(entry_json(path, entry, layer))
            self.out.append(("[" if self.first else ",") + text)
        else:
            self.out.append(entry_line(path, entry, layer, long))
        self.first = False
        if len(self.out) >= 4096:
            self.flush()

    def flush(self) -> None:
        if self.out:
            sys.stdout.write("\n".join(self.out) + "\n")
            self.out.clear()

    def close(self) -> None:
        if self.json_out and self.first:
            self.out.append("[")
        if self.json_out:
            self.out.append("]")
        self.flush()


def _under(path: str, prefix: str) -> bool:
    return not prefix or path == prefix or path.startswith(prefix + "/")


@app.command("ls", rich_help_panel="Inspection")
def ls(
    image: str = typer.Argument(..., help=IMAGE_HELP),
    path: str = typer.Argument("/", help="Directory or file inside the image."),
    long: bool = typer.Option(False, "-l", "--long", help="Mode, owner, size, mtime, layer."),
    layer: str = typer.Option(None, "--layer", help="Only this layer's entries (number from "
                              "0 at the bottom, or a layer digest), whiteouts included."),
    platform: str = PLATFORM,
    insecure: bool = INSECURE,
    json_out: bool = JSON_OUT,
) -> None:
    """List an image's files (the merged tree, or one layer), read from the compressed
    layers without unpacking them."""
    from ociimg.commands.imagefs import find_layer, layer_entries, merged_tree

    img = open_image(image, platform, insecure)
    out = _Printer(json_out)
    prefix = "/".join(p for p in path.split("/") if p not in ("", "."))
    if layer is not None:
        index = find_layer(img, layer)
        for entry, _reader in layer_entries(img, index):
            if _under(entry.path, prefix):
                out.add(entry.path, entry, index, long)
        out.close()
        return
    tree = merged_tree(img)
    resolved, node = tree.resolve(prefix, follow_last=True)
    for sub, n in tree.walk(node, resolved):
        if n is not node or node.children is None:  # a dir's entries, or the file
            out.add(sub, n.entry, n.layer, long)
    out.close()


@app.command(rich_help_panel="Inspection")
def cat(
    image: str = typer.Argument(..., help=IMAGE_HELP),
    path: str = typer.Argument(..., help="File inside the image (links resolved in the "
                               "image)."),
    platform: str = PLATFORM,
    insecure: bool = INSECURE,
) -> None:
    """Write a file of an image to stdout, read from the compressed layers."""
    from ociimg.commands.imagefs import cat_file

    img = open_image(image, platform, insecure)
    sys.stdout.flush()
    cat_file(img, path, sys.stdout.buffer)
    sys.stdout.buffer.flush()



def diff_images(first: str, second: str, json_out: bool) -> None:
    """``ociimg diff IMAGE1 IMAGE2`` (the one-argument form is a container's diff)."""
    from ociimg.commands.imagediff import image_diff

    changes = image_diff(open_image(first, None), open_image(second, None))
    if json_out:
        print_json(changes)
        return
    for change in changes:
        print(printable(f"{change['kind']} {change['path']}"))


def parse_threshold(text: str) -> tuple[str, float]:
    """``10%`` → ("percent", 10.0); ``20m``/``1048576`` → ("bytes", n)."""
    from ociimg.cli.options import parse_size
    from ociimg.errors import InvalidArgument

    t = text.strip()
    if t.endswith("%"):
        try:
            value = float(t[:-1])
        except ValueError:
            value = -1
        if not 0 <= value <= 100:
            raise InvalidArgument(f"--max-wasted {text!r}: a percentage is 0% to 100%")
        return "percent", value
    return "bytes", float(parse_size(t.removesuffix("B").removesuffix("b")))


@app.command(rich_help_panel="Inspection")
def du(
    image: str = typer.Argument(..., help=IMAGE_HELP),
    efficiency: bool = typer.Option(False, "--efficiency", help="Also show wasted bytes "
                                    "and the worst offenders (as dive reports them)."),
    max_wasted: str = typer.Option(None, "--max-wasted", help="Exit 1 when the wasted "
                                   "bytes exceed this share of the image (10%) or size "
                                   "(20m): a CI gate."),
    top: int = typer.Option(10, "--top", min=0, help="How many worst offenders to show."),
    platform: str = PLATFORM,
    insecure: bool = INSECURE,
    json_out: bool = JSON_OUT,
) -> None:
    """Per-layer sizes and the space wasted on files later layers overwrite or delete."""
    from ociimg.commands.efficiency import image_usage

    threshold = parse_threshold(max_wasted) if max_wasted else None
    usage = image_usage(open_image(image, platform, insecure))
    over = threshold is not None and (
        100 * usage.wasted_fraction > threshold[1] if threshold[0] == "percent"
        else usage.wasted > threshold[1])
    if json_out:
        print_json({**usage.to_json(top), "overThreshold": over})
    else:
        _print_usage(usage, efficiency or threshold is not None, top)
    if over:
        print(f"ociimg: wasted space {human_size(usage.wasted)} "
              f"({100 * usage.wasted_fraction:.1f}%) is above --max-wasted {max_wasted}",
              file=sys.stderr)
        raise typer.Exit(1)


def _print_usage(usage: Any, efficiency: bool, top: int) -> None:
    print(f"{'LAYER':6} {'DIGEST':14} {'COMPRESSED':>10} {'SIZE':>10} {'FILES':>8}  CREATED BY")
    for u in usage.layers:
        made = u.created_by if len(u.created_by) <= 60 else u.created_by[:59] + "…"
        print(f"{u.index:<6} {u.digest[7:19]:14} {human_size(u.compressed):>10} "
              f"{human_size(u.size):>10} {u.entries:>8}  {printable(made)}")
    print(f"Total: {human_size(usage.total)} in {len(usage.layers)} layers")
    if not efficiency:
        return
    print(f"Wasted: {human_size(usage.wasted)} ({100 * usage.wasted_fraction:.1f}% of the "
          f"image), efficiency {100 * usage.score:.1f}%")
    worst = usage.offenders(top)
    if worst:
        print(f"{'COUNT':>5} {'TOTAL':>10}  PATH")
        for path, u in worst:
            print(f"{u.count:>5} {human_size(u.cumulative):>10}  {printable('/' + path)}")


def _words(value: object) -> str:
    """A config list as JSON (exec form), never a Python repr; absent: "-"."""
    if value is None or value == [] or value == {}:
        return "-"
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value


def print_inspect(doc: dict[str, Any]) -> None:
    """The human form of ``inspect``: every value comes from the image, so each goes
    through ``printable`` (an escape sequence in a label must not reach the terminal)."""
    cfg = doc["config"].get("config", {})

    def line(label: str, value: object) -> None:
        print(f"{label + ':':14}{printable(value)}")

    line("Name", doc["name"])
    line("Digest", doc["digest"])
    if doc.get("index"):
        line("Index", f"{doc['index']} ({len(doc['platforms'])} platforms: "
                      f"{', '.join(doc['platforms'])})")
    line("Platform", doc["platform"])
    line("Created", doc["config"].get("created", "-"))
    if doc["config"].get("author"):
        line("Author", doc["config"]["author"])
    line("Entrypoint", _words(cfg.get("Entrypoint")))
    line("Cmd", _words(cfg.get("Cmd")))
    line("User", cfg.get("User") or "-")
    line("WorkingDir", cfg.get("WorkingDir") or "-")
    line("StopSignal", cfg.get("StopSignal") or "-")
    ports = cfg.get("ExposedPorts")
    line("ExposedPorts", ", ".join(sorted(ports)) if isinstance(ports, dict) and ports else "-")
    volumes = cfg.get("Volumes")
    line("Volumes", ", ".join(sorted(volumes)) if isinstance(volumes, dict) and volumes else "-")
    for env in cfg.get("Env") or []:
        line("Env", env)
    for k, v in (cfg.get("Labels") or {}).items():
        line("Label", f"{k}={v}")
    for k, v in (doc["manifest"].get("annotations") or {}).items():
        line("Annotation", f"{k}={v}")
    unpacked = doc.get("uncompressedSize")
    line("Layers", f"{len(doc['layers'])} ({human_size(doc['size'])} compressed, "
                   f"{human_size(unpacked) if unpacked is not None else '?'} uncompressed)")
    for layer in doc["layers"]:
        size = layer.get("uncompressedSize")
        print(printable(f"  {layer['digest']}  {human_size(layer['size']):>10}  "
                        f"{human_size(size) if size is not None else '?':>10}  "
                        f"{layer['mediaType']}"))
    _print_history_summary(doc["history"])
    if doc.get("attachmentsError"):
        line("Attachments", f"? ({doc['attachmentsError']})")
    for att in doc.get("attachments", []):
        kind = att["artifactType"] or att["mediaType"]
        line("Attachment", f"{att['digest']} {kind} ({att['source']}, for {att['subject']})")


def _print_history_summary(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    layers = sum(1 for r in rows if not r["emptyLayer"])
    last = rows[0]["createdBy"] or "-"
    print(printable(f"{'History:':14}{len(rows)} steps ({layers} with layers); last: "
                    f"{last if len(last) <= 60 else last[:59] + '…'}"))


def print_template(template: str, doc: dict[str, Any]) -> None:
    """``--format``: Go-template fields over the inspect document, docker's names
    (``{{.Config.Env}}``, ``{{.Digest}}``, ``{{json .Config}}``)."""
    from ociimg.cli.template import render

    text = render(template, _escaped(inspect_fields(doc)))
    print(text, end="" if text.endswith("\n") else "\n")


def _escaped(value: Any) -> Any:
    """Every string from the image through ``printable`` before it is rendered: a
    value cannot add lines or drive the terminal, the template's own newlines stay."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(k): _escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    return value


_CONFIG_KEYS = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes",
                "WorkingDir", "Labels", "StopSignal")


def inspect_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """The inspect document under the field names users know from `docker inspect` and
    `skopeo inspect`; the config's usual keys are always there (unset: null, as
    docker prints them)."""
    cfg = doc["config"]
    runtime = {key: None for key in _CONFIG_KEYS} | dict(cfg.get("config") or {})
    return {"Name": doc["name"], "Digest": doc["digest"], "MediaType": doc["mediaType"],
            "Platform": doc["platform"], "Config": runtime,
            "Created": cfg.get("created"), "Author": cfg.get("author"),
            "Architecture": cfg.get("architecture"), "Os": cfg.get("os"),
            "Variant": cfg.get("variant"), "Labels": runtime["Labels"] or {},
            "Env": runtime["Env"] or [], "Layers": [x["digest"] for x in doc["layers"]],
            "LayersData": doc["layers"], "Size": doc["size"],
            "UncompressedSize": doc["uncompressedSize"], "RootFS": cfg.get("rootfs", {}),
            "History": doc["history"], "Manifest": doc["manifest"],
            "Annotations": doc["manifest"].get("annotations") or {},
            "Attachments": doc["attachments"], "Index": doc.get("index"),
            "Platforms": doc.get("platforms", [])}
