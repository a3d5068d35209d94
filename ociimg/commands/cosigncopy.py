"""``copy --with-signatures``: an image's cosign attachments copied beside it.

cosign keeps what it attaches to an image under tags of the image's repository named
after its digest: ``sha256-<hex>.sig`` (signatures), ``.att`` (attestations) and
``.sbom`` (SBOMs) — what ``cosign copy`` carries along (skopeo copies only signatures,
and only when registries.d enables sigstore attachments). They are copied as they are,
digests kept; a signature's payload names the digest, so it verifies at the
destination too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ociimg.digest import Digest
from ociimg.errors import InvalidArgument, NotFound, OciimgError
from ociimg.reference import Reference, parse_image_name

SUFFIXES = ("sig", "att", "sbom")
MAX_MANIFESTS = 64


def copy_cosign_tags(source: str, destination: str, digest: Digest, options: Any,
                     progress: Any = None) -> list[str]:
    """Copy the ``.sig``/``.att``/``.sbom`` tags of ``digest`` (and, for an index copied
    whole, of its manifests: ``sign`` signs each) from the source's repository to the
    destination's; the tags copied (those the source has)."""
    from ociimg.transports import copy_image
    src, dst = registry_ref(source), registry_ref(destination)
    # The image was judged by the policy already; its attachments are data, not images.
    plain = dataclasses.replace(options, verifier=None, all_platforms=True)
    digests = [digest] + (_manifests(src, digest, options) if options.all_platforms else [])
    copied = []
    for d in digests:
        for suffix in SUFFIXES:
            tag = f"{d.algorithm}-{d.hex}.{suffix}"
            try:
                copy_image(f"docker://{src.name}:{tag}", f"docker://{dst.name}:{tag}", plain,
                           progress)
            except NotFound:
                continue  # nothing of that kind is attached
            copied.append(tag)
    return copied


def _manifests(src: Reference, digest: Digest, options: Any) -> list[Digest]:
    """The manifests of the index ``digest`` (none if it is a manifest), at most
    MAX_MANIFESTS: a hostile index must not turn into thousands of tag lookups."""
    from ociimg.transports import parse_transport
    with parse_transport(f"docker://{src.name}@{digest}",
                         pull_options=options.pull_options()) as source:
        index = source.index()
    return [d.digest for d in index.manifests[:MAX_MANIFESTS]] if index is not None else []


def registry_ref(text: str) -> Reference:
    try:
        ref = parse_image_name(text)
    except OciimgError:
        ref = None
    if not isinstance(ref, Reference) or not text.startswith("docker://"):
        raise InvalidArgument(f"--with-signatures: {text} is not a registry image",
                              hint="cosign's attachments live in registries: copy "
                                   "docker://SRC docker://DST")
    return ref
