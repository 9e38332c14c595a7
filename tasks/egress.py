"""Where a job may send data and credentials: the egress rules, as pure checks.

A job names destinations (an HTTP URL, an S3 endpoint, a directory, Kafka bootstrap lists); the
process that acts on it decides from ITS OWN settings — the `egress` and `kafka` blocks — never
from the job. Masters run `check_job` when a job is created (a refusal is a 400); servers run it
again before they build a task (a refusal fails the task with the reason as its last_error), and
HTTP sinks check every address a name resolves to when they connect (`address_allowed`, called by
the resolver in tasks/sinks/http.py), so a name that later resolves elsewhere (DNS rebinding) is
refused too.

    egress:
      http_allow_networks: ["10.20.0.0/16"]   # non-public networks HTTP sinks may reach
      s3_endpoints: ["https://minio.internal:9000"]   # besides the server's s3.endpoint_url
      file_root: /data/exports                # file sinks and file dead letters write below it

The rules:
- HTTP sinks reach public addresses only: loopback, private (RFC 1918, ULA), link-local (cloud
  metadata services live there), CGNAT, multicast and reserved ranges are refused unless a network
  in `http_allow_networks` contains the address. IPv4-mapped IPv6 addresses count as IPv4.
- An S3 `endpoint_url` in a job must be the server's own `s3.endpoint_url` or one of
  `s3_endpoints` (scheme, host and port compared): the servers' keys sign requests only there.
- A file sink's or file dead letter's directory is relative to `file_root` or absolute below it,
  without `..`; no `file_root` means no file sinks at all.
- Kafka bootstrap lists must name a configured cluster (tasks/kafka_access.py decides).
- HTTP headers that carry credentials (Authorization, Cookie, X-Api-Key, ...) must take their
  secret from `${env:EXPORTD_SECRET_<NAME>}`, never literally: the spec is stored and shown.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from pydantic import field_validator

from tasks.errors import ValidationError
from tasks.kafka_access import KafkaAccess
from tasks.settings import SettingsModel
from tasks.spec import SECRET_REF, FileSink, HttpSink, JobSpec, KafkaSink

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Header names whose values are credentials: a literal value would be stored in ZooKeeper and
# shown by the API.
CREDENTIAL_HEADER = re.compile(
    r"^(authorization|proxy-authorization|cookie|set-cookie)$"
    r"|api[-_]?key|token|secret|password|passwd|credential|auth|session|signature",
    re.IGNORECASE)


class EgressRefused(ValidationError):
    """A job names a destination this process's egress rules do not allow."""


