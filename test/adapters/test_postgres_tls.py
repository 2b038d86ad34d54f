"""sslmode verify-full / verify-ca against a CA that is not in the system's store (issue 27).

RDS signs its servers' certificates with its own CAs, which Lambda's system store lacks, so
verify-full failed there. The function zip now carries AWS's bundle (`postgres.CA_BUNDLE`, put
there by `make package`), and a secret or URL may name another CA file (`sslrootcert`, libpq's
name). Here a CA made for the test signs a server certificate for `localhost`, and a real TLS
handshake over a socket pair shows which contexts trust it: no download, no mock of ssl.
"""
from __future__ import annotations

import datetime
import json
import socket
import ssl
import threading
from pathlib import Path

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from totesys_etl.adapters import postgres
from totesys_etl.config import Database


def _certificate(subject: str, key, issuer=None, issuer_key=None, ca: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer.subject if issuer else name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A test CA (its PEM file) and a server context whose certificate that CA signed for localhost."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("totesys-etl test CA", ca_key, ca=True)
    server = _certificate("localhost", server_key, issuer=ca, issuer_key=ca_key)
    ca_file = folder / "test-ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM) + server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(folder / "server.pem")
    return ca_file, server_context


def _handshake(client_context: ssl.SSLContext, server_context: ssl.SSLContext, host: str) -> None:
    """A TLS handshake between the two contexts; raises what the client raises."""
    client_end, server_end = socket.socketpair()

    def serve():
        try:
            with server_context.wrap_socket(server_end, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with client_context.wrap_socket(client_end, server_hostname=host) as tls:
            tls.sendall(b"x")
    finally:
        client_end.close()
        thread.join(timeout=10)


@pytest.fixture
def no_bundle(monkeypatch, tmp_path):
    """A package built without a CA bundle (as in the tests' checkout)."""
    monkeypatch.setattr(postgres, "CA_BUNDLE", tmp_path / "absent.pem")


def test_verify_full_trusts_the_ca_file_given_by_path(pki, no_bundle):
    ca_file, server = pki
    _handshake(postgres.ssl_context("verify-full", str(ca_file)), server, "localhost")


def test_verify_full_without_that_ca_refuses_the_server(pki, no_bundle):
    _, server = pki
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(postgres.ssl_context("verify-full"), server, "localhost")


def test_verify_full_checks_the_host_name_and_verify_ca_does_not(pki, no_bundle):
    ca_file, server = pki
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(postgres.ssl_context("verify-full", str(ca_file)), server, "db.example.com")
    _handshake(postgres.ssl_context("verify-ca", str(ca_file)), server, "db.example.com")


def test_the_bundle_in_the_package_is_trusted_without_naming_it(pki, monkeypatch):
    """What Lambda does: verify-full with no sslrootcert uses the bundle `make package` shipped."""
    ca_file, server = pki
    monkeypatch.setattr(postgres, "CA_BUNDLE", ca_file)
    _handshake(postgres.ssl_context("verify-full"), server, "localhost")
    _handshake(postgres.ssl_context("verify-ca"), server, "localhost")


def test_a_ca_file_that_cannot_be_read_is_a_configuration_error(tmp_path, no_bundle):
    with pytest.raises(postgres.ConfigurationError, match="sslrootcert"):
        postgres.ssl_context("verify-full", str(tmp_path / "missing.pem"))


def test_secret_and_url_carry_sslmode_and_sslrootcert(pki, no_bundle, aws):
    ca_file, server = pki
    secret = {"host": "localhost", "port": 5432, "username": "u", "password": "p", "dbname": "d",
              "sslmode": "verify-full", "sslrootcert": str(ca_file)}
    boto3.client("secretsmanager").create_secret(Name="tls-test/warehouse", SecretString=json.dumps(secret))
    from_secret = postgres.credentials(Database("warehouse", None, "tls-test/warehouse"))
    _handshake(from_secret["ssl_context"], server, "localhost")
    from_url = postgres.parse_url(f"postgresql://u:p@localhost/d?sslmode=verify-full&sslrootcert={ca_file}")
    _handshake(from_url["ssl_context"], server, "localhost")
    assert Path(ca_file).exists()
