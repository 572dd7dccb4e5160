"""A throw-away certificate authority and a loopback server certificate it signs.

The embedded XRootD servers need TLS for their WebDAV side: XRootD 5.5 loads HTTP external
handlers (the third-party-copy one among them) only once HTTPS is configured. Clients trust
the CA by its file (`ca_file`); XRootD and its libcurl trust it through a hashed CA
directory (`ca_dir`, laid out like /etc/grid-security/certificates).
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kernel.errors import ConfigurationError
from kernel.private_files import write_private


@dataclass(frozen=True)
class TlsMaterial:
    """Paths of a CA certificate, its hashed directory, and one server's certificate and key."""

    ca_file: Path
    ca_dir: Path
    cert_file: Path
    key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Cairn test bed"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _rehash(ca_dir: Path) -> None:
    """Create the `<subject hash>.0` links OpenSSL looks CAs up by."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ConfigurationError(
            "the `openssl` command is needed to hash the test CA directory (apt-get install openssl)"
        )
    subprocess.run([openssl, "rehash", str(ca_dir)], check=True, capture_output=True)


def make_loopback_tls(directory: Path, *, days: int = 2) -> TlsMaterial:
    """Write a new CA and a server certificate for localhost / 127.0.0.1 / ::1 into directory."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Cairn test CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    ca_dir = directory / "certificates"
    ca_dir.mkdir(exist_ok=True)
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca_pem)
    (ca_dir / "cairn-test-ca.pem").write_bytes(ca_pem)
    _rehash(ca_dir)
    cert_file = directory / "hostcert.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file = directory / "hostkey.pem"
    write_private(key_file, _pem_key(key))
    return TlsMaterial(ca_file=ca_file, ca_dir=ca_dir, cert_file=cert_file, key_file=key_file)
