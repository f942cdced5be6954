"""The stack's own CA and one server certificate for every TLS service (Azurite, registry, AML double)."""

from __future__ import annotations

import datetime as dt
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devstack.base import Service, StackContext
from devstack.services.hosts import HOSTNAMES
from devstack.util import write_private

DNS_NAMES = (*HOSTNAMES, "*.blob.local.azurestack.external", "localhost")
IP_ADDRESSES = ("127.0.0.1",)
MIN_REMAINING = dt.timedelta(days=30)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(now: dt.datetime) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge-training devstack CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def make_server(ca_cert_pem: bytes, ca_key_pem: bytes, now: dt.datetime) -> tuple[bytes, bytes]:
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName(n) for n in DNS_NAMES] + [x509.IPAddress(ipaddress.ip_address(a))
                                                   for a in IP_ADDRESSES]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTNAMES[0])]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def server_cert_problem(cert_pem: bytes, ca_pem: bytes, now: dt.datetime) -> str | None:
    """Why the server certificate cannot be reused (None when it can)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    ca = x509.load_pem_x509_certificate(ca_pem)
    if cert.issuer != ca.subject:
        return "server certificate was not issued by the stack CA"
    try:
        cert.verify_directly_issued_by(ca)
    except Exception as exc:  # noqa: BLE001 - any verification failure means regenerate
        return f"server certificate does not verify against the CA: {exc}"
    if cert.not_valid_after_utc - now < MIN_REMAINING:
        return f"server certificate expires {cert.not_valid_after_utc:%Y-%m-%d}"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    have = set(san.get_values_for_type(x509.DNSName)) | {
        str(a) for a in san.get_values_for_type(x509.IPAddress)}
    missing = (set(DNS_NAMES) | set(IP_ADDRESSES)) - have
    if missing:
        return f"server certificate lacks SANs {sorted(missing)}"
    return None


class PkiService(Service):
    name = "pki"

    @property
    def address(self) -> str:  # type: ignore[override]
        return ".devstack/pki"

    def install(self, ctx: StackContext) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        ctx.pki_dir.mkdir(parents=True, exist_ok=True)
        ca_key_file = ctx.pki_dir / "ca.key"
        if not (ctx.ca_file.exists() and ca_key_file.exists()):
            cert, key = make_ca(now)
            write_private(ca_key_file, key)
            ctx.ca_file.write_bytes(cert)
            ctx.server_cert.unlink(missing_ok=True)
        if ctx.server_cert.exists() and ctx.server_key.exists() and server_cert_problem(
                ctx.server_cert.read_bytes(), ctx.ca_file.read_bytes(), now) is None:
            return
        cert, key = make_server(ctx.ca_file.read_bytes(), ca_key_file.read_bytes(), now)
        write_private(ctx.server_key, key)
        ctx.server_cert.write_bytes(cert)

    def start(self, ctx: StackContext) -> str:
        return f"pki: CA {ctx.ca_file} and server certificate ready"

    def health(self, ctx: StackContext) -> tuple[bool, str]:
        if not ctx.server_cert.exists() or not ctx.ca_file.exists():
            return False, "CA or server certificate missing"
        problem = server_cert_problem(ctx.server_cert.read_bytes(), ctx.ca_file.read_bytes(),
                                      dt.datetime.now(dt.timezone.utc))
        return (problem is None), (problem or "CA and server certificate valid")

    def env(self, ctx: StackContext) -> dict[str, str]:
        return {"EDGE_CA_FILE": str(ctx.ca_file)}

    def stop(self, ctx: StackContext) -> str:
        return "pki: nothing to stop"
