"""cosign key files: what we write decrypts by the documented steps alone, what cosign
writes (both PEM types, every allowed scrypt cost, the empty password) we read, and
hostile files are refused without spending the memory or time they ask for."""

from __future__ import annotations

import base64
import hashlib
import json
import time

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nacl.bindings import crypto_secretbox, crypto_secretbox_open

from ociimg.errors import InvalidDocument, SignatureInvalid
from ociimg.signing import keys


def decrypt_by_the_spec(pem: bytes, password: bytes) -> bytes:
    """go-securesystemslib encrypted.Decrypt, step by step, without ociimg: PEM body →
    JSON envelope → scrypt(N, r, p) → secretbox_open → PKCS#8 DER."""
    lines = pem.decode().strip().splitlines()
    envelope = json.loads(base64.b64decode("".join(lines[1:-1])))
    params = envelope["kdf"]["params"]
    key = hashlib.scrypt(password, salt=base64.b64decode(envelope["kdf"]["salt"]),
                         n=params["N"], r=params["r"], p=params["p"], dklen=32,
                         maxmem=256 << 20)
    return crypto_secretbox_open(base64.b64decode(envelope["ciphertext"]),
                                 base64.b64decode(envelope["cipher"]["nonce"]), key)


def write_like_cosign(key: ec.EllipticCurvePrivateKey, password: bytes, *,
                      pem_type: str = keys.SIGSTORE_PEM_TYPE, n: int = 1 << 16, r: int = 8,
                      p: int = 1, salt: bytes = b"s" * 32, nonce: bytes = b"n" * 24) -> bytes:
    """A key file as cosign writes it (the envelope built here, not by ociimg)."""
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    derived = hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=32, maxmem=256 << 20) \
        if n <= 1 << 17 else b"k" * 32
    doc = {"kdf": {"name": "scrypt", "params": {"N": n, "r": r, "p": p},
                   "salt": base64.b64encode(salt).decode()},
           "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
           "ciphertext": base64.b64encode(crypto_secretbox(der, nonce, derived)).decode()}
    body = base64.encodebytes(json.dumps(doc).encode()).decode()
    return f"-----BEGIN {pem_type}-----\n{body}-----END {pem_type}-----\n".encode()


