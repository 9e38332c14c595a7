"""tasks.tls and tools.pki: identities in SAN URIs, the decisions on them, and a dev PKI whose
certificates verify against its CA and carry their identity."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from master.settings import MasterSettings
from server.settings import ServerSettings
from tasks.errors import ConfigError
from tasks.tls import (
    Identity,
    TlsSettings,
    client_ssl_context,
    identity_uri,
    is_cluster_master,
    may_open_session,
    parse_identity_uri,
    peer_identities,
    peer_identities_pem,
    pem_to_der,
    server_ssl_context,
)
from tools.pki import add_cert, tls_settings_for, write_dev_pki

pytestmark = pytest.mark.unit


def test_identity_uri_round_trips_even_with_odd_characters() -> None:
    for identity in (Identity("local", "server", "server-2"),
                     Identity("c/1", "master", "m 1%/x"), Identity("prod", "client", "operator")):
        uri = identity_uri(identity)
        assert uri.startswith("exportd://")
        assert parse_identity_uri(uri) == identity
    assert identity_uri(Identity("local", "server", "s1")) == "exportd://local/server/s1"


@pytest.mark.parametrize("uri", [
    "https://local/server/s1", "exportd://local/server", "exportd://local/server/s1/x",
    "exportd://local/admin/s1", "exportd:///server/s1", "exportd://local/server/", "",
])
def test_other_uris_are_no_identity(uri: str) -> None:
    assert parse_identity_uri(uri) is None


def test_session_decision_needs_a_server_cert_naming_exactly_that_server() -> None:
    s2 = [Identity("local", "server", "server-2")]
    assert may_open_session(s2, cluster="local", server_id="server-2")
    assert not may_open_session(s2, cluster="local", server_id="server-3")
    assert not may_open_session(s2, cluster="other", server_id="server-2")
    assert not may_open_session([Identity("local", "master", "server-2")], cluster="local",
                                server_id="server-2")
    assert not may_open_session([], cluster="local", server_id="server-2")


def test_master_decision_needs_a_master_of_this_cluster() -> None:
    assert is_cluster_master([Identity("local", "master", "m1")], cluster="local")
    assert not is_cluster_master([Identity("other", "master", "m1")], cluster="local")
    assert not is_cluster_master([Identity("local", "server", "m1")], cluster="local")
    assert not is_cluster_master([], cluster="local")


def test_dev_pki_certs_verify_against_the_ca_and_carry_their_identity(tmp_path: Path) -> None:
    pki = write_dev_pki(tmp_path, cluster="local", masters=["m1"], servers=["s1", "s2"])
    assert set(pki.certs) == {("master", "m1"), ("server", "s1"), ("server", "s2"),
                              ("client", "operator")}
    ca = x509.load_pem_x509_certificate(pki.ca_file.read_bytes())
    for (role, ident), issued in pki.certs.items():
        pem = issued.cert_file.read_bytes()
        cert = x509.load_pem_x509_certificate(pem)
        cert.verify_directly_issued_by(ca)
        assert peer_identities(pem_to_der(pem)) == [Identity("local", role, ident)]
        assert peer_identities_pem(pem) == [Identity("local", role, ident)]
        assert issued.key_file.stat().st_mode & 0o077 == 0
    other = write_dev_pki(tmp_path / "other", cluster="local", masters=["m1"], servers=[])
    with pytest.raises(InvalidSignature):
        x509.load_pem_x509_certificate(other.certs[("master", "m1")].cert_file.read_bytes()
                                       ).verify_directly_issued_by(ca)
    extra = add_cert(pki, "server", "s9", cluster="elsewhere")
    assert peer_identities_pem(extra.cert_file.read_bytes()) == [
        Identity("elsewhere", "server", "s9")]
    assert ("server", "s9") not in pki.certs
    block = tls_settings_for(pki, "server", "s7")
    assert peer_identities_pem(Path(block["cert_file"]).read_bytes()) == [
        Identity("local", "server", "s7")]


def test_unreadable_certificates_name_nobody() -> None:
    assert peer_identities(b"garbage") == []
    assert peer_identities_pem(b"garbage") == []


def test_ssl_contexts_do_mutual_tls_with_the_dev_pki(tmp_path: Path) -> None:
    """A real handshake on loopback: the listener sees the client's identity; a client from
    another CA is refused."""
    pki = write_dev_pki(tmp_path / "a", cluster="local", masters=["m1"], servers=["s1"])
    stranger = write_dev_pki(tmp_path / "b", cluster="local", masters=[], servers=["s1"])
    listener = server_ssl_context(TlsSettings.model_validate(tls_settings_for(pki, "master", "m1")),
                                  client_certs=True)
    seen: list[list[Identity]] = []
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    def serve(count: int) -> None:
        for _ in range(count):
            conn, _addr = sock.accept()
            conn.settimeout(5)
            try:
                with listener.wrap_socket(conn, server_side=True) as tls_conn:
                    der = tls_conn.getpeercert(binary_form=True)
                    seen.append(peer_identities(der or b""))
            except (ssl.SSLError, OSError):
                seen.append([])

    thread = threading.Thread(target=serve, args=(2,), daemon=True)
    thread.start()
    try:
        for source in (pki, stranger):
            block = tls_settings_for(source, "server", "s1")
            context = client_ssl_context(TlsSettings.model_validate(block))
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                try:
                    with context.wrap_socket(raw, server_hostname="localhost") as conn:
                        conn.sendall(b"x")
                except (ssl.SSLError, OSError):
                    pass
        thread.join(10)
    finally:
        sock.close()
    assert seen == [[Identity("local", "server", "s1")], []]


def test_settings_require_tls_files_or_an_explicit_insecure_switch(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"TLS is required: set tls.ca_file, tls.cert_file"):
        TlsSettings().require()
    TlsSettings(insecure=True).require()
    with pytest.raises(ConfigError, match="no such file"):
        TlsSettings(ca_file=str(tmp_path / "x"), cert_file="y", key_file="z").require()
    with pytest.raises(ValueError, match="insecure"):
        TlsSettings(insecure=True, ca_file="x")
    pki = write_dev_pki(tmp_path, cluster="local", masters=["m1"], servers=["s1"])
    master = MasterSettings.model_validate({"tls": tls_settings_for(pki, "master", "m1"),
                                            "api": {"auth": "none"}})
    assert master.tls.ca_file == str(pki.ca_file)
    assert ServerSettings.model_validate({"tls": {"insecure": True}}).tls.insecure



@pytest.mark.parametrize("entry", ["master", "server"])
def test_a_process_without_tls_files_refuses_to_start_with_one_line(entry: str) -> None:
    args = [sys.executable, "-m", f"{entry}.main", "--set", "zookeeper.hosts=127.0.0.1:1",
            "--set", "log_format=json"]
    if entry == "master":
        args += ["--set", "api.auth=none"]
    repo = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=repo, env=env,
                          check=False)
    assert done.returncode == 1
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "TLS is required" in lines[0], lines
    assert "tls.insecure=true" in lines[0]
