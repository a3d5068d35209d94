"""Signing end to end against a real docker-registry on loopback: `ociimg key generate`,
`sign`, `verify`, and `--policy` on pull, copy and run. What ociimg writes is checked
independently (requests for the registry, plain `cryptography` for the signature, the
documented decryption steps for the key file); every refusal is provoked for real by
rewriting what the registry holds."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import need
from tests.integration import registry_server
from tests.integration.cli_helpers import assert_one_line_error, ociimg
from tests.unit.test_signing_keys import decrypt_by_the_spec

pytestmark = pytest.mark.usefixtures("root")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SIG_ANNOTATION = "dev.cosignproject.cosign/signature"
PASSWORD = {"COSIGN_PASSWORD": "correct horse"}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding cosign.key/cosign.pub made by `ociimg key generate`, and a
    second pair other.key/other.pub."""
    where = tmp_path_factory.mktemp("keys")
    ociimg(where / "root", "key", "generate", cwd=where, env=PASSWORD)
    ociimg(where / "root", "key", "generate", "--output-key-prefix", "other", cwd=where,
           env=PASSWORD)
    return where


@pytest.fixture
def push(registry: registry_server.RegistryServer, fixture_layout: Path, tmp_path: Path,
         request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """push(fixture_tag, name) → "HOST/sign-<test>/<name>:1", pushed by skopeo."""
    prefix = "sign-" + request.node.name.lower().replace("_", "-").replace("[", "-")[:60]
    prefix = "".join(c for c in prefix if c.isalnum() or c == "-").strip("-")

    def do(fixture: str, name: str) -> str:
        ref = f"{registry.host}/{prefix}/{name}:1"
        registry_server.skopeo_copy(f"oci:{fixture_layout}:{fixture}", f"docker://{ref}",
                                    tmp_path, all_images=fixture == "multiarch")
        return ref
    return do


# Direct registry access (requests, not ociimg) ---------------------------------------
def split(ref: str) -> tuple[str, str, str]:
    host, rest = ref.split("/", 1)
    repo, tag = rest.rsplit(":", 1)
    return host, repo, tag


def get_manifest(ref_or_host: str, repo: str | None = None, tag: str | None = None
                 ) -> tuple[bytes, str]:
    host, repo, tag = split(ref_or_host) if repo is None else (ref_or_host, repo, tag)
    resp = requests.get(f"http://{host}/v2/{repo}/manifests/{tag}", timeout=10, headers={
        "Accept": f"{OCI_MANIFEST}, application/vnd.oci.image.index.v1+json, "
                  "application/vnd.docker.distribution.manifest.v2+json"})
    resp.raise_for_status()
    return resp.content, resp.headers["Content-Type"]


def digest_of(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def sig_tag(digest: str) -> str:
    return digest.replace(":", "-") + ".sig"


def get_blob(host: str, repo: str, digest: str) -> bytes:
    resp = requests.get(f"http://{host}/v2/{repo}/blobs/{digest}", timeout=10)
    resp.raise_for_status()
    return resp.content


def put_blob(host: str, repo: str, data: bytes) -> str:
    digest = digest_of(data)
    start = requests.post(f"http://{host}/v2/{repo}/blobs/uploads/", timeout=10)
    location = start.headers["Location"]
    location = location if location.startswith("http") else f"http://{host}{location}"
    sep = "&" if "?" in location else "?"
    requests.put(f"{location}{sep}digest={digest}", data=data, timeout=10).raise_for_status()
    return digest


def put_manifest(host: str, repo: str, tag: str, raw: bytes,
                 media_type: str = OCI_MANIFEST) -> None:
    requests.put(f"http://{host}/v2/{repo}/manifests/{tag}", data=raw, timeout=10,
                 headers={"Content-Type": media_type}).raise_for_status()


def sig_manifest(host: str, repo: str, layers: list[tuple[bytes, str]],
                 media_type: str = OCI_MANIFEST) -> bytes:
    """A .sig manifest built here from (payload, base64 signature) pairs."""
    descs = []
    for payload, signature in layers:
        descs.append({"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                      "digest": put_blob(host, repo, payload), "size": len(payload),
                      "annotations": {SIG_ANNOTATION: signature}})
    config = json.dumps({"rootfs": {"type": "layers",
                                    "diff_ids": [d["digest"] for d in descs]}}).encode()
    return json.dumps({"schemaVersion": 2, "mediaType": media_type,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": put_blob(host, repo, config),
                                  "size": len(config)},
                       "layers": descs}).encode()


def private_key(keys: Path, name: str = "cosign") -> ec.EllipticCurvePrivateKey:
    der = decrypt_by_the_spec((keys / f"{name}.key").read_bytes(),
                              PASSWORD["COSIGN_PASSWORD"].encode())
    return serialization.load_der_private_key(der, None)  # type: ignore[return-value]


def cosign_signature(keys: Path, payload: bytes, name: str = "cosign") -> str:
    """A signature made with plain cryptography, as cosign makes it."""
    der = private_key(keys, name).sign(payload, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(der).decode()


def payload_for(identity: str, digest: str) -> bytes:
    return json.dumps({"critical": {"identity": {"docker-reference": identity},
                                    "image": {"docker-manifest-digest": digest},
                                    "type": "cosign container image signature"},
                       "optional": None}).encode()


# Keys ----------------------------------------------------------------------------
def test_key_generate_writes_a_cosign_key_pair(keys: Path, tmp_path: Path) -> None:
    key, pub = keys / "cosign.key", keys / "cosign.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes().startswith(b"-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n")
    public = serialization.load_pem_public_key(pub.read_bytes())
    assert public.public_numbers() == private_key(keys).public_key().public_numbers()
    again = ociimg(tmp_path, "key", "generate", cwd=keys, env=PASSWORD, check=False)
    assert_one_line_error(again, "cosign.key already exists")
    assert public.public_numbers() == serialization.load_pem_public_key(
        pub.read_bytes()).public_numbers()


def test_key_generate_password_from_stdin_or_an_empty_cosign_password(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COSIGN_PASSWORD", raising=False)
    ociimg(tmp_path / "root", "key", "generate", cwd=tmp_path, input="from stdin\n")
    decrypt_by_the_spec((tmp_path / "cosign.key").read_bytes(), b"from stdin")
    ociimg(tmp_path / "root", "key", "generate", "--force", cwd=tmp_path,
           input="from stdin\n", env={"COSIGN_PASSWORD": ""})
    decrypt_by_the_spec((tmp_path / "cosign.key").read_bytes(), b"")  # the env wins


# Sign and verify -------------------------------------------------------------------
def test_sign_writes_what_cosign_and_containers_image_read(keys: Path, push) -> None:  # type: ignore[no-untyped-def]
    ref = push("busybox", "app")
    host, repo, _tag = split(ref)
    proc = ociimg(keys / "root", "sign", "--key", str(keys / "cosign.key"), ref, cwd=keys,
                  env=PASSWORD)
    raw, _ = get_manifest(ref)
    digest = digest_of(raw)
    assert f"signed {digest} as {ref}" in proc.stdout
    assert "no transparency log entry (offline signature)" in proc.stderr
    sig_raw, media_type = get_manifest(host, repo, sig_tag(digest))
    assert media_type == OCI_MANIFEST
    sig = json.loads(sig_raw)
    assert sig["mediaType"] == OCI_MANIFEST and len(sig["layers"]) == 1
    layer = sig["layers"][0]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    config = json.loads(get_blob(host, repo, sig["config"]["digest"]))
    assert config["rootfs"] == {"type": "layers", "diff_ids": [layer["digest"]]}
    payload = get_blob(host, repo, layer["digest"])
    doc = json.loads(payload)
    assert doc == {"critical": {"identity": {"docker-reference": ref},
                                "image": {"docker-manifest-digest": digest},
                                "type": "cosign container image signature"},
                   "optional": None}
    public = serialization.load_pem_public_key((keys / "cosign.pub").read_bytes())
    public.verify(base64.b64decode(layer["annotations"][SIG_ANNOTATION]), payload,
                  ec.ECDSA(hashes.SHA256()))

    ok = ociimg(keys / "root", "verify", "--key", str(keys / "cosign.pub"), ref)
    assert f"1 signature(s) over {digest}" in ok.stdout
    as_json = ociimg(keys / "root", "verify", "--json", "--key", str(keys / "cosign.pub"), ref)
    assert json.loads(as_json.stdout) == [doc]


def test_signing_again_adds_nothing_and_another_key_appends(keys: Path, push) -> None:  # type: ignore[no-untyped-def]
    ref = push("busybox", "app")
    host, repo, _ = split(ref)
    for _ in range(2):
        ociimg(keys / "root", "sign", "--key", str(keys / "cosign.key"), ref, env=PASSWORD)
    again = ociimg(keys / "root", "sign", "--key", str(keys / "cosign.key"), ref, env=PASSWORD)
    assert again.stdout.startswith("already signed")
    ociimg(keys / "root", "sign", "--key", str(keys / "other.key"), ref, env=PASSWORD)
    digest = digest_of(get_manifest(ref)[0])
    sig = json.loads(get_manifest(host, repo, sig_tag(digest))[0])
    assert len(sig["layers"]) == 2
    for name in ("cosign", "other"):
        ociimg(keys / "root", "verify", "--key", str(keys / f"{name}.pub"), ref)


def test_concurrent_signers_lose_no_signature(keys: Path, push, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Each signer rewrites the .sig manifest: one that races another must merge again
    rather than drop the other's signature (read-modify-write, checked after the PUT)."""
    ref = push("busybox", "app")
    signers = 6
    for i in range(signers):
        ociimg(tmp_path, "key", "generate", "--output-key-prefix", f"k{i}", cwd=tmp_path,
               env=PASSWORD)
    env = {**os.environ, **PASSWORD, "OCIIMG_ROOT": str(tmp_path / "root"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [subprocess.Popen([sys.executable, "-m", "ociimg", "sign", "--key",
                               str(tmp_path / f"k{i}.key"), ref], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(signers)]
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    host, repo, _ = split(ref)
    sig = json.loads(get_manifest(host, repo, sig_tag(digest_of(get_manifest(ref)[0])))[0])
    assert len(sig["layers"]) == signers
    for i in range(signers):
        ociimg(tmp_path, "verify", "--key", str(tmp_path / f"k{i}.pub"), ref)


def test_signing_an_index_signs_every_platform_manifest(keys: Path, push) -> None:  # type: ignore[no-untyped-def]
    ref = push("multiarch", "multi")
    host, repo, _ = split(ref)
    ociimg(keys / "root", "sign", "--key", str(keys / "cosign.key"), ref, env=PASSWORD)
    index = json.loads(get_manifest(ref)[0])
    for desc in index["manifests"]:
        sig = json.loads(get_manifest(host, repo, sig_tag(desc["digest"]))[0])
        payload = json.loads(get_blob(host, repo, sig["layers"][0]["digest"]))
        assert payload["critical"]["image"]["docker-manifest-digest"] == desc["digest"]
        assert payload["critical"]["identity"]["docker-reference"] == ref


def test_wrong_password_signs_nothing(keys: Path, push) -> None:  # type: ignore[no-untyped-def]
    ref = push("busybox", "app")
    host, repo, _ = split(ref)
    proc = ociimg(keys / "root", "sign", "--key", str(keys / "cosign.key"), ref,
                  env={"COSIGN_PASSWORD": "wrong"}, check=False)
    assert_one_line_error(proc, "wrong password")
    resp = requests.get(f"http://{host}/v2/{repo}/tags/list", timeout=10).json()
    assert resp["tags"] == ["1"]


def refused_verify(keys: Path, ref: str, *needles: str, key: str = "cosign") -> None:
    proc = ociimg(keys / "root", "verify", "--key", str(keys / f"{key}.pub"), ref,
                  check=False)
    assert_one_line_error(proc, *needles)
    assert proc.stdout == ""


def test_verify_refuses_a_missing_signature_and_the_wrong_key(keys: Path, push) -> None:  # type: ignore[no-untyped-def]
    ref = push("busybox", "app")
    refused_verify(keys, ref, "no signature exists for sha256:")
    ociimg(keys / "root", "sign", "--key", str(keys / "cosign.key"), ref, env=PASSWORD)
    refused_verify(keys, ref, "invalid signature", key="other")


def test_verify_refuses_a_tampered_payload(keys: Path, push) -> None:  # type: ignore[no-untyped-def]
    ref = push("busybox", "app")
    host, repo, _ = split(ref)
    digest = digest_of(get_manifest(ref)[0])
    payload = payload_for(ref, digest)
    signature = cosign_signature(keys, payload)
    put_manifest(host, repo, sig_tag(digest), sig_manifest(host, repo, [(payload, signature)]))
    ociimg(keys / "root", "verify", "--key", str(keys / "cosign.pub"), ref)  # as made: valid
    tampered = payload.replace(b'"optional": null', b'"optional": {"creator": "mallory"}')
    assert tampered != payload
    put_manifest(host, repo, sig_tag(digest), sig_manifest(host, repo, [(tampered, signature)]))
    refused_verify(keys, ref, "invalid signature")


def test_verify_refuses_signatures_of_other_digests(keys: Path, push) -> None:  # type: ignore[no-untyped-def]
    """A valid signature for another digest under this image's tag, and a whole .sig
    manifest moved from a signed image onto an unsigned one: both refused."""
    signed, target = push("busybox", "signed"), push("multilayer", "target")
    host, repo, _ = split(target)
    target_digest = digest_of(get_manifest(target)[0])
    other = payload_for(target, "sha256:" + "ab" * 32)
    put_manifest(host, repo, sig_tag(target_digest),
                 sig_manifest(host, repo, [(other, cosign_signature(keys, other))]))
    refused_verify(keys, target, f"not {target_digest}")

    ociimg(keys / "root", "sign", "--key", str(keys / "cosign.key"), signed, env=PASSWORD)
    s_host, s_repo, _ = split(signed)
    signed_digest = digest_of(get_manifest(signed)[0])
    moved, _ = get_manifest(s_host, s_repo, sig_tag(signed_digest))
    sig = json.loads(moved)
    for blob in [sig["config"], *sig["layers"]]:  # the same bytes, in the target's repo
        put_blob(host, repo, get_blob(s_host, s_repo, blob["digest"]))
    put_manifest(host, repo, sig_tag(target_digest), moved)
    refused_verify(keys, target, f"signs manifest {signed_digest}, not {target_digest}")


def test_verify_refuses_garbage_signature_manifests(keys: Path, push) -> None:  # type: ignore[no-untyped-def]
    ref = push("busybox", "app")
    host, repo, _ = split(ref)
    digest = digest_of(get_manifest(ref)[0])
    tag = sig_tag(digest)
    payload = payload_for(ref, digest)
    good = cosign_signature(keys, payload)
    # A Docker v2s2 .sig manifest: containers/image refuses it, so do we.
    put_manifest(host, repo, tag, sig_manifest(
        host, repo, [(payload, good)],
        "application/vnd.docker.distribution.manifest.v2+json"),
        "application/vnd.docker.distribution.manifest.v2+json")
    refused_verify(keys, ref, "not an OCI image manifest")
    # Too many signatures to read: refused as a whole, not fetched one by one.
    many = json.loads(sig_manifest(host, repo, [(payload, good)]))
    many["layers"] = many["layers"] * 300
    put_manifest(host, repo, tag, json.dumps(many).encode())
    refused_verify(keys, ref, "300 signatures; at most 256")
    # Annotations that are not base64, a payload that is not JSON, and one that is huge:
    # each a reason, none fetched beyond its declared size.
    huge = b"{" + b" " * (5 << 20) + b"}"
    doc = json.loads(sig_manifest(host, repo, [(payload, "%%%"), (b"not json",
                                               cosign_signature(keys, b"not json")),
                                               (huge, good)]))
    put_manifest(host, repo, tag, json.dumps(doc).encode())
    refused_verify(keys, ref, "not base64", "not a cosign simple-signing payload",
                   "exceeds 4194304")


# Policy ----------------------------------------------------------------------------
def write_policy(path: Path, host: str, keys: Path, **identity: str) -> Path:
    req = {"type": "sigstoreSigned", "keyPath": str(keys / "cosign.pub")}
    if identity:
        req["signedIdentity"] = identity  # type: ignore[assignment]
    path.write_text(json.dumps({"default": [{"type": "reject"}],
                                "transports": {"docker": {host: [req]}}}))
    return path


def image_names(root: Path) -> list[str]:
    return [row["name"] for row in json.loads(ociimg(root, "images", "--json").stdout)]


def test_pull_policy_admits_signed_and_never_tags_unsigned(keys: Path, push, ociroot: Path,  # type: ignore[no-untyped-def]
                                                           tmp_path: Path) -> None:
    signed, unsigned = push("busybox", "signed"), push("multilayer", "unsigned")
    host = signed.split("/", 1)[0]
    policy = write_policy(tmp_path / "policy.json", host, keys)
    ociimg(keys / "root", "sign", "--key", str(keys / "cosign.key"), signed, env=PASSWORD)
    ociimg(ociroot, "pull", "-q", "--policy", str(policy), signed)
    proc = ociimg(ociroot, "pull", "-q", "--policy", str(policy), unsigned, check=False)
    assert_one_line_error(proc, f'transports.docker["{host}"][0]',
                          "sigstoreSigned with", "no signature exists")
    proc = ociimg(ociroot, "pull", "-q", "--policy", str(policy), "docker.io/library/busybox",
                  check=False)
    assert_one_line_error(proc, "default[0] (reject)")
    assert image_names(ociroot) == [signed]


def test_pull_policy_checks_the_platform_manifest_not_only_the_index(keys: Path, push,  # type: ignore[no-untyped-def]
                                                                     ociroot: Path,
                                                                     tmp_path: Path) -> None:
    ref = push("multiarch", "multi")
    host, repo, _ = split(ref)
    policy = write_policy(tmp_path / "policy.json", host, keys)
    index_raw = get_manifest(ref)[0]
    payload = payload_for(ref, digest_of(index_raw))  # the index alone is signed
    put_manifest(host, repo, sig_tag(digest_of(index_raw)),
                 sig_manifest(host, repo, [(payload, cosign_signature(keys, payload))]))
    proc = ociimg(ociroot, "pull", "-q", "--platform", "linux/amd64", "--policy", str(policy),
                  ref, check=False)
    amd64 = next(d["digest"] for d in json.loads(index_raw)["manifests"]
                 if d.get("platform", {}).get("architecture") == "amd64")
    assert_one_line_error(proc, f"no signature exists for {amd64}")
    assert image_names(ociroot) == []
    ociimg(keys / "root", "sign", "--key", str(keys / "cosign.key"), ref, env=PASSWORD)
    ociimg(ociroot, "pull", "-q", "--platform", "linux/amd64", "--policy", str(policy), ref)
    ociimg(ociroot, "pull", "-q", "--all-platforms", "--policy", str(policy), ref)
    assert image_names(ociroot) == [ref]


def test_pull_policy_identity_rules(keys: Path, push, ociroot: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A signature copied (by skopeo, with sigstore attachments) to another repository
    keeps its identity: the default matchRepoDigestOrExact refuses it there, and
    matchRepository too; exactRepository naming the original admits it."""
    original = push("busybox", "original")
    host = original.split("/", 1)[0]
    ociimg(keys / "root", "sign", "--key", str(keys / "cosign.key"), original, env=PASSWORD)
    copied = original.replace("/original:", "/copied:")
    registries_d = tmp_path / "registries.d"
    registries_d.mkdir()
    (registries_d / "default.yaml").write_text("default-docker:\n  use-sigstore-attachments: "
                                               "true\n")
    accept = tmp_path / "accept.json"
    accept.write_text(json.dumps(registry_server.POLICY))
    subprocess.run(["skopeo", "--policy", str(accept), "--registries.d", str(registries_d),
                    "copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false",
                    f"docker://{original}", f"docker://{copied}"], check=True)
    ociimg(keys / "root", "verify", "--key", str(keys / "cosign.pub"), copied)  # copied .sig
    default = write_policy(tmp_path / "default.json", host, keys)
    proc = ociimg(ociroot, "pull", "-q", "--policy", str(default), copied, check=False)
    assert_one_line_error(proc, f'identity "{original}" is not accepted for "{copied}"')
    repo_rule = write_policy(tmp_path / "repo.json", host, keys, type="matchRepository")
    proc = ociimg(ociroot, "pull", "-q", "--policy", str(repo_rule), copied, check=False)
    assert_one_line_error(proc, "by matchRepository")
    exact = write_policy(tmp_path / "exact.json", host, keys, type="exactRepository",
                         dockerRepository=original.rsplit(":", 1)[0])
    ociimg(ociroot, "pull", "-q", "--policy", str(exact), copied)
    assert image_names(ociroot) == [copied]


def test_per_user_policy_is_honoured_without_the_option(keys: Path, push, ociroot: Path,  # type: ignore[no-untyped-def]
                                                        tmp_path: Path) -> None:
    """No --policy: $HOME/.config/containers/policy.json (then /etc's) applies when it
    demands more than insecureAcceptAnything."""
    ref = push("busybox", "app")
    home = tmp_path / "home"
    (home / ".config/containers").mkdir(parents=True)
    write_policy(home / ".config/containers/policy.json", ref.split("/", 1)[0], keys)
    proc = ociimg(ociroot, "pull", "-q", ref, env={"HOME": str(home)}, check=False)
    assert_one_line_error(proc, "no signature exists")
    assert image_names(ociroot) == []
    ociimg(keys / "root", "sign", "--key", str(keys / "cosign.key"), ref, env=PASSWORD)
    ociimg(ociroot, "pull", "-q", ref, env={"HOME": str(home)})


def test_run_policy_never_runs_a_rejected_image(keys: Path, push, ociroot: Path,  # type: ignore[no-untyped-def]
                                                tmp_path: Path) -> None:
    signed, unsigned = push("busybox", "signed"), push("busybox-plain", "unsigned")
    policy = write_policy(tmp_path / "policy.json", signed.split("/", 1)[0], keys)
    ociimg(keys / "root", "sign", "--key", str(keys / "cosign.key"), signed, env=PASSWORD)
    proc = ociimg(ociroot, "run", "--rm", "--policy", str(policy), unsigned, "echo", "ran",
                  check=False)
    assert_one_line_error(proc, "run ", "no signature exists")
    assert "ran" not in proc.stdout
    ociimg(ociroot, "pull", "-q", unsigned)  # present in the store, pulled without policy
    proc = ociimg(ociroot, "run", "--rm", "--policy", str(policy), unsigned, "echo", "ran",
                  check=False)
    assert_one_line_error(proc, "no signature exists")
    assert "ran" not in proc.stdout
    assert json.loads(ociimg(ociroot, "ps", "-a", "--json").stdout) == []
    assert image_names(ociroot) == [unsigned]
    ran = ociimg(ociroot, "run", "--rm", "--policy", str(policy), signed, "echo", "ran")
    assert ran.stdout == "ran\n"


def test_copy_policy_refuses_unsigned_sources(keys: Path, push, fixture_layout: Path,  # type: ignore[no-untyped-def]
                                              ociroot: Path, tmp_path: Path) -> None:
    ref = push("busybox", "app")
    policy = write_policy(tmp_path / "policy.json", ref.split("/", 1)[0], keys)
    dest = tmp_path / "out"
    proc = ociimg(ociroot, "copy", "-q", "--policy", str(policy), ref, f"oci:{dest}:x",
                  check=False)
    assert_one_line_error(proc, "copy ", "no signature exists")
    assert not dest.exists()
    layout_policy = tmp_path / "layout.json"
    layout_policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}],
                                         "transports": {"oci": {str(fixture_layout): [
                                             {"type": "sigstoreSigned",
                                              "keyPath": str(keys / "cosign.pub")}]}}}))
    proc = ociimg(ociroot, "copy", "-q", "--policy", str(layout_policy),
                  f"oci:{fixture_layout}:busybox", f"oci:{dest}:x", check=False)
    assert_one_line_error(proc, f'transports.oci["{fixture_layout}"]', "no signature exists")
    assert not dest.exists()
    ociimg(keys / "root", "sign", "--key", str(keys / "cosign.key"), ref, env=PASSWORD)
    ociimg(ociroot, "copy", "-q", "--policy", str(policy), ref, f"oci:{dest}:x")
    assert (dest / "index.json").is_file()


# Interop: Debian's skopeo/podman find our attachments and enforce "reject" ---------------
def peer(tool: str, policy: Path, ref: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """skopeo copy or podman pull of ``ref`` under ``policy``; registries.d (sigstore
    attachments on) from $HOME/.config/containers, which both read, even as root."""
    home = tmp_path / "home"
    registries_d = home / ".config/containers/registries.d"
    registries_d.mkdir(parents=True, exist_ok=True)
    (registries_d / "default.yaml").write_text("default-docker:\n  use-sigstore-attachments: "
                                               "true\n")
    if tool == "skopeo":
        cmd = ["skopeo", "--policy", str(policy), "copy", "--src-tls-verify=false",
               f"docker://{ref}", f"dir:{tmp_path / 'out'}"]
    else:
        # podman refuses a runroot path longer than 50 characters; one store per call.
        scratch = tempfile.mkdtemp(prefix="ociimg-pod-")
        cmd = ["podman", "--root", f"{scratch}/root", "--runroot", f"{scratch}/run",
               "--storage-driver", "vfs", "pull", "--signature-policy", str(policy),
               "--tls-verify=false", ref]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "HOME": str(home)})
    finally:
        if tool == "podman":
            shutil.rmtree(scratch, ignore_errors=True)


@pytest.mark.parametrize("tool", ["skopeo", "podman"])
def test_peers_find_our_signatures_and_enforce_reject(tool: str, keys: Path, push,  # type: ignore[no-untyped-def]
                                                      tmp_path: Path) -> None:
    """Debian builds containers/image with sigstore verification disabled: a
    sigstoreSigned policy then fails each signature it finds with "sigstore disabled",
    which proves it found and parsed our two; an unsigned image has none to find."""
    need(shutil.which(tool) is not None, f"{tool} missing: apt-get install {tool}")
    signed, unsigned = push("busybox", "signed"), push("busybox-plain", "unsigned")
    ociimg(keys / "root", "sign", "--key", str(keys / "cosign.key"), signed, env=PASSWORD)
    ociimg(keys / "root", "sign", "--key", str(keys / "other.key"), signed, env=PASSWORD)
    policy = write_policy(tmp_path / "policy.json", signed.split("/", 1)[0], keys)
    doc = json.loads(policy.read_text())
    doc["transports"]["dir"] = {"": [{"type": "insecureAcceptAnything"}]}
    policy.write_text(json.dumps(doc))
    found = peer(tool, policy, signed, tmp_path)
    assert found.returncode != 0
    assert "None of the signatures were accepted" in found.stderr, found.stderr
    assert found.stderr.count("sigstore disabled") == 2, found.stderr
    none = peer(tool, policy, unsigned, tmp_path)
    assert none.returncode != 0 and "no signature exists" in none.stderr, none.stderr
    reject = tmp_path / "reject.json"
    reject.write_text(json.dumps({"default": [{"type": "reject"}]}))
    refused = peer(tool, reject, signed, tmp_path)
    assert refused.returncode != 0 and "rejected" in refused.stderr, refused.stderr


def test_store_images_are_judged_by_their_registry_name(keys: Path, push, ociroot: Path,  # type: ignore[no-untyped-def]
                                                        tmp_path: Path) -> None:
    """copy and save from the store (a bare name) check the image's signatures in the
    registry its name points to, as run does; nothing is written when refused."""
    signed, unsigned = push("busybox", "signed"), push("multilayer", "unsigned")
    policy = write_policy(tmp_path / "policy.json", signed.split("/", 1)[0], keys)
    ociimg(keys / "root", "sign", "--key", str(keys / "cosign.key"), signed, env=PASSWORD)
    for ref in (signed, unsigned):
        ociimg(ociroot, "pull", "-q", ref)  # no policy: both in the store
    for dest in (f"oci:{tmp_path / 'layout'}:x", f"docker-archive:{tmp_path / 'x.tar'}"):
        proc = ociimg(ociroot, "copy", "-q", "--policy", str(policy), unsigned, dest,
                      check=False)
        assert_one_line_error(proc, f"copy {unsigned}", "no signature exists")
    assert not (tmp_path / "layout").exists() and not (tmp_path / "x.tar").exists()
    ociimg(ociroot, "copy", "-q", "--policy", str(policy), signed,
           f"docker-archive:{tmp_path / 'x.tar'}")
    assert (tmp_path / "x.tar").is_file()


def test_archives_are_judged_before_they_are_imported(keys: Path, push, ociroot: Path,  # type: ignore[no-untyped-def]
                                                      tmp_path: Path) -> None:
    """run of a docker-archive/oci-archive/dir: under a policy that wants signatures:
    refused before the archive is read into the store (archives carry no signatures)."""
    ref = push("busybox", "app")
    ociimg(ociroot, "pull", "-q", ref)
    archive = tmp_path / "app.tar"
    ociimg(ociroot, "save", "-o", str(archive), ref)
    ociimg(ociroot, "rmi", ref)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}],
                                  "transports": {"docker-archive": {"": [
                                      {"type": "sigstoreSigned",
                                       "keyPath": str(keys / "cosign.pub")}]}}}))
    proc = ociimg(ociroot, "run", "--rm", "--policy", str(policy), f"docker-archive:{archive}",
                  "echo", "ran", check=False)
    assert_one_line_error(proc, 'transports.docker-archive[""][0]', "no cosign signatures")
    assert "ran" not in proc.stdout and image_names(ociroot) == []
    proc = ociimg(ociroot, "copy", "-q", "--policy", str(policy), f"docker-archive:{archive}",
                  f"oci:{tmp_path / 'out'}:x", check=False)
    assert_one_line_error(proc, "no cosign signatures")
    assert not (tmp_path / "out").exists()
