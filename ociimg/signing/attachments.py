"""cosign signatures stored in a registry: the ``sha256-<hex>.sig`` tag.

The tag (cosign ``pkg/oci/remote/remote.go``) names an OCI image manifest (Docker v2s2
is refused, as containers/image does: ``docker_client.go``) whose every layer is one
simple-signing payload, with the base64 DER signature in the layer annotation
``dev.cosignproject.cosign/signature``; its config lists the layers as diff_ids.
Adding a signature is a read-modify-write of that manifest (identical layers are not
added twice). The distribution API has no conditional PUT, so two signers can still
overwrite each other: each merges again when the tag moved before its PUT, and checks
once more after a settling pause that its signatures are still there (:func:`settle`).

Everything read is bounded: the manifest by the client's 4 MiB cap, the number of
signatures, each payload by its size (4 MiB at most) and digest.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass

from ociimg import spec
from ociimg.digest import Digest
from ociimg.errors import (
    BlobUnknown,
    InvalidDocument,
    ManifestUnknown,
    OciimgError,
    SignatureInvalid,
)
from ociimg.registry.client import RegistryClient
from ociimg.signing.payload import MAX_PAYLOAD_BYTES, MEDIA_TYPE

SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
MAX_SIGNATURES = 256
WRITE_ATTEMPTS = 5
SETTLE_SECONDS = 0.5  # longer than a racing signer's check-then-PUT takes


@dataclass(frozen=True, slots=True)
class Signature:
    """One layer of the .sig manifest: payload bytes and DER signature, or why not."""

    index: int
    payload: bytes = b""
    signature: bytes = b""
    problem: str | None = None


def signature_tag(digest: Digest) -> str:
    return f"{digest.algorithm}-{digest.hex}.sig"


def read_signatures(client: RegistryClient, repo: str, digest: Digest) -> list[Signature]:
    """The signatures attached to ``digest`` in ``repo``; [] when there is no .sig tag.
    A .sig tag that is not a cosign signature manifest is SignatureInvalid."""
    manifest = _signature_manifest(client, repo, digest)
    if manifest is None:
        return []
    return [_read_layer(client, repo, i, layer) for i, layer in enumerate(manifest.layers, 1)]


def _signature_manifest(client: RegistryClient, repo: str,
                        digest: Digest) -> spec.Manifest | None:
    tag = signature_tag(digest)
    where = f"signatures {client.display}/{repo}:{tag}"
    try:
        raw, media_type, _digest = client.get_manifest(repo, tag)
    except ManifestUnknown:
        return None
    except InvalidDocument as exc:
        raise SignatureInvalid(f"{where}: not a signature manifest ({exc.message})") from None
    if media_type != spec.OCI_MANIFEST:
        raise SignatureInvalid(f"{where}: a {media_type}, not an OCI image manifest",
                               hint="cosign signatures are stored as OCI manifests")
    manifest = spec.parse_manifest(raw, media_type, where)
    if len(manifest.layers) > MAX_SIGNATURES:
        raise SignatureInvalid(f"{where}: {len(manifest.layers)} signatures; at most "
                               f"{MAX_SIGNATURES} are read")
    return manifest


def _read_layer(client: RegistryClient, repo: str, index: int,
                layer: spec.Descriptor) -> Signature:
    encoded = layer.annotations.get(SIGNATURE_ANNOTATION)
    if encoded is None:
        return Signature(index, problem=f"layer has no {SIGNATURE_ANNOTATION} annotation")
    try:
        signature = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return Signature(index, problem="the signature annotation is not base64")
    if layer.size > MAX_PAYLOAD_BYTES:
        return Signature(index, problem=f"payload of {layer.size} bytes exceeds "
                                        f"{MAX_PAYLOAD_BYTES}")
    try:
        payload = fetch_small_blob(client, repo, layer)
    except OciimgError as exc:
        return Signature(index, problem=f"payload unreadable: {exc.message}")
    return Signature(index, payload, signature)


class _MemorySink:
    """A BlobSink that keeps at most ``size`` bytes in memory."""

    def __init__(self, size: int, what: str) -> None:
        self.size, self.what = size, what
        self.buf = bytearray()

    @property
    def offset(self) -> int:
        return len(self.buf)

    def write(self, data: bytes) -> int:
        if len(self.buf) + len(data) > self.size:
            raise InvalidDocument(f"{self.what}: more than the {self.size} bytes declared")
        self.buf += data
        return len(data)

    def restart(self) -> None:
        self.buf.clear()


def fetch_small_blob(client: RegistryClient, repo: str, desc: spec.Descriptor) -> bytes:
    what = f"blob {client.display}/{repo}@{desc.digest}"
    sink = _MemorySink(desc.size, what)
    client.fetch_blob(repo, desc, sink)
    data = bytes(sink.buf)
    if Digest.of(data, desc.digest.algorithm) != desc.digest:
        raise InvalidDocument(f"{what}: content does not match its digest")
    return data


# Writing ---------------------------------------------------------------------
def attach_signature(client: RegistryClient, repo: str, digest: Digest, payload: bytes,
                     signature: bytes, ours: Callable[[bytes], bool]) -> bool:
    """Add one signature to ``digest``'s .sig manifest; False if the same payload is
    there already with a signature ``ours`` accepts (ECDSA signatures differ on every
    run: cosign's DupeDetector verifies instead of comparing)."""
    tag = signature_tag(digest)
    layer = spec.Descriptor(MEDIA_TYPE, Digest.of(payload), len(payload),
                            {SIGNATURE_ANNOTATION: base64.b64encode(signature).decode()})
    _upload(client, repo, layer.digest, payload)
    for _attempt in range(WRITE_ATTEMPTS):
        before = _signature_manifest(client, repo, digest)
        layers = list(before.layers) if before else []
        if any(old.digest == layer.digest and ours(_decoded(old)) for old in layers):
            return False
        raw = signature_manifest(client, repo, [*layers, layer], before)
        if _moved(client, repo, digest, before):
            continue  # another signer wrote meanwhile: merge with theirs
        try:
            client.put_manifest(repo, tag, raw, spec.OCI_MANIFEST)
        except BlobUnknown:
            # Racing signers upload the same config blob: distribution's storage can lose
            # sight of it while another upload of it commits. Upload again and retry.
            client.transport.sleep(0.05 + 0.2 * random.random())
            _upload(client, repo, layer.digest, payload)
            continue
        after = _signature_manifest(client, repo, digest)
        # A signer racing between our check and our PUT overwrote us or we them: each
        # writer checks its own layer survived, and merges again if not.
        if after is not None and any(_same_layer(old, layer) for old in after.layers):
            return True
    raise SignatureInvalid(f"sign {client.display}/{repo}:{tag}: the signature manifest kept "
                           "changing under us", hint="another signer is busy; try again")


@dataclass(frozen=True, slots=True)
class Attachment:
    """A signature this process attached (for :func:`settle`)."""

    digest: Digest
    payload: bytes
    signature: bytes
    ours: Callable[[bytes], bool]


def settle(client: RegistryClient, repo: str, attached: list[Attachment]) -> None:
    """After a pause, attach again whatever a racing signer's PUT overwrote; repeat
    until a check finds all of ours (or give up after WRITE_ATTEMPTS rounds)."""
    pending = list(attached)
    for round_ in range(WRITE_ATTEMPTS):
        client.transport.sleep(SETTLE_SECONDS * (1 + random.random()) * (round_ + 1))
        pending = [a for a in pending if not _present(client, repo, a)]
        if not pending:
            return
        for a in pending:
            attach_signature(client, repo, a.digest, a.payload, a.signature, a.ours)
    raise SignatureInvalid(f"sign {client.display}/{repo}: signatures kept being overwritten "
                           "by other signers", hint="try again when they are done")


def _present(client: RegistryClient, repo: str, a: Attachment) -> bool:
    manifest = _signature_manifest(client, repo, a.digest)
    return manifest is not None and any(
        layer.digest == Digest.of(a.payload) and a.ours(_decoded(layer))
        for layer in manifest.layers)


def signature_manifest(client: RegistryClient, repo: str, layers: list[spec.Descriptor],
                       before: spec.Manifest | None) -> bytes:
    """The .sig manifest for ``layers`` (the config blob is uploaded here)."""
    config = json.dumps({
        "architecture": "", "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
        "rootfs": {"type": "layers", "diff_ids": [str(d.digest) for d in layers]},
        "config": {}}, separators=(",", ":")).encode()
    config_digest = Digest.of(config)
    _upload(client, repo, config_digest, config)
    doc = {"schemaVersion": 2, "mediaType": spec.OCI_MANIFEST,
           "config": {"mediaType": spec.OCI_CONFIG, "size": len(config),
                      "digest": str(config_digest)},
           "layers": [d.to_json() for d in layers]}
    if before is not None and before.annotations:
        doc["annotations"] = dict(before.annotations)
    return json.dumps(doc, separators=(",", ":")).encode()


def _decoded(layer: spec.Descriptor) -> bytes:
    try:
        return base64.b64decode(layer.annotations.get(SIGNATURE_ANNOTATION, ""), validate=True)
    except (binascii.Error, ValueError):
        return b""


def _same_layer(a: spec.Descriptor, b: spec.Descriptor) -> bool:
    return a.digest == b.digest and a.annotations == b.annotations


def _moved(client: RegistryClient, repo: str, digest: Digest, before: spec.Manifest | None) -> bool:
    now = _signature_manifest(client, repo, digest)
    return (now.raw if now else None) != (before.raw if before else None)


def _upload(client: RegistryClient, repo: str, digest: Digest, data: bytes) -> None:
    if client.blob_exists(repo, digest):
        return
    desc = spec.Descriptor("application/octet-stream", digest, len(data))
    client.upload_blob(repo, desc, lambda: io.BytesIO(data))
