"""Artifacts attached to an image: SBOMs, signatures and attestations found through the
OCI referrers API (or its fallback tag ``sha256-<hex>``), manifests in a layout whose
``subject`` is the image, and Docker's attestation manifests inside an index
(``vnd.docker.reference.type: attestation-manifest``). ``extract_attachment`` writes an
artifact's blobs into a directory, one file per layer."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ociimg import spec
from ociimg.commands.imagesource import OpenedImage
from ociimg.digest import Digest
from ociimg.errors import AlreadyExists, InvalidArgument, InvalidDocument, NotFound
from ociimg.spec import Descriptor, Manifest

TITLE = "org.opencontainers.image.title"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,200}")


def _row(desc: Descriptor, source: str, subject: str) -> dict[str, Any]:
    row = {"digest": str(desc.digest), "mediaType": desc.media_type,
           "artifactType": desc.artifact_type or desc.annotations.get(
               "vnd.docker.reference.type", ""), "size": desc.size,
           "subject": subject, "source": source}
    if desc.annotations:
        row["annotations"] = dict(desc.annotations)
    return row


def list_attachments(image: OpenedImage) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if image.index is not None:
        for d in image.index.manifests:
            if d.is_attestation:
                rows.append(_row(d, "index", d.annotations.get(
                    "vnd.docker.reference.digest", str(image.top.digest))))
    subjects = {image.descriptor.digest, image.top.digest}
    for subject in sorted(subjects, key=str):
        rows.extend(_row(d, "referrers", str(subject)) for d in _referrers(image, subject))
    return rows


def _referrers(image: OpenedImage, subject: Digest) -> list[Descriptor]:
    if image.remote is not None:
        return image.remote.client.referrers(image.remote.ref.repository, subject)
    found = []
    for _name, desc in image.local_refs():
        if desc.media_type not in spec.MANIFEST_TYPES:
            continue
        doc = image.read_manifest(desc)
        if isinstance(doc, Manifest) and doc.subject and doc.subject.digest == subject:
            found.append(Descriptor(desc.media_type, desc.digest, desc.size,
                                    dict(doc.annotations), artifact_type=doc.artifact_type
                                    or doc.config.media_type))
    return found


def _find(image: OpenedImage, digest: str) -> Descriptor:
    for row in list_attachments(image):
        if row["digest"] == digest or row["digest"].removeprefix("sha256:").startswith(
                digest.removeprefix("sha256:")) and len(digest) >= 12:
            return Descriptor(row["mediaType"], Digest.parse(row["digest"]), row["size"])
    raise NotFound(f"no artifact {digest} attached to {image.name}",
                   hint=f"list them with: ociimg referrers {image.name}")


def _read_doc(image: OpenedImage, desc: Descriptor) -> Manifest:
    doc = image.read_manifest(desc)
    if not isinstance(doc, Manifest):
        raise InvalidDocument(f"artifact {desc.digest}: an index, not a manifest")
    return doc


def file_name(desc: Descriptor) -> str:
    """The layer's title when it is a plain file name, else its digest: a hostile
    title (``../x``, ``/etc/passwd``) never chooses where we write."""
    title = desc.annotations.get(TITLE, "")
    if _SAFE_NAME.fullmatch(title) and title not in (".", ".."):
        return title
    suffix = ".json" if desc.media_type.endswith("json") else ""
    return f"{desc.digest.algorithm}-{desc.digest.hex}{suffix}"


def extract_attachment(image: OpenedImage, digest: str, out_dir: Path) -> list[Path]:
    """The artifact's manifest (``manifest.json``) and each of its layers into
    ``out_dir`` (created; existing files are never overwritten)."""
    desc = _find(image, digest)
    doc = _read_doc(image, desc)
    out_dir.mkdir(parents=True, exist_ok=True)
    dfd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    written: list[Path] = []
    try:
        names = [file_name(layer) for layer in doc.layers]
        if len(set(names)) != len(names) or "manifest.json" in names:
            names = [f"{d.digest.algorithm}-{d.digest.hex}" for d in doc.layers]
        _write(dfd, "manifest.json", [doc.raw])
        written.append(out_dir / "manifest.json")
        for layer, name in zip(doc.layers, names, strict=True):
            with image.open_blob(layer) as f:
                _write(dfd, name, iter(lambda f=f: f.read(1 << 20), b""))
            written.append(out_dir / name)
    finally:
        os.close(dfd)
    return written


def _write(dfd: int, name: str, chunks: Any) -> None:
    if "/" in name or name in (".", ".."):
        raise InvalidArgument(f"unsafe file name {name!r}")
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644, dir_fd=dfd)
    except FileExistsError:
        raise AlreadyExists(f"{name}: already exists in the output directory",
                            hint="choose an empty directory") from None
    with os.fdopen(fd, "wb") as out:
        for chunk in chunks:
            out.write(chunk)