class EgressSettings(SettingsModel):
    """The `egress` block of masters and servers (give both the same)."""

    # Networks HTTP sinks may reach although they are not public, e.g. ["10.20.0.0/16"] for an
    # in-cluster receiver, ["127.0.0.0/8"] for tests. Empty: public addresses only.
    http_allow_networks: list[str] = []
    # S3 endpoints (scheme://host[:port]) a job's endpoint_url may name besides the server's own
    # s3.endpoint_url; the servers' keys sign requests for these and no others.
    s3_endpoints: list[str] = []
    # File sinks and file dead letters write below this directory (a job's directory is relative
    # to it, or absolute below it). Empty: file sinks are refused.
    file_root: str = ""

    @field_validator("http_allow_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"{item!r} is not a network (use e.g. 10.0.0.0/8): {exc}") \
                    from exc
        return value

    @field_validator("s3_endpoints")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        for item in value:
            endpoint_key(item)   # raises ValueError for a malformed URL
        return value

    @field_validator("file_root")
    @classmethod
    def _root(cls, value: str) -> str:
        if value and not posixpath.isabs(value):
            raise ValueError("file_root must be an absolute path")
        return posixpath.normpath(value) if value else value

    def networks(self) -> tuple[IpNetwork, ...]:
        return tuple(ipaddress.ip_network(n, strict=False) for n in self.http_allow_networks)


# --- HTTP -----------------------------------------------------------------------------------------

def _address(text: str) -> IpAddress | None:
    try:
        address = ipaddress.ip_address(text.strip("[]").split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_allowed(text: str, allow: Iterable[IpNetwork]) -> bool:
    """May an HTTP sink connect to this IP address? Public addresses yes; any other (loopback,
    private, link-local/metadata, CGNAT, multicast, reserved, unspecified) only inside `allow`."""
    address = _address(text)
    if address is None:
        return False
    if any(address.version == net.version and address in net for net in allow):
        return True
    return address.is_global and not address.is_multicast


def check_http_url(url: str, allow: Iterable[IpNetwork], *, field: str = "sink.url",
                   what: str = "HTTP sinks") -> None:
    """A URL whose host is an IP literal is checked now (no resolver sees it); a name is checked
    on each connection, on every address it resolves to."""
    host = urlsplit(url).hostname or ""
    if _address(host) is not None and not address_allowed(host, allow):
        raise EgressRefused(f"{host} is not a public address: {what} may not reach it "
                            "(egress.http_allow_networks on the servers allows networks)",
                            field=field)


def check_headers(headers: dict[str, str]) -> None:
    """A credential header holds a `${env:EXPORTD_SECRET_<NAME>}` reference, not the secret."""
    for name, value in headers.items():
        if CREDENTIAL_HEADER.search(name) and value.strip() and not SECRET_REF.search(value):
            raise ValidationError(
                f"header {name} looks like a credential: a literal value would be stored and "
                f"shown by the API; put the secret in EXPORTD_SECRET_<NAME> on the servers and "
                f"write ${{env:EXPORTD_SECRET_<NAME>}} here (e.g. 'Bearer "
                f"${{env:EXPORTD_SECRET_TOKEN}}')", field=f"sink.headers.{name}")


# --- S3 -------------------------------------------------------------------------------------------

def endpoint_key(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an endpoint URL, the default port filled in."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) endpoint URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ValueError(f"{url!r}: {exc}") from exc
    return parts.scheme, parts.hostname.lower(), port


def check_s3_endpoint(endpoint_url: str | None, own: str | None, rules: EgressSettings) -> None:
    """A job's S3 endpoint_url must be the server's own endpoint or in egress.s3_endpoints."""
    if endpoint_url is None:
        return
    try:
        key = endpoint_key(endpoint_url)
    except ValueError as exc:
        raise EgressRefused(str(exc), field="sink.endpoint_url") from exc
    allowed = {endpoint_key(url) for url in (*rules.s3_endpoints, *([own] if own else []))}
    if key not in allowed:
        raise EgressRefused(f"S3 endpoint {endpoint_url} is not allowed: the servers' keys sign "
                            "requests only for their s3.endpoint_url and egress.s3_endpoints",
                            field="sink.endpoint_url")


# --- files ----------------------------------------------------------------------------------------

def file_directory(directory: str, root: str, *, field: str = "sink.directory") -> str:
    """The absolute directory a job's (relative or absolute) directory names below `root`."""
    if not root:
        raise EgressRefused("file sinks are off: set egress.file_root (the directory they write "
                            "below) on the masters and servers", field=field)
    if ".." in directory.replace("\\", "/").split("/"):
        raise EgressRefused(f"{directory!r} contains '..'", field=field)
    path = posixpath.normpath(posixpath.join(root, directory))
    if posixpath.commonpath([path, root]) != root:
        raise EgressRefused(f"{directory!r} is not below the file root {root}: give a path "
                            "relative to it or below it", field=field)
    return path


# --- the whole job --------------------------------------------------------------------------------

def check_job(spec: JobSpec, rules: EgressSettings, kafka: KafkaAccess) -> None:
    """The static egress rules for one job's destinations, as masters and servers both check
    them (S3 endpoints are checked by servers, which know their own: `check_s3_endpoint`);
    raises EgressRefused naming the field."""
    kafka.check(spec.source.bootstrap_servers, field="source.bootstrap_servers")
    sink = spec.sink
    if isinstance(sink, KafkaSink):
        kafka.check(sink.bootstrap_servers, field="sink.bootstrap_servers")
    elif isinstance(sink, HttpSink):
        check_http_url(str(sink.url), rules.networks())
    elif isinstance(sink, FileSink):
        file_directory(sink.directory, rules.file_root)
    registry = spec.transform.parse.registry
    if registry is not None:
        check_http_url(registry.url, rules.networks(), field="transform.parse.registry.url",
                       what="schema registries")
    if spec.dead_letter.type == "file" and spec.dead_letter.directory:
        file_directory(spec.dead_letter.directory, rules.file_root,
                       field="dead_letter.directory")


def check_submission(spec: JobSpec, rules: EgressSettings, kafka: KafkaAccess) -> None:
    """What a master checks when a job is created: `check_job`, and no literal secret in an
    HTTP sink's headers."""
    check_job(spec, rules, kafka)
    if isinstance(spec.sink, HttpSink):
        check_headers(spec.sink.headers)
