"""Who a peer is, and the TLS material that proves it: the cluster's identity contract.

Every master, server and operator client holds a certificate from the cluster's CA whose SAN
carries a URI `exportd://<cluster>/<role>/<id>` (docs/SECURITY.md, "Identities"). This module
parses those identities and builds the TLS settings block and the ssl contexts every channel uses
(gRPC sessions, the HTTP API, forwarding between masters). The decisions on an identity ("may this
peer open a session as server X", "is this peer a master of my cluster") are pure functions here
too, so each transport only reads the peer's certificate and asks.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import model_validator

from tasks.errors import ConfigError
from tasks.settings import SettingsModel

SCHEME = "exportd"
ROLES = frozenset(("master", "server", "client"))


@dataclass(frozen=True, slots=True)
class Identity:
    """One party of a cluster as its certificate names it."""

    cluster: str
    role: str          # "master" | "server" | "client"
    id: str


def identity_uri(identity: Identity) -> str:
    """`exportd://<cluster>/<role>/<id>`, each part percent-encoded (ids may hold any char)."""
    return (f"{SCHEME}://{quote(identity.cluster, safe='')}/{quote(identity.role, safe='')}/"
            f"{quote(identity.id, safe='')}")


def parse_identity_uri(uri: str) -> Identity | None:
    """The identity a SAN URI names; None for any other URI (another scheme, a role we do not
    know, an empty or missing part)."""
    prefix = f"{SCHEME}://"
    if not uri.startswith(prefix):
        return None
    parts = uri[len(prefix):].split("/")
    if len(parts) != 3:
        return None
    cluster, role, ident = (unquote(part) for part in parts)
    if not cluster or not ident or role not in ROLES:
        return None
    return Identity(cluster=cluster, role=role, id=ident)


def peer_identities(cert_der: bytes) -> list[Identity]:
    """Every exportd identity in a certificate's SAN URIs (DER); [] for an unreadable one."""
    try:
        cert = x509.load_der_x509_certificate(cert_der)
    except ValueError:
        return []
    return _identities(cert)


def peer_identities_pem(cert_pem: bytes) -> list[Identity]:
    """peer_identities for a PEM certificate (gRPC's auth context gives PEM)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return []
    return _identities(cert)


def _identities(cert: x509.Certificate) -> list[Identity]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    found = (parse_identity_uri(uri) for uri in uris)
    return [identity for identity in found if identity is not None]


def pem_to_der(cert_pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(cert_pem).public_bytes(Encoding.DER)


# --- decisions on a peer's identities (pure) ---------------------------------------------------

def may_open_session(identities: list[Identity], *, cluster: str, server_id: str) -> bool:
    """The leader's question: may a peer holding these identities open a heartbeat session as
    server `server_id` of `cluster`? Only a server certificate naming exactly that server."""
    return any(i.cluster == cluster and i.role == "server" and i.id == server_id
               for i in identities)


def is_cluster_master(identities: list[Identity], *, cluster: str) -> bool:
    """A server's (and a standby's) question: is this peer a master of `cluster`?"""
    return any(i.cluster == cluster and i.role == "master" for i in identities)


def master_tls_name(cluster: str) -> str:
    """The DNS SAN every master certificate of `cluster` carries besides its identity URI.

    gRPC's Python client cannot show the peer's certificate to the application, so a server
    proves "this leader is a master of my cluster" inside the handshake: it connects with this
    name as the expected host name (`grpc.ssl_target_name_override`), which only master
    certificates carry (docs/SECURITY.md, "Identities")."""
    return f"master.{cluster}.exportd"


# --- settings and contexts -------------------------------------------------------------------

class TlsSettings(SettingsModel):
    """The `tls:` block of master and server settings: the cluster CA and this process's
    certificate and key (PEM files). All three are required unless `insecure` is set, which
    turns TLS off altogether (plaintext, unauthenticated: for a trusted lab network only)."""

    ca_file: str = ""      # PEM bundle of the cluster CA
    cert_file: str = ""    # this process's certificate (PEM)
    key_file: str = ""     # its private key (PEM)
    # Explicit opt-out: no TLS on the channels this block covers. Never the default.
    insecure: bool = False

    @model_validator(mode="after")
    def _files_or_insecure(self) -> TlsSettings:
        given = [name for name in ("ca_file", "cert_file", "key_file") if getattr(self, name)]
        if self.insecure and given:
            raise ValueError("tls.insecure cannot be combined with tls files")
        return self

    @property
    def enabled(self) -> bool:
        return not self.insecure

    def require(self) -> None:
        """Raise ConfigError with one clear line unless TLS is configured (or explicitly off)."""
        if self.insecure:
            return
        missing = [f"tls.{name}" for name in ("ca_file", "cert_file", "key_file")
                   if not getattr(self, name)]
        if missing:
            raise ConfigError(
                f"TLS is required: set {', '.join(missing)} (certificates from the cluster CA, "
                "docs/SECURITY.md), or tls.insecure=true to run without it on a trusted network")
        for name in ("ca_file", "cert_file", "key_file"):
            path = Path(getattr(self, name))
            if not path.is_file():
                raise ConfigError(f"tls.{name}: no such file {path}")

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(ca, cert, key) PEM bytes, for gRPC's credentials."""
        self.require()
        try:
            return (Path(self.ca_file).read_bytes(), Path(self.cert_file).read_bytes(),
                    Path(self.key_file).read_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot read TLS files: {exc}") from exc


def server_ssl_context(tls: TlsSettings, *, client_certs: bool) -> ssl.SSLContext:
    """A listener's context: our certificate; with `client_certs`, peers must present one
    from the cluster CA."""
    tls.require()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tls.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert_file, tls.key_file)
    context.verify_mode = ssl.CERT_REQUIRED if client_certs else ssl.CERT_NONE
    return context


def client_ssl_context(tls: TlsSettings) -> ssl.SSLContext:
    """A client's context: verifies the peer against the cluster CA (and its host name) and
    presents our certificate, so a listener requiring client certs knows who we are."""
    tls.require()
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


def files_stamp(tls: TlsSettings) -> tuple[tuple[int, int], ...]:
    """(mtime, size) of the CA, certificate and key files: a listener re-reads its TLS
    configuration when this changes (renewed certificates without a restart)."""
    stamps = []
    for path in (tls.ca_file, tls.cert_file, tls.key_file):
        try:
            st = os.stat(path)
            stamps.append((st.st_mtime_ns, st.st_size))
        except OSError:
            stamps.append((0, 0))
    return tuple(stamps)
