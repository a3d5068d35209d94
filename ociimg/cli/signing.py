"""Signature commands: key generate, sign, verify (cosign-compatible key files and
``.sig`` attachments), and the ``--policy`` option pull, copy and run share."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer

from ociimg.cli.app import STATE, app
from ociimg.cli.options import AUTH_FILE, CA_BUNDLE, INSECURE, JSON_OUT, client_options
from ociimg.cli.output import print_json, printable
from ociimg.errors import AlreadyExists, InvalidArgument

POLICY = typer.Option(None, "--policy", help="Signature policy (containers-policy.json); "
                      "default: ~/.config/containers/policy.json, else "
                      "/etc/containers/policy.json, enforced when it asks for more than "
                      "insecureAcceptAnything.")

key_app = typer.Typer(help="cosign key pairs.", no_args_is_help=True, add_completion=False,
                      rich_markup_mode=None)
app.add_typer(key_app, name="key", rich_help_panel="Signatures")
_IN_REGISTRY = "signatures are stored in a registry; give docker://REF"


def read_password(confirm: bool) -> bytes:
    """COSIGN_PASSWORD when set (the empty password is valid), else a prompt on the
    terminal, else a line of stdin, as cosign reads it."""
    if "COSIGN_PASSWORD" in os.environ:
        return os.environ["COSIGN_PASSWORD"].encode()
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n").encode()
    import getpass

    password = getpass.getpass("Enter password for private key: ")
    if confirm and getpass.getpass("Enter password for private key again: ") != password:
        raise InvalidArgument("passwords do not match")
    return password.encode()


@key_app.command("generate")
def key_generate(
    force: bool = typer.Option(False, "--force", help="Overwrite cosign.key/cosign.pub."),
    output_key_prefix: str = typer.Option("cosign", "--output-key-prefix",
                                          help="Write PREFIX.key and PREFIX.pub."),
) -> None:
    """Write an ECDSA P-256 key pair, cosign.key (encrypted) and cosign.pub, here."""
    from ociimg.fsutil import atomic_write
    from ociimg.signing.keys import generate_key_pair

    private, public = Path(f"{output_key_prefix}.key"), Path(f"{output_key_prefix}.pub")
    for path in (private, public):
        if path.exists() and not force:
            raise AlreadyExists(f"{path} already exists", hint="use --force to overwrite it")
    key, pub = generate_key_pair(read_password(confirm=True))
    atomic_write(private, key, mode=0o600)
    atomic_write(public, pub, mode=0o644)
    print(f"Private key written to {private}\nPublic key written to {public}",
          file=sys.stderr)


@app.command(rich_help_panel="Signatures")
def sign(
    image: str = typer.Argument(..., help="Registry reference, e.g. 127.0.0.1:5000/app:1."),
    key: Path = typer.Option(..., "--key", help="cosign private key file (cosign.key)."),
    insecure: bool = INSECURE,
    ca_bundle: Path = CA_BUNDLE,
    auth_file: Path = AUTH_FILE,
    json_out: bool = JSON_OUT,
) -> None:
    """Sign an image in its registry (cosign .sig attachment; an index and each of its
    platform manifests)."""
    from ociimg.reference import parse_registry_name
    from ociimg.signing.images import sign_image
    from ociimg.signing.keys import load_private_key

    ref = parse_registry_name(image, _IN_REGISTRY)
    private = load_private_key(_read(key), read_password(confirm=False), str(key))
    signed = sign_image(ref, private, client_options(insecure, ca_bundle, auth_file))
    if json_out:
        print_json([{"digest": str(s.digest), "identity": s.identity, "added": s.added,
                     "platform": s.platform} for s in signed])
        return
    for s in signed:
        what = "signed" if s.added else "already signed"
        print(printable(f"{what} {s.digest} as {s.identity}"
                        + (f" ({s.platform})" if s.platform else "")))
    print("note: no transparency log entry (offline signature); cosign verifies it with "
          "--insecure-ignore-tlog", file=sys.stderr)


@app.command(rich_help_panel="Signatures")
def verify(
    image: str = typer.Argument(..., help="Registry reference to verify."),
    key: list[Path] = typer.Option(..., "--key", help="cosign public key (cosign.pub); "
                                   "repeat to accept any of several."),
    insecure: bool = INSECURE,
    ca_bundle: Path = CA_BUNDLE,
    auth_file: Path = AUTH_FILE,
    json_out: bool = typer.Option(False, "--json", help="Print the verified payloads."),
) -> None:
    """Check an image's cosign signatures: exit 0 only if one by KEY covers the digest
    REF names now."""
    from ociimg.reference import parse_registry_name
    from ociimg.signing.images import verify_image
    from ociimg.signing.keys import load_public_key

    ref = parse_registry_name(image, _IN_REGISTRY)
    keys = [load_public_key(_read(k), str(k)) for k in key]
    digest, verdict = verify_image(ref, keys, client_options(insecure, ca_bundle, auth_file))
    if json_out:
        print_json([p.to_json() for p in verdict.accepted])
        return
    print(printable(f"Verified {ref}: {len(verdict.accepted)} signature(s) over {digest}"))
    for p in verdict.accepted:
        print(printable(f"  identity: {p.docker_reference}"))
    for r in verdict.rejections:
        print(printable(f"  ignored {r}"))
    print("note: signatures checked against the key only (no transparency log or "
          "certificate)", file=sys.stderr)


def _read(path: Path) -> bytes:
    from ociimg.signing.keys import MAX_KEY_FILE

    with open(path, "rb") as f:
        return f.read(MAX_KEY_FILE + 1)


def policy_verifier(policy_file: Path | None, action: str, insecure: bool = False,
                    ca_bundle: Path | None = None, auth_file: Path | None = None,
                    name: Any = None) -> Any:
    """The pull hook for ``--policy`` (or the default policy when it demands anything);
    None when nothing is to be checked. ``name``: refused at once if its scope rejects
    (a layout or archive is judged in full)."""
    from ociimg.signing.policy import load_policy

    policy = load_policy(policy_file)
    if policy is None:
        return None
    from ociimg.signing.images import PolicyVerifier

    verifier = PolicyVerifier(policy, client_options(insecure, ca_bundle, auth_file), action,
                              STATE.root / "store")
    if name is not None:
        verifier.precheck(name)
    return verifier


def precheck_source(verifier: Any, text: str) -> None:
    """Judge a source before anything is read: a layout or archive in full (they carry
    no signatures), a docker:// reference if its scope rejects. A bare name may be in the
    store: it is judged by its stored name when read."""
    from ociimg.reference import LAYOUT_KINDS, parse_image_name

    if verifier is not None and text.startswith(
            ("docker://", *(f"{kind}:" for kind in LAYOUT_KINDS))):
        verifier.precheck(parse_image_name(text))