def test_generated_key_decrypts_by_the_documented_steps() -> None:
    private_pem, public_pem = keys.generate_key_pair(b"hunter2")
    assert private_pem.startswith(b"-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n")
    envelope = json.loads(base64.b64decode(b"".join(private_pem.splitlines()[1:-1])))
    assert envelope["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert len(base64.b64decode(envelope["kdf"]["salt"])) == 32
    assert envelope["cipher"]["name"] == "nacl/secretbox"
    der = decrypt_by_the_spec(private_pem, b"hunter2")
    private = serialization.load_der_private_key(der, password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(private.curve, ec.SECP256R1)
    public = serialization.load_pem_public_key(public_pem)
    assert public.public_numbers() == private.public_key().public_numbers()
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")


def test_signature_verifies_with_plain_cryptography() -> None:
    private_pem, public_pem = keys.generate_key_pair(b"")
    key = keys.load_private_key(private_pem, b"")
    payload = b'{"critical":{}}'
    signature = keys.sign_bytes(key, payload)
    public = serialization.load_pem_public_key(public_pem)
    public.verify(signature, payload, ec.ECDSA(hashes.SHA256()))  # raises if not DER/valid


@pytest.mark.parametrize("pem_type", keys.PRIVATE_PEM_TYPES)
@pytest.mark.parametrize("n", sorted(keys.ALLOWED_SCRYPT_N))
def test_reads_both_pem_types_and_every_allowed_cost(pem_type: str, n: int) -> None:
    original = ec.generate_private_key(ec.SECP256R1())
    data = write_like_cosign(original, b"pw", pem_type=pem_type, n=n)
    loaded = keys.load_private_key(data, b"pw")
    assert loaded.private_numbers() == original.private_numbers()


def test_empty_password_is_a_password() -> None:
    original = ec.generate_private_key(ec.SECP256R1())
    data = write_like_cosign(original, b"")
    assert keys.load_private_key(data, b"").private_numbers() == original.private_numbers()
    with pytest.raises(SignatureInvalid):
        keys.load_private_key(data, b" ")


def test_wrong_password_is_refused() -> None:
    private_pem, _ = keys.generate_key_pair(b"right")
    with pytest.raises(SignatureInvalid, match="wrong password"):
        keys.load_private_key(private_pem, b"wrong")


@pytest.mark.parametrize("n,r,p", [(1 << 20, 8, 1), (1 << 14, 8, 1), (1 << 15, 16, 1),
                                   (1 << 15, 8, 2), (32768.0, 8, 1), (True, 8, 1)])
def test_scrypt_costs_outside_the_whitelist_are_refused_at_once(n: object, r: int,
                                                                p: int) -> None:
    # N=2^20 with r=8 would need 1 GiB and seconds: refused before deriving anything.
    data = write_like_cosign(ec.generate_private_key(ec.SECP256R1()), b"pw", n=1 << 15)
    body = json.loads(base64.b64decode(b"".join(data.splitlines()[1:-1])))
    body["kdf"]["params"] = {"N": n, "r": r, "p": p}
    hostile = keys.pem_encode(keys.COSIGN_PEM_TYPE, json.dumps(body).encode())
    start = time.monotonic()
    with pytest.raises(InvalidDocument, match="scrypt parameters"):
        keys.load_private_key(hostile, b"pw")
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("data,message", [
    (b"", "no PEM block"),
    (b"\xff\xfe binary", "binary"),
    (b"x" * (keys.MAX_KEY_FILE + 1), "at most"),
    (b"-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\nAAAA\n", "no END"),
    (b"-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n!!!!\n"
     b"-----END ENCRYPTED COSIGN PRIVATE KEY-----\n", "base64"),
    (keys.pem_encode(keys.COSIGN_PEM_TYPE, b"not json"), "encrypted-key JSON"),
    (keys.pem_encode(keys.COSIGN_PEM_TYPE, b'{"kdf": {"name": "pbkdf2"}, "cipher": {}}'),
     "not scrypt"),
    (keys.pem_encode(keys.COSIGN_PEM_TYPE, b'{"kdf": [], "cipher": {}}'), "kdf"),
])
def test_garbage_key_files_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(InvalidDocument, match=message):
        keys.load_private_key(data, b"pw")


def test_raw_ec_and_openssl_keys_are_not_cosign_keys() -> None:
    """cosign refuses them too (they need import-key-pair): a clear error, not a crash."""
    key = ec.generate_private_key(ec.SECP256R1())
    for fmt in (serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.PrivateFormat.PKCS8):
        pem = key.private_bytes(serialization.Encoding.PEM, fmt,
                                serialization.BestAvailableEncryption(b"pw"))
        with pytest.raises(InvalidDocument, match="is not ENCRYPTED COSIGN PRIVATE KEY or"):
            keys.load_private_key(pem, b"pw")


def test_public_key_loader_refuses_private_keys_and_other_curves_types() -> None:
    private_pem, public_pem = keys.generate_key_pair(b"")
    with pytest.raises(InvalidDocument, match="is not PUBLIC KEY"):
        keys.load_public_key(private_pem)
    from cryptography.hazmat.primitives.asymmetric import ed25519
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    with pytest.raises(InvalidDocument, match="only ECDSA"):
        keys.load_public_key(keys.public_pem(other))  # type: ignore[arg-type]
    assert keys.same_key(keys.load_public_key(public_pem), keys.load_public_key(public_pem))


def test_tampered_ciphertext_is_refused() -> None:
    private_pem, _ = keys.generate_key_pair(b"pw")
    body = json.loads(base64.b64decode(b"".join(private_pem.splitlines()[1:-1])))
    sealed = bytearray(base64.b64decode(body["ciphertext"]))
    sealed[-1] ^= 1
    body["ciphertext"] = base64.b64encode(bytes(sealed)).decode()
    with pytest.raises(SignatureInvalid):
        keys.load_private_key(keys.pem_encode(keys.COSIGN_PEM_TYPE, json.dumps(body).encode()),
                              b"pw")
