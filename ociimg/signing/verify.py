"""Deciding about signatures: crypto over the exact bytes, then the payload, then policy.

The order is containers/image's (``signature/internal/sigstore_payload.go``): the
signature is checked over the payload bytes as stored, never a re-serialisation; only
a payload whose signature verified is parsed (strictly); then its manifest digest must
be the digest of the manifest bytes being pulled, and its docker-reference must satisfy
the policy's ``signedIdentity``. One accepted signature is enough; when none is, every
rejection is reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ociimg.digest import Digest
from ociimg.errors import InvalidDocument, InvalidReference, PolicyDenied
from ociimg.reference import LayoutReference, Reference, parse_reference
from ociimg.signing.attachments import Signature
from ociimg.signing.keys import PublicKey, load_public_key, verify_bytes
from ociimg.signing.payload import Payload, parse_payload
from ociimg.signing.policy import Identity, Policy, Requirement, identity_string

IdentityCheck = Callable[[Payload], str | None]


@dataclass
class Verdict:
    accepted: list[Payload] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)

    def summary(self, digest: Digest) -> str:
        if not self.rejections:
            return f"no signature exists for {digest}"
        return "; ".join(self.rejections)


def check_signatures(signatures: list[Signature], keys: list[PublicKey], digest: Digest,
                     identity: IdentityCheck | None = None) -> Verdict:
    verdict = Verdict()
    for sig in signatures:
        problem = sig.problem or _problem(sig, keys, digest, identity, verdict)
        if problem:
            verdict.rejections.append(f"signature {sig.index}: {problem}")
    return verdict


def _problem(sig: Signature, keys: list[PublicKey], digest: Digest,
             identity: IdentityCheck | None, verdict: Verdict) -> str | None:
    if not any(verify_bytes(key, sig.payload, sig.signature) for key in keys):
        return "invalid signature (made with another key, or the payload was changed)"
    try:
        payload = parse_payload(sig.payload)
    except InvalidDocument as exc:
        return f"signed payload is not a cosign simple-signing payload ({exc.message})"
    if payload.manifest_digest != digest:
        return (f"signs manifest {payload.manifest_digest}, not {digest} (a signature of "
                "another image)")
    problem = identity(payload) if identity else None
    if problem:
        return problem
    verdict.accepted.append(payload)
    return None


# signedIdentity ----------------------------------------------------------------
def identity_problem(rule: Identity, image: Reference, signed_text: str) -> str | None:
    """Why the signed docker-reference is not accepted for ``image`` (None: accepted)."""
    try:
        signed = parse_reference(signed_text)
    except InvalidReference:
        return f"signed identity {signed_text[:200]!r} is not a valid reference"
    explicit = "@" in signed_text or ":" in signed_text.rsplit("/", 1)[-1]
    signed_full = identity_string(signed) if explicit else signed.name
    if rule.type == "remapIdentity":
        image = _remap(image, rule.prefix or "", rule.signed_prefix or "")
        rule = Identity()
    if rule.type == "matchRepository":
        ok = signed.name == image.name
    elif rule.type == "exactRepository":
        ok = signed.name == rule.value
    elif rule.type == "exactReference":
        ok = signed_full == rule.value
    elif rule.type == "matchRepoDigestOrExact" and image.digest is not None:
        ok = signed.name == image.name
    else:  # matchExact, and matchRepoDigestOrExact for a tag
        ok = signed_full == identity_string(image)
    if ok:
        return None
    hint = ""
    if not explicit and rule.type in ("matchExact", "matchRepoDigestOrExact"):
        hint = (" (the signature names the repository only; use signedIdentity "
                "matchRepository, or sign the tag)")
    return f'signature for identity "{signed_full}" is not accepted for ' \
           f'"{identity_string(image)}" by {rule.type}{hint}'


def _remap(image: Reference, prefix: str, signed_prefix: str) -> Reference:
    """remapIdentity: an image under ``prefix`` is matched as if under ``signed_prefix``."""
    text = identity_string(image)
    if text == prefix or (text.startswith(prefix) and text[len(prefix)] in "/:@"):
        try:
            return parse_reference(signed_prefix + text[len(prefix):])
        except InvalidReference:
            return image
    return image


# Policy ------------------------------------------------------------------------
SignatureFetcher = Callable[[], list[Signature]]


def enforce(policy: Policy, image: Reference | LayoutReference, digest: Digest,
            fetch: SignatureFetcher, action: str = "pull") -> list[Payload]:
    """Raise PolicyDenied naming the failed requirement unless the policy admits
    ``image`` whose manifest has ``digest``; the accepted payloads otherwise."""
    scope, requirements = policy.requirements_for(image)
    accepted: list[Payload] = []
    cached: list[list[Signature]] = []

    def signatures() -> list[Signature]:
        if not cached:
            cached.append(fetch())
        return cached[0]

    for i, req in enumerate(requirements):
        problem, payloads = _requirement_problem(req, image, digest, signatures)
        if problem:
            raise _denied(policy, image, f"{scope}[{i}]", req, problem, action)
        accepted.extend(payloads)
    return accepted


def refuse_early(policy: Policy, image: Reference | LayoutReference, action: str) -> None:
    """Before any download: a scope that rejects, or asks what ociimg cannot check,
    refuses whatever the registry would serve."""
    scope, requirements = policy.requirements_for(image)
    for i, req in enumerate(requirements):
        if req.type == "reject" or req.unsupported:
            problem = "the policy rejects this image" if req.type == "reject" else \
                f"{req.unsupported} by ociimg"
            raise _denied(policy, image, f"{scope}[{i}]", req, problem, action)


def _denied(policy: Policy, image: Reference | LayoutReference, where: str, req: Requirement,
            problem: str, action: str) -> PolicyDenied:
    hint = ("sign it (ociimg sign --key cosign.key REF) with a key the policy names"
            if req.type == "sigstoreSigned" and not req.unsupported else
            "the policy refuses images from here; pass another with --policy if that is wrong")
    return PolicyDenied(f"{action} {image}: rejected by policy {policy.source}: {where} "
                        f"({req.describe()}): {problem}", hint=hint)


def _requirement_problem(req: Requirement, image: Reference | LayoutReference, digest: Digest,
                         signatures: SignatureFetcher) -> tuple[str | None, list[Payload]]:
    if req.type == "insecureAcceptAnything":
        return None, []
    if req.type == "reject":
        return "the policy rejects this image", []
    if req.unsupported:
        return f"{req.unsupported} by ociimg", []
    unreadable = [src for src, pem in req.keys if pem is None]
    if unreadable:
        return f"cannot read key file {unreadable[0]}", []
    try:
        keys = [load_public_key(pem or b"", src) for src, pem in req.keys]
    except InvalidDocument as exc:
        return exc.message, []
    if isinstance(image, LayoutReference):
        return f"A signature was required, but no signature exists ({image.kind} layouts " \
               "carry no cosign signatures)", []
    found = signatures()
    if not found:
        return f"A signature was required, but no signature exists for {digest}", []
    verdict = check_signatures(found, keys, digest,
                               lambda p: identity_problem(req.identity, image,
                                                          p.docker_reference))
    if not verdict.accepted:
        return verdict.summary(digest), []
    return None, verdict.accepted
