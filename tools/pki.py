"""A throwaway PKI for `make dev` and the tests: one CA and a certificate per master, server and
operator client, each naming its identity (tasks/tls.py) in a SAN URI.

Never for production: the CA key is written next to the certificates and nothing is revocable.
Production certificates come from the operator's CA or cert-manager (docs/SECURITY.md).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tasks.tls import Identity, identity_uri, master_tls_name

VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class IssuedCert:
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class DevPki:
    directory: Path
    ca_file: Path
    certs: dict[tuple[str, str], IssuedCert]  # (role, id) -> files
    cluster: str = ""
    ca_key_file: Path | None = None


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA certificate and its key."""
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, identity: Identity,
          ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf certificate for `identity`: SAN URI identity_uri(identity), DNS localhost, IP
    127.0.0.1 (and a master's DNS master_tls_name); usable as TLS server and client."""
    key = _key()
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(identity_uri(identity)),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    if identity.role == "master":
        names.append(x509.DNSName(master_tls_name(identity.cluster)))
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, f"{identity.role}/{identity.id}"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, identity.cluster),
    ])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_encipherment=False, key_cert_sign=False, crl_sign=False,
            content_commitment=False, data_encipherment=False, key_agreement=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def write_dev_pki(directory: Path, *, cluster: str, masters: Iterable[str],
                  servers: Iterable[str], clients: Iterable[str] = ("operator",)) -> DevPki:
    """Write `ca.pem` (+ `ca.key`) and `<role>-<id>.pem` / `.key` for every party into
    `directory`; the key files are mode 0600."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = make_ca(f"exportd dev CA ({cluster})")
    ca_file, ca_key_file = directory / "ca.pem", directory / "ca.key"
    _write_cert(ca_file, ca_cert)
    _write_key(ca_key_file, ca_key)
    certs: dict[tuple[str, str], IssuedCert] = {}
    parties = [("master", m) for m in masters] + [("server", s) for s in servers] + [
        ("client", c) for c in clients]
    for role, ident in parties:
        cert, key = issue(ca_cert, ca_key, Identity(cluster=cluster, role=role, id=ident))
        stem = f"{role}-{ident}".replace("/", "_")
        issued = IssuedCert(cert_file=directory / f"{stem}.pem", key_file=directory / f"{stem}.key")
        _write_cert(issued.cert_file, cert)
        _write_key(issued.key_file, key)
        certs[(role, ident)] = issued
    return DevPki(directory=directory, ca_file=ca_file, certs=certs, cluster=cluster,
                  ca_key_file=ca_key_file)


def add_cert(pki: DevPki, role: str, ident: str, *, cluster: str | None = None) -> IssuedCert:
    """Issue one more certificate from `pki`'s CA (a server added later, or one naming another
    cluster for a test); it is added to `pki.certs` when it names pki's own cluster."""
    if pki.ca_key_file is None:
        raise ValueError("this PKI has no CA key")
    ca_cert = x509.load_pem_x509_certificate(pki.ca_file.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key_file.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the dev CA key is an EC key")
    the_cluster = cluster if cluster is not None else pki.cluster
    cert, key = issue(ca_cert, ca_key, Identity(cluster=the_cluster, role=role, id=ident))
    stem = f"{role}-{ident}".replace("/", "_")
    if the_cluster != pki.cluster:
        stem = f"{the_cluster}-{stem}"
    issued = IssuedCert(cert_file=pki.directory / f"{stem}.pem",
                        key_file=pki.directory / f"{stem}.key")
    _write_cert(issued.cert_file, cert)
    _write_key(issued.key_file, key)
    if the_cluster == pki.cluster:
        pki.certs[(role, ident)] = issued
    return issued


_other_cluster: dict[tuple[Path, str, str, str], IssuedCert] = {}


def tls_settings_for(pki: DevPki, role: str, id: str, *,
                     cluster: str | None = None) -> dict[str, str]:
    """The `tls:` settings block of party (role, id), as a dict (issued on demand from the CA
    if it is not in the PKI yet). `cluster`: a party of another cluster, signed by the same CA
    (tests give every test a cluster of its own)."""
    if cluster is None or cluster == pki.cluster:
        issued = pki.certs.get((role, id)) or add_cert(pki, role, id)
    else:
        issued = _other_cluster.get((pki.directory, cluster, role, id)) or add_cert(
            pki, role, id, cluster=cluster)
        _other_cluster[(pki.directory, cluster, role, id)] = issued
    return {"ca_file": str(pki.ca_file), "cert_file": str(issued.cert_file),
            "key_file": str(issued.key_file)}
