"""`ociimg serve --tcp` with TLS: only clients with a certificate signed by --tls-ca get in
(dockerd's --tlsverify trusts that CA alone, never the system's trust store)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.integration.registry_server import free_port
from tests.integration.runtime_helpers import REPO
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


@dataclass
class Issued:
    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(out: Path, cn: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
           | None, *, ca: bool = False, server: bool = False
           ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Issued]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    signer_cert, signer_key = issuer if issuer else (None, key)
    builder = (x509.CertificateBuilder().subject_name(_name(cn))
               .issuer_name(signer_cert.subject if signer_cert else _name(cn))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False)
    cert = builder.sign(signer_key, hashes.SHA256())
    paths = Issued(out / f"{cn}.pem", out / f"{cn}-key.pem")
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return cert, key, paths


@dataclass
class Pki:
    ca: Issued
    server: Issued
    client: Issued
    rogue_ca: Issued  # a CA the host trusts (as the system store's are), not --tls-ca
    rogue_client: Issued


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca_cert, ca_key, ca = _issue(tmp_path, "ca", None, ca=True)
    *_, server = _issue(tmp_path, "server", (ca_cert, ca_key), server=True)
    *_, client = _issue(tmp_path, "client", (ca_cert, ca_key))
    rogue_cert, rogue_key, rogue_ca = _issue(tmp_path, "rogue-ca", None, ca=True)
    *_, rogue_client = _issue(tmp_path, "rogue-client", (rogue_cert, rogue_key))
    return Pki(ca, server, client, rogue_ca, rogue_client)


@pytest.fixture
def tls_server(ociroot: Path, tmp_path: Path, pki: Pki) -> Iterator[int]:
    port = free_port()
    sock = tmp_path / "s"
    log = tmp_path / "serve.log"
    # SSL_CERT_FILE stands in for the host's trust store (which OpenSSL's default paths read).
    env = {**os.environ, "PYTHONPATH": REPO, "SSL_CERT_FILE": str(pki.rogue_ca.cert)}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ociimg", "--root", str(ociroot), "serve", "-H",
             f"unix://{sock}", "--tcp", f"127.0.0.1:{port}", "--tls-cert", str(pki.server.cert),
             "--tls-key", str(pki.server.key), "--tls-ca", str(pki.ca.cert)],
            env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: _connects(port), "ociimg serve on TCP", proc=proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "Traceback" not in log.read_text(errors="replace")


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except OSError:
        return False
    return True


def _ping(port: int, pki: Pki, client: Issued | None) -> bytes:
    """GET /_ping over TLS with ``client``'s certificate (None: without one)."""
    context = ssl.create_default_context(cafile=str(pki.ca.cert))
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    return data


def test_only_clients_of_the_given_ca_get_in(tls_server: int, pki: Pki) -> None:
    assert _ping(tls_server, pki, pki.client).startswith(b"HTTP/1.1 200")
    for stranger in (None, pki.rogue_client):
        # TLS 1.3 reports the server's refusal on the first read: an alert or a bare EOF.
        try:
            answer = _ping(tls_server, pki, stranger)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            answer = b""
        assert answer == b"", f"{stranger} got in: {answer[:100]!r}"
    assert _ping(tls_server, pki, pki.client).startswith(b"HTTP/1.1 200")
