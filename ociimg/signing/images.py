"""Signing and verifying images in a registry, and the policy hook for pull/copy/run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ociimg import spec
from ociimg.digest import Digest
from ociimg.errors import InvalidReference, SignatureInvalid
from ociimg.reference import LayoutReference, Reference, parse_reference
from ociimg.registry.client import ClientOptions, RegistryClient
from ociimg.signing.attachments import (
    Attachment,
    Signature,
    attach_signature,
    read_signatures,
    settle,
)
from ociimg.signing.keys import PrivateKey, PublicKey, sign_bytes, verify_bytes
from ociimg.signing.payload import Payload, make_payload
from ociimg.signing.policy import Policy
from ociimg.signing.verify import Verdict, check_signatures, enforce, refuse_early


@dataclass(frozen=True, slots=True)
class Signed:
    digest: Digest
    identity: str
    added: bool  # False: this exact signature was already attached
    platform: str | None = None


@contextlib.contextmanager
def open_client(ref: Reference, options: ClientOptions | None) -> Iterator[RegistryClient]:
    client = RegistryClient.open(ref.domain, ref.api_host, options, ref.repository)
    try:
        yield client
    finally:
        client.close()


def signing_identity(ref: Reference) -> str:
    """repo:tag when a tag was named (what matchRepoDigestOrExact accepts for a pull by
    tag), else the repository alone, as cosign writes for a digest."""
    return f"{ref.name}:{ref.tag}" if ref.tag and ref.digest is None else ref.name


def sign_image(ref: Reference, key: PrivateKey,
               options: ClientOptions | None = None) -> list[Signed]:
    """Sign what ``ref`` names; an index and each manifest it lists (podman verifies
    the platform manifest it pulls, not the index)."""
    identity = signing_identity(ref)
    with open_client(ref, options) as client:
        raw, media_type, digest = client.get_manifest(ref.repository, ref.manifest_reference)
        targets: list[tuple[Digest, str | None]] = [(digest, None)]
        if media_type in spec.INDEX_TYPES:
            index = spec.parse_index(raw, media_type, f"index {ref}")
            targets += [(d.digest, str(d.platform) if d.platform else None)
                        for d in index.manifests if d.media_type in spec.MANIFEST_TYPES]
        out, attached = [], []
        for target, platform in targets:
            payload = make_payload(identity, target)
            a = Attachment(target, payload, sign_bytes(key, payload),
                           lambda old, p=payload: verify_bytes(key.public_key(), p, old))
            added = attach_signature(client, ref.repository, a.digest, a.payload, a.signature,
                                     a.ours)
            out.append(Signed(target, identity, added, platform))
            attached += [a] if added else []
        if attached:
            settle(client, ref.repository, attached)
    return out


def verify_image(ref: Reference, keys: list[PublicKey],
                 options: ClientOptions | None = None) -> tuple[Digest, Verdict]:
    """The digest ``ref`` resolves to and what its signatures say about it."""
    with open_client(ref, options) as client:
        _raw, _media_type, digest = client.get_manifest(ref.repository, ref.manifest_reference)
        verdict = check_signatures(read_signatures(client, ref.repository, digest), keys,
                                   digest)
    if not verdict.accepted:
        raise SignatureInvalid(f"verify {ref}: {verdict.summary(digest)}",
                               hint="sign it with `ociimg sign --key cosign.key REF`, or "
                                    "check that the public key matches")
    return digest, verdict


@dataclass
class PolicyVerifier:
    """The pull/copy hook (``PullOptions.verifier``): enforce ``policy`` on each
    manifest an image name will stand for. Signatures come from the image's registry;
    an image of the local store (``store``) is judged by its name, like one being
    pulled. ``verified`` remembers what passed, so a later check of the same image is
    free."""

    policy: Policy
    options: ClientOptions | None = None
    action: str = "pull"
    store: Path | None = None
    verified: set[tuple[str, Digest]] = field(default_factory=set)
    accepted: list[Payload] = field(default_factory=list)

    def precheck(self, name: Reference | LayoutReference) -> None:
        """Refuse before anything is read or downloaded when the policy rejects ``name``
        outright. Layouts and archives carry no signatures, so their verdict does not
        depend on the manifest: it is given here in full."""
        name = self._judged(name)
        if isinstance(name, LayoutReference):
            enforce(self.policy, name, Digest.of(b""), list, self.action)
        else:
            refuse_early(self.policy, name, self.action)

    def _judged(self, name: Reference | LayoutReference) -> Reference | LayoutReference:
        if isinstance(name, LayoutReference) and name.kind == "oci" and name.tag and \
                self.store is not None and name.path.absolute() == self.store.absolute():
            with contextlib.suppress(InvalidReference):
                return parse_reference(name.tag)
        return name

    def __call__(self, name: Reference | LayoutReference, desc: spec.Descriptor,
                 client: RegistryClient | None) -> None:
        name = self._judged(name)
        key = (str(name), desc.digest)
        if key in self.verified:
            return

        def fetch() -> list[Signature]:
            if not isinstance(name, Reference):
                return []
            if client is not None:
                return read_signatures(client, name.repository, desc.digest)
            with open_client(name, self.options) as own:
                return read_signatures(own, name.repository, desc.digest)

        self.accepted += enforce(self.policy, name, desc.digest, fetch, self.action)
        self.verified.add(key)


def policy_name(text: str, stored_name: str) -> Reference | LayoutReference:
    """The name a policy judges for an image used as ``TEXT`` (run, build's FROM): the
    layout for oci:, else the store name as a registry reference (its signatures live in
    that registry)."""
    from ociimg.reference import LAYOUT_KINDS, parse_image_name

    if text.startswith(tuple(f"{kind}:" for kind in LAYOUT_KINDS)):
        ref = parse_image_name(text)
        if isinstance(ref, LayoutReference):
            return ref
    return parse_reference(stored_name)
