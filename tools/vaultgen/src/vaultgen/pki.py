"""The vault's own CA and the leaf certificates it signs (with `cryptography`)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from odbox_common.errors import ToolError as VaultError
from vaultgen.layout import LEAF_DAYS

CA_SUBJECT = x509.Name(
    [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Odoo Box vault"),
        x509.NameAttribute(NameOID.COMMON_NAME, "Odoo Box vault CA"),
    ]
)
CA_DAYS = 3650
RENEW_WITHIN = dt.timedelta(days=30)
BACKDATE = dt.timedelta(hours=1)  # tolerate clocks that are a little behind


def new_private_key_pem() -> bytes:
    """An ECDSA P-256 key: accepted by every TLS stack, small and fast."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(pem: bytes, where: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError as e:
        raise VaultError(
            f"{where} is passphrase-protected: decrypt it first "
            "(openssl pkey -in KEY -out PLAIN) and import PLAIN"
        ) from e
    except ValueError as e:
        raise VaultError(f"{where} is not a PEM private key") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise VaultError(f"{where}: only EC and RSA keys can sign or serve TLS here")
    return key


def load_certs(pem: bytes, where: str) -> list[x509.Certificate]:
    """The certificate and any chain that follows it in the same PEM file."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as e:
        raise VaultError(f"{where} is not a PEM certificate") from e
    return certs


def public_bytes(key: object) -> bytes:
    assert isinstance(
        key,
        ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey,
    )
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def normalize_import(
    cert_pem: bytes, key_pem: bytes, cert_where: str, key_where: str
) -> tuple[bytes, bytes]:
    """The certificate chain alone and the private key alone, both re-encoded: a combined
    key+certificate file must not put the key into the public certificate file."""
    certs = load_certs(cert_pem, cert_where)
    key = load_private_key(key_pem, key_where)
    if public_bytes(key.public_key()) != public_bytes(certs[0].public_key()):
        raise VaultError(
            f"{key_where} is not the private key of {cert_where}; nothing was imported"
        )
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    plain_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return chain, plain_key


def key_matches_cert(key_pem: bytes, cert_pem: bytes, where: str) -> bool:
    key = load_private_key(key_pem, where)
    cert = load_certs(cert_pem, where)[0]
    return public_bytes(key.public_key()) == public_bytes(cert.public_key())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: Any, days: int
) -> x509.CertificateBuilder:
    not_before = _now() - BACKDATE
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=days))
    )


def _key_usage(**allowed: bool) -> x509.KeyUsage:
    usages = [
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    ]
    return x509.KeyUsage(**{usage: allowed.get(usage, False) for usage in usages})


def make_ca_cert(ca_key_pem: bytes) -> bytes:
    key = load_private_key(ca_key_pem, "the CA key")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        _builder(CA_SUBJECT, CA_SUBJECT, key.public_key(), CA_DAYS)
        # One CA may sit below it: the intermediate that odbox.local-ca's step-ca signs with.
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(
            _key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def default_sans(cn: str) -> list[str]:
    """What a leaf is valid for when nothing else is asked: its CN (and loopback for localhost)."""
    return [cn, "127.0.0.1", "::1"] if cn == "localhost" else [cn]


def make_leaf_cert(
    leaf_key_pem: bytes,
    cn: str,
    sans: list[str],
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    days: int = LEAF_DAYS,
) -> bytes:
    if not 1 <= days <= LEAF_DAYS:
        raise VaultError(f"a leaf certificate is valid for 1 to {LEAF_DAYS} days, not {days}")
    key = load_private_key(leaf_key_pem, f"the key of {cn}")
    ca_key = load_private_key(ca_key_pem, "the CA key")
    ca_cert = load_certs(ca_cert_pem, "the CA certificate")[0]
    names = [cn, *(s for s in sans if s != cn)]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        _builder(subject, ca_cert.subject, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(digital_signature=True, key_encipherment=isinstance(key, rsa.RSAPrivateKey)),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class CertInfo:
    common_name: str | None
    sans: list[str]
    not_after: dt.datetime
    not_before: dt.datetime
    is_ca: bool
    server_auth: bool


def cert_info(cert_pem: bytes, where: str) -> CertInfo:
    cert = load_certs(cert_pem, where)[0]
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [str(n.value) for n in san]
    except x509.ExtensionNotFound:
        sans = []
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        server_auth = ExtendedKeyUsageOID.SERVER_AUTH in eku
    except x509.ExtensionNotFound:
        server_auth = True  # no EKU means any use
    return CertInfo(
        common_name=str(cns[0].value) if cns else None,
        sans=sans,
        not_after=cert.not_valid_after_utc,
        not_before=cert.not_valid_before_utc,
        is_ca=is_ca,
        server_auth=server_auth,
    )


def signed_by(cert_pem: bytes, ca_cert_pem: bytes) -> bool:
    cert = load_certs(cert_pem, "certificate")[0]
    ca = load_certs(ca_cert_pem, "CA certificate")[0]
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def tls_server_problem(info: CertInfo, now: dt.datetime | None = None) -> str:
    """Why browsers and TLS clients would reject this as a server certificate, or ""."""
    if info.common_name and info.common_name not in info.sans:
        return f"its CN {info.common_name} is not among its SANs (clients reject it)"
    if not info.server_auth:
        return "not valid for TLS servers (no serverAuth)"
    if info.not_after <= (now or _now()):
        return f"expired on {info.not_after:%Y-%m-%d}"
    return ""


def needs_renewal(info: CertInfo, now: dt.datetime | None = None) -> bool:
    return info.not_after - (now or _now()) < RENEW_WITHIN
