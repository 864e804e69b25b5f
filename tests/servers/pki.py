"""A small test PKI made with ``cryptography``: a CA, a server certificate, client certificates.

All keys are ECDSA P-256 (fast to make; TLS 1.2/1.3 support them everywhere). The server
certificate names ``localhost`` and ``127.0.0.1`` in its subjectAltName (RFC 6125: clients match
SANs, not the CN). A client certificate names its partner twice: as subject CN and as a URI SAN
``urn:kcbus:partner:<id>``, the form the HTTPS inbox maps to a partner id.

Files are PEM: ``ca.pem``; ``server.pem`` + ``server.key``; ``clients/<id>.pem`` + ``<id>.key``.
Certificates are valid from one hour ago for 30 days (tests don't depend on the clock beyond that).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["PARTNER_URI_PREFIX", "ClientCert", "TestPKI", "make_pki"]

PARTNER_URI_PREFIX = "urn:kcbus:partner:"


@dataclass(frozen=True)
class ClientCert:
    partner: str
    cert: Path
    key: Path


@dataclass(frozen=True)
class TestPKI:
    """A CA and the certificates it issued; ``client(partner)`` issues on first use."""

    __test__ = False  # not a pytest test class despite the name

    directory: Path
    name: str
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    def client(self, partner: str) -> ClientCert:
        cert = self.directory / "clients" / f"{partner}.pem"
        key = self.directory / "clients" / f"{partner}.key"
        if not cert.exists():
            _issue(self, cert, key, common_name=partner, server=False,
                   uri=PARTNER_URI_PREFIX + partner)
        return ClientCert(partner=partner, cert=cert, key=key)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _issue(pki: TestPKI, cert_path: Path, key_path: Path, *, common_name: str, server: bool,
           uri: str | None = None) -> None:
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    if uri:
        names.append(x509.UniformResourceIdentifier(uri))
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                                 x509.NameAttribute(NameOID.ORGANIZATION_NAME, pki.name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(hours=1))
        .not_valid_after(_now() + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_pki(directory: Path, name: str = "kcbus test CA") -> TestPKI:
    """Create a CA and a server certificate for localhost in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(hours=1))
        .not_valid_after(_now() + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(directory / "ca.key", ca_key)
    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki = TestPKI(directory=directory, name=name, ca_cert=directory / "ca.pem",
                  ca_key=directory / "ca.key", server_cert=directory / "server.pem",
                  server_key=directory / "server.key")
    _issue(pki, pki.server_cert, pki.server_key, common_name="localhost", server=True)
    return pki
