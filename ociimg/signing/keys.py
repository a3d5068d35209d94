"""cosign key files: the encrypted private key and the public key (no I/O here).

The private key file is a PEM block whose body is go-securesystemslib's "encrypted"
JSON envelope (``encrypted/encrypted.go``)::

    {"kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1}, "salt": b64},
     "cipher": {"name": "nacl/secretbox", "nonce": b64}, "ciphertext": b64}

key = scrypt(password, salt, N, r, p, 32 bytes); plaintext = secretbox_open(ciphertext,
nonce, key) (XSalsa20-Poly1305, tag first); plaintext = PKCS#8 DER of an ECDSA P-256
key. cosign writes ``ENCRYPTED SIGSTORE PRIVATE KEY`` today and ``ENCRYPTED COSIGN
PRIVATE KEY`` before; both are read. We write the COSIGN type: containers/image in
skopeo 1.9 and podman 4.3 accept only that one. The public key is a PKIX ``PUBLIC KEY``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ociimg.errors import InvalidDocument, SignatureInvalid

COSIGN_PEM_TYPE = "ENCRYPTED COSIGN PRIVATE KEY"
SIGSTORE_PEM_TYPE = "ENCRYPTED SIGSTORE PRIVATE KEY"
PRIVATE_PEM_TYPES = (COSIGN_PEM_TYPE, SIGSTORE_PEM_TYPE)
# encrypted.go CheckParams: any other cost is refused, or a key file could make us
# spend gigabytes of memory (N=2^15 was cosign's default, 2^16 is today's).
ALLOWED_SCRYPT_N = frozenset({1 << 15, 1 << 16, 1 << 17})
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 15, 8, 1
MAX_KEY_FILE = 64 << 10

PrivateKey = ec.EllipticCurvePrivateKey
PublicKey = ec.EllipticCurvePublicKey


def generate_key_pair(password: bytes) -> tuple[bytes, bytes]:
    """A new ECDSA P-256 key: (encrypted private PEM, public PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return encrypt_private_key(key, password), public_pem(key.public_key())


def public_pem(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def encrypt_private_key(key: PrivateKey, password: bytes) -> bytes:
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    from nacl.secret import SecretBox  # libsodium: cryptography has no XSalsa20

    salt, nonce = os.urandom(32), os.urandom(SecretBox.NONCE_SIZE)
    box = SecretBox(_derive(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P))
    sealed = box.encrypt(der, nonce).ciphertext  # Poly1305 tag, then the ciphertext
    envelope = {
        "kdf": {"name": "scrypt", "params": {"N": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P},
                "salt": _b64(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
        "ciphertext": _b64(sealed),
    }
    return pem_encode(COSIGN_PEM_TYPE, json.dumps(envelope, separators=(",", ":")).encode())


def load_private_key(data: bytes, password: bytes, where: str = "private key") -> PrivateKey:
    """Decrypt a cosign private key file; a wrong password is SignatureInvalid."""
    body = pem_decode(data, where, PRIVATE_PEM_TYPES,
                      hint="cosign keys are ENCRYPTED COSIGN/SIGSTORE PRIVATE KEY; create one "
                           "with `ociimg key generate`")
    envelope = _parse_envelope(body, where)
    salt, (n, r, p), nonce, sealed = envelope
    from nacl.exceptions import CryptoError
    from nacl.secret import SecretBox

    if len(nonce) != SecretBox.NONCE_SIZE:
        raise InvalidDocument(f"{where}: cipher.nonce is {len(nonce)} bytes, expected 24")
    try:
        der = SecretBox(_derive(password, salt, n, r, p)).decrypt(sealed, nonce)
    except CryptoError:
        raise SignatureInvalid(f"{where}: decryption failed: wrong password or corrupt key",
                               hint="give the password in COSIGN_PASSWORD") from None
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidDocument(f"{where}: the decrypted key is not PKCS#8 ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidDocument(f"{where}: only ECDSA keys are supported")
    return key


def load_public_key(data: bytes, where: str = "public key") -> PublicKey:
    body = pem_decode(data, where, ("PUBLIC KEY",),
                      hint="give the cosign.pub file, not the private key")
    try:
        key = serialization.load_der_public_key(body)
    except (ValueError, TypeError) as exc:
        raise InvalidDocument(f"{where}: not a PKIX public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise InvalidDocument(f"{where}: only ECDSA public keys are supported")
    return key


def sign_bytes(key: PrivateKey, payload: bytes) -> bytes:
    """ECDSA over SHA-256 of the exact bytes, ASN.1 DER (what sigstore's verifier wants)."""
    return key.sign(payload, ec.ECDSA(hashes.SHA256()))


def verify_bytes(key: PublicKey, payload: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def same_key(a: PublicKey, b: PublicKey) -> bool:
    return public_pem(a) == public_pem(b)


# PEM and the envelope --------------------------------------------------------
def pem_encode(pem_type: str, body: bytes) -> bytes:
    text = base64.b64encode(body).decode()
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    return "\n".join([f"-----BEGIN {pem_type}-----", *lines, f"-----END {pem_type}-----",
                      ""]).encode()


def pem_decode(data: bytes, where: str, types: tuple[str, ...], hint: str) -> bytes:
    """The body of the first PEM block, which must be one of ``types`` (checked first:
    an openssl-encrypted key has headers no cosign file has)."""
    if len(data) > MAX_KEY_FILE:
        raise InvalidDocument(f"{where}: {len(data)} bytes; a key file is at most "
                              f"{MAX_KEY_FILE}")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidDocument(f"{where}: not a PEM file (binary data)") from None
    lines = [line.strip() for line in text.splitlines()]
    begin = next((i for i, line in enumerate(lines) if line.startswith("-----BEGIN ")), None)
    if begin is None or not lines[begin].endswith("-----"):
        raise InvalidDocument(f"{where}: no PEM block found")
    pem_type = lines[begin][len("-----BEGIN "):-len("-----")]
    if pem_type not in types:
        raise InvalidDocument(f"{where}: PEM type {pem_type[:60]!r} is not "
                              f"{' or '.join(types)}", hint=hint)
    end = f"-----END {pem_type}-----"
    if end not in lines[begin + 1:]:
        raise InvalidDocument(f"{where}: PEM block {pem_type!r} has no END line")
    body = "".join(lines[begin + 1:lines.index(end, begin + 1)])
    return _unb64(body, f"{where}: PEM body")


def _parse_envelope(body: bytes, where: str) -> tuple[bytes, tuple[int, int, int], bytes, bytes]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidDocument(f"{where}: the PEM body is not the encrypted-key JSON") from None
    kdf, cipher = _obj(doc, "kdf", where), _obj(doc, "cipher", where)
    if kdf.get("name") != "scrypt":
        raise InvalidDocument(f"{where}: kdf {str(kdf.get('name'))[:40]!r} is not scrypt")
    if cipher.get("name") != "nacl/secretbox":
        raise InvalidDocument(f"{where}: cipher {str(cipher.get('name'))[:40]!r} is not "
                              "nacl/secretbox")
    params = _obj(kdf, "params", f"{where}: kdf")
    n, r, p = params.get("N"), params.get("r"), params.get("p")
    if any(type(v) is not int for v in (n, r, p)) or n not in ALLOWED_SCRYPT_N or \
            (r, p) != (8, 1):
        raise InvalidDocument(f"{where}: scrypt parameters N={str(n)[:20]} r={str(r)[:20]} "
                              f"p={str(p)[:20]} are not allowed",
                              hint="cosign accepts N of 32768, 65536 or 131072 with r=8, p=1")
    salt = _unb64(kdf.get("salt"), f"{where}: kdf.salt")
    nonce = _unb64(cipher.get("nonce"), f"{where}: cipher.nonce")
    sealed = _unb64(doc.get("ciphertext"), f"{where}: ciphertext")
    return salt, (n, r, p), nonce, sealed


def _obj(doc: Any, key: str, where: str) -> dict[str, Any]:
    value = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(value, dict):
        raise InvalidDocument(f"{where}: {key} is missing or not an object")
    return value


def _derive(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    # hashlib.scrypt's default maxmem (32 MiB) refuses every allowed N; cryptography's
    # Scrypt sizes its own buffer.
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(password)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidDocument(f"{where}: missing or not a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidDocument(f"{where}: not valid base64") from None
