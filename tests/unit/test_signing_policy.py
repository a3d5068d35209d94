"""policy.json: strict parsing, the scope lookup of containers/image (naming.go), the
signedIdentity rules, and enforcement over real signatures made in memory."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from ociimg.digest import Digest
from ociimg.errors import InvalidDocument, PolicyDenied
from ociimg.reference import LayoutReference, parse_reference
from ociimg.signing import keys
from ociimg.signing.attachments import Signature
from ociimg.signing.payload import make_payload
from ociimg.signing.policy import Identity, load_policy, parse_policy, scope_candidates
from ociimg.signing.verify import check_signatures, enforce, identity_problem, refuse_early

DIGEST = Digest.of(b"the manifest")
OTHER = Digest.of(b"another manifest")
ACCEPT = [{"type": "insecureAcceptAnything"}]


def policy(doc: dict) -> bytes:  # type: ignore[type-arg]
    return json.dumps(doc).encode()


# Parsing -------------------------------------------------------------------------
@pytest.mark.parametrize("doc,message", [
    ({"transports": {}}, "Default policy is missing"),
    ({"default": []}, "non-empty list"),
    ({"default": ACCEPT, "extra": 1}, "unknown field"),
    ({"default": [{"type": "acceptAll"}]}, "unknown requirement type"),
    ({"default": [{"type": "reject", "keyPath": "/k"}]}, "unknown field 'keyPath'"),
    ({"default": [{"type": "sigstoreSigned"}]}, "exactly one of"),
    ({"default": [{"type": "sigstoreSigned", "keyPath": "/a", "keyData": "QQ=="}]},
     "exactly one of"),
    ({"default": [{"type": "sigstoreSigned", "keyData": "%%%"}]}, "base64"),
    ({"default": [{"type": "sigstoreSigned", "keyPaths": []}]}, "non-empty list"),
    ({"default": [{"type": "sigstoreSigned", "keyPath": "/k",
                   "signedIdentity": {"type": "matchAnything"}}]}, "unknown type"),
    ({"default": [{"type": "sigstoreSigned", "keyPath": "/k",
                   "signedIdentity": {"type": "exactReference"}}]}, "needs dockerReference"),
    ({"default": [{"type": "sigstoreSigned", "keyPath": "/k",
                   "signedIdentity": {"type": "exactReference",
                                      "dockerReference": "docker.io/library/busybox"}}]},
     "needs a tag or digest"),
    ({"default": ACCEPT, "transports": {"docker": {"busybox": ACCEPT}}}, "registry host"),
    ({"default": ACCEPT, "transports": {"docker": {"docker.io/busybox": ACCEPT}}},
     "fully expanded"),
    ({"default": ACCEPT, "transports": {"docker": {"*.example.com:5000": ACCEPT}}},
     "wildcard"),
    ({"default": ACCEPT, "transports": {"docker": []}}, "must be an object"),
])
def test_invalid_policies_are_refused_whole(doc: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidDocument, match=message):
        parse_policy(policy(doc))


def test_duplicate_fields_are_refused() -> None:
    with pytest.raises(InvalidDocument, match="duplicate field 'default'"):
        parse_policy(b'{"default": [{"type": "reject"}], "default": '
                     b'[{"type": "insecureAcceptAnything"}]}')


def test_unknown_transports_are_kept_and_fulcio_is_marked_unsupported() -> None:
    p = parse_policy(policy({"default": [{"type": "reject"}], "transports": {
        "docker-daemon": {"": ACCEPT},
        "docker": {"quay.io": [{"type": "sigstoreSigned", "fulcio": {"caPath": "/x"},
                                "rekorPublicKeyPath": "/r"}],
                   "ghcr.io": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/g"}]}}}))
    assert p.transports["docker-daemon"][""][0].accepts_anything
    assert "fulcio" in (p.transports["docker"]["quay.io"][0].unsupported or "")
    assert "GPG" in (p.transports["docker"]["ghcr.io"][0].unsupported or "")


def test_load_policy_skips_an_accept_anything_file_unless_given(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    user = tmp_path / ".config/containers/policy.json"
    user.parent.mkdir(parents=True)
    user.write_bytes(policy({"default": ACCEPT}))
    assert load_policy() is None  # per-user file found, nothing demanded
    user.write_bytes(policy({"default": [{"type": "reject"}]}))
    found = load_policy()
    assert found is not None and found.source == str(user)
    explicit = tmp_path / "p.json"
    explicit.write_bytes(policy({"default": ACCEPT}))
    assert load_policy(explicit) is not None


# Scopes --------------------------------------------------------------------------
def test_scope_candidates_follow_naming_go() -> None:
    ref = parse_reference("registry.example.com:5000/team/sub/app:1.0")
    assert scope_candidates(ref) == [
        "registry.example.com:5000/team/sub/app:1.0", "registry.example.com:5000/team/sub/app",
        "registry.example.com:5000/team/sub", "registry.example.com:5000/team",
        "registry.example.com:5000", "*.example.com", "*.com"]
    pinned = parse_reference(f"busybox@{DIGEST}")
    assert scope_candidates(pinned)[:3] == [f"docker.io/library/busybox@{DIGEST}",
                                            "docker.io/library/busybox", "docker.io/library"]
    layout = LayoutReference("oci", Path("/srv/images/app"), "v1")
    assert scope_candidates(layout) == ["/srv/images/app:v1", "/srv/images/app", "/srv/images",
                                        "/srv"]


def test_most_specific_scope_wins_entirely() -> None:
    p = parse_policy(policy({"default": [{"type": "reject"}], "transports": {"docker": {
        "": [{"type": "reject"}],
        "r.example.com": ACCEPT,
        "r.example.com/team": [{"type": "reject"}],
        "r.example.com/team/app:stable": ACCEPT,
        "*.example.com": [{"type": "reject"}]}}}))
    def scope(text: str) -> str:
        return p.requirements_for(parse_reference(text))[0]
    assert scope("r.example.com/team/app:stable") == \
        'transports.docker["r.example.com/team/app:stable"]'
    assert scope("r.example.com/team/app:other") == 'transports.docker["r.example.com/team"]'
    assert scope("r.example.com/solo") == 'transports.docker["r.example.com"]'
    assert scope("s.example.com/x") == 'transports.docker["*.example.com"]'
    assert scope("docker.io/library/busybox") == 'transports.docker[""]'
    no_docker = parse_policy(policy({"default": ACCEPT, "transports": {"oci": {"": ACCEPT}}}))
    assert no_docker.requirements_for(parse_reference("busybox"))[0] == "default"


# Identities ----------------------------------------------------------------------
TAGGED = parse_reference("r.example.com/app:1")
PINNED = parse_reference(f"r.example.com/app@{DIGEST}")


@pytest.mark.parametrize("rule,image,signed,ok", [
    (Identity(), TAGGED, "r.example.com/app:1", True),
    (Identity(), TAGGED, "r.example.com/app:2", False),
    (Identity(), TAGGED, "r.example.com/app", False),  # trap: cosign's repo-only identity
    (Identity(), PINNED, "r.example.com/app", True),
    (Identity(), PINNED, "r.example.com/app:anything", True),
    (Identity(), PINNED, "r.example.com/other", False),
    (Identity("matchExact"), TAGGED, "r.example.com/app:1", True),
    (Identity("matchExact"), PINNED, "r.example.com/app", False),
    (Identity("matchRepository"), TAGGED, "r.example.com/app", True),
    (Identity("matchRepository"), TAGGED, "r.example.com/app:9", True),
    (Identity("matchRepository"), TAGGED, "r.example.com/app2:1", False),
    (Identity("exactReference", value="r.example.com/app:prod"), TAGGED,
     "r.example.com/app:prod", True),
    (Identity("exactReference", value="r.example.com/app:prod"), TAGGED,
     "r.example.com/app:1", False),
    (Identity("exactRepository", value="docker.io/library/busybox"), TAGGED,
     "busybox:1", True),
    (Identity("exactRepository", value="docker.io/library/busybox"), TAGGED,
     "r.example.com/app:1", False),
    (Identity("remapIdentity", prefix="r.example.com", signed_prefix="docker.io/team"),
     TAGGED, "docker.io/team/app:1", True),
    (Identity("remapIdentity", prefix="r.example.com", signed_prefix="docker.io/team"),
     TAGGED, "r.example.com/app:1", False),
    (Identity(), TAGGED, "NOT A REF", False),
])
def test_signed_identity_rules(rule: Identity, image: object, signed: str, ok: bool) -> None:
    problem = identity_problem(rule, image, signed)  # type: ignore[arg-type]
    assert (problem is None) is ok, problem


def test_repo_only_identity_rejection_explains_the_fix() -> None:
    problem = identity_problem(Identity(), TAGGED, "r.example.com/app") or ""
    assert "matchRepository" in problem and "r.example.com/app:1" in problem


# Enforcement ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def signer() -> tuple[keys.PrivateKey, bytes]:
    key = keys.load_private_key(keys.generate_key_pair(b"")[0], b"")
    return key, keys.public_pem(key.public_key())


def signature(key: keys.PrivateKey, identity: str, digest: Digest, index: int = 1) -> Signature:
    payload = make_payload(identity, digest)
    return Signature(index, payload, keys.sign_bytes(key, payload))


def signed_policy(pub: bytes, **extra: object) -> bytes:
    req = {"type": "sigstoreSigned", "keyData": base64.b64encode(pub).decode(), **extra}
    return policy({"default": [{"type": "reject"}],
                   "transports": {"docker": {"r.example.com": [req]}}})


def test_enforce_accepts_one_good_signature_among_bad(signer) -> None:  # type: ignore[no-untyped-def]
    key, pub = signer
    stranger = keys.load_private_key(keys.generate_key_pair(b"")[0], b"")
    sigs = [signature(stranger, "r.example.com/app:1", DIGEST, 1),
            signature(key, "r.example.com/app:1", OTHER, 2),
            signature(key, "r.example.com/app:1", DIGEST, 3)]
    accepted = enforce(parse_policy(signed_policy(pub)), TAGGED, DIGEST, lambda: sigs)
    assert [p.manifest_digest for p in accepted] == [DIGEST]


@pytest.mark.parametrize("case,message", [
    ("none", "no signature exists"),
    ("wrong-key", "invalid signature"),
    ("tampered", "invalid signature"),
    ("other-digest", "not sha256:"),
    ("identity", 'identity "r.example.com/app:2" is not accepted'),
    ("problem", "payload unreadable"),
])
def test_enforce_rejects_and_names_the_requirement(signer, case: str,  # type: ignore[no-untyped-def]
                                                   message: str) -> None:
    key, pub = signer
    good = signature(key, "r.example.com/app:1", DIGEST)
    sigs = {
        "none": [],
        "wrong-key": [signature(keys.load_private_key(keys.generate_key_pair(b"")[0], b""),
                                "r.example.com/app:1", DIGEST)],
        "tampered": [Signature(1, good.payload.replace(b"app:1", b"app:2"), good.signature)],
        "other-digest": [signature(key, "r.example.com/app:1", OTHER)],
        "identity": [signature(key, "r.example.com/app:2", DIGEST)],
        "problem": [Signature(1, problem="payload unreadable: gone")],
    }[case]
    with pytest.raises(PolicyDenied) as err:
        enforce(parse_policy(signed_policy(pub), "p.json"), TAGGED, DIGEST, lambda: sigs)
    text = err.value.message
    assert message in text
    assert 'p.json: transports.docker["r.example.com"][0] (sigstoreSigned with keyData)' in text


def test_every_requirement_must_hold(signer) -> None:  # type: ignore[no-untyped-def]
    key, pub = signer
    req = {"type": "sigstoreSigned", "keyData": base64.b64encode(pub).decode()}
    p = parse_policy(policy({"default": [req, {"type": "reject"}]}))
    with pytest.raises(PolicyDenied, match=r"default\[1\] \(reject\)"):
        enforce(p, TAGGED, DIGEST, lambda: [signature(key, "r.example.com/app:1", DIGEST)])


def test_unreadable_key_file_fails_every_verification(signer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key, pub = signer
    good = tmp_path / "good.pub"
    good.write_bytes(pub)
    p = parse_policy(policy({"default": [{"type": "sigstoreSigned",
                                          "keyPaths": [str(good), str(tmp_path / "gone")]}]}))
    with pytest.raises(PolicyDenied, match="cannot read key file"):
        enforce(p, TAGGED, DIGEST, lambda: [signature(key, "r.example.com/app:1", DIGEST)])


def test_signatures_are_fetched_only_when_needed_and_layouts_have_none(signer) -> None:  # type: ignore[no-untyped-def]
    _key, pub = signer
    def boom() -> list[Signature]:
        raise AssertionError("fetched")
    enforce(parse_policy(policy({"default": ACCEPT})), TAGGED, DIGEST, boom)
    layout = LayoutReference("oci", Path("/srv/l"), "v1")
    p = parse_policy(policy({"default": [{"type": "sigstoreSigned",
                                          "keyData": base64.b64encode(pub).decode()}]}))
    with pytest.raises(PolicyDenied, match="oci layouts carry no cosign signatures"):
        enforce(p, layout, DIGEST, boom)


def test_refuse_early_for_reject_and_unsupported() -> None:
    p = parse_policy(policy({"default": [{"type": "reject"}], "transports": {"docker": {
        "r.example.com": ACCEPT,
        "k.example.com": [{"type": "sigstoreSigned", "keyPath": "/k",
                           "rekorPublicKeyPath": "/r"}]}}}))
    refuse_early(p, TAGGED, "pull")
    with pytest.raises(PolicyDenied, match=r"default\[0\] \(reject\)"):
        refuse_early(p, parse_reference("busybox"), "pull")
    with pytest.raises(PolicyDenied, match="Rekor"):
        refuse_early(p, parse_reference("k.example.com/x"), "pull")


def test_signature_is_checked_before_the_payload_is_parsed(signer) -> None:  # type: ignore[no-untyped-def]
    """A payload that does not verify is never parsed: garbage under a bad signature is
    reported as a bad signature, not as a parse error an attacker could steer."""
    key, _pub = signer
    garbage = b'{"critical": "not even the right shape"'
    verdict = check_signatures([Signature(1, garbage, b"\x30\x00")], [key.public_key()], DIGEST)
    assert verdict.rejections == ["signature 1: invalid signature (made with another key, "
                                  "or the payload was changed)"]


def test_raw_r_s_signatures_are_refused_like_sigstore_does(signer) -> None:  # type: ignore[no-untyped-def]
    """sigstore's verifier wants ASN.1 DER; a 64-byte r||s signature (HSMs) is invalid."""
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    key, _pub = signer
    good = signature(key, "r.example.com/app:1", DIGEST)
    r, s = decode_dss_signature(good.signature)
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert check_signatures([good], [key.public_key()], DIGEST).accepted
    verdict = check_signatures([Signature(1, good.payload, raw)], [key.public_key()], DIGEST)
    assert not verdict.accepted and "invalid signature" in verdict.rejections[0]


def test_a_distribution_default_policy_with_gpg_rules() -> None:
    """The shape RHEL/Fedora ship (signedBy GPG for Red Hat's registries, docker-daemon
    accepted): parsed, enforced only where it asks for signatures, and the GPG rule is
    refused with its reason rather than silently passed."""
    gpg = [{"type": "signedBy", "keyType": "GPGKeys",
            "keyPaths": ["/etc/pki/rpm-gpg/RPM-GPG-KEY-redhat-release",
                         "/etc/pki/rpm-gpg/RPM-GPG-KEY-redhat-beta"]}]
    p = parse_policy(policy({"default": ACCEPT, "transports": {
        "docker": {"registry.access.redhat.com": gpg, "registry.redhat.io": gpg},
        "docker-daemon": {"": ACCEPT}}}))
    assert p.demands_anything()
    enforce(p, parse_reference("docker.io/library/busybox"), DIGEST, list)
    with pytest.raises(PolicyDenied, match="signedBy .GPG simple signing. is not supported"):
        refuse_early(p, parse_reference("registry.redhat.io/ubi9/ubi:latest"), "pull")
