"""tasks.egress: where a job may send data, decided from the process's own settings."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from server.settings import ServerSettings
from tasks.egress import (
    EgressRefused,
    EgressSettings,
    address_allowed,
    check_headers,
    check_job,
    check_s3_endpoint,
    check_submission,
    file_directory,
)
from tasks.errors import ConfigError, ValidationError
from tasks.kafka_access import KafkaAccess, KafkaClientSettings, UnlistedCluster
from tasks.settings import load_settings
from tasks.sinks.http import EgressDenied, EgressResolver
from tasks.spec import JobSpec, parse_job_spec

LOOPBACK = EgressSettings(http_allow_networks=["127.0.0.0/8"]).networks()


@pytest.mark.parametrize("address", [
    "169.254.169.254", "169.254.1.1", "fe80::1", "127.0.0.1", "::1", "10.1.2.3", "172.16.0.1",
    "172.31.255.255", "192.168.1.1", "100.64.0.1", "100.100.100.200", "fd00:ec2::254",
    "fc00::1", "0.0.0.0", "::", "224.0.0.1", "ff02::1", "240.0.0.1", "255.255.255.255",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "[::1]", "not-an-address"])
def test_non_public_addresses_are_refused_by_default(address: str) -> None:
    assert not address_allowed(address, ())


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1::1", "8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_allowed(address, ())


def test_allowed_networks_open_exactly_their_range() -> None:
    assert address_allowed("127.0.0.1", LOOPBACK)
    assert address_allowed("::ffff:127.0.0.5", LOOPBACK)       # mapped: counts as IPv4
    assert not address_allowed("::1", LOOPBACK)                 # another family, not listed
    assert not address_allowed("169.254.169.254", LOOPBACK)
    assert not address_allowed("10.0.0.1", LOOPBACK)


def test_bad_settings_are_clear_errors() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"egress.http_allow_networks": ["nope"]}, "is not a network"),
        ({"egress.s3_endpoints": ["ftp://x"]}, "not an http"),
        ({"egress.file_root": "relative"}, "absolute path")]
    for overrides, error in cases:
        with pytest.raises(ConfigError, match=error):
            load_settings(ServerSettings, environ={}, overrides=overrides)


def _job(sink: dict[str, Any], **spec: Any) -> JobSpec:
    return parse_job_spec({"id": "j", "source": {"topic": "t"}, "sink": sink, **spec})


def test_http_sinks_to_ip_literals_are_checked_when_the_job_is_checked() -> None:
    rules = EgressSettings()
    kafka = KafkaAccess()
    for url in ["http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:8080/",
                "http://[::1]/", "http://10.0.0.7/in", "http://[::ffff:a9fe:a9fe]/"]:
        with pytest.raises(EgressRefused, match="not a public address") as caught:
            check_job(_job({"type": "http", "url": url}), rules, kafka)
        assert caught.value.field == "sink.url" and caught.value.http_status == 400
    # Names are checked when the sink connects, on every address they resolve to.
    check_job(_job({"type": "http", "url": "http://metadata.internal/"}), rules, kafka)
    check_job(_job({"type": "http", "url": "http://127.0.0.1:9/"}),
              EgressSettings(http_allow_networks=["127.0.0.0/8"]), kafka)


@pytest.mark.parametrize("name", ["Authorization", "authorization", "Proxy-Authorization",
                                  "Cookie", "X-Api-Key", "api_key", "X-Auth-Token",
                                  "X-Client-Secret", "X-Session", "X-Password"])
def test_a_literal_secret_in_a_credential_header_is_refused(name: str) -> None:
    with pytest.raises(ValidationError, match=r"EXPORTD_SECRET_<NAME>") as caught:
        check_headers({name: "Bearer abc123"})
    assert caught.value.field == f"sink.headers.{name}"
    check_headers({name: "Bearer ${env:EXPORTD_SECRET_TOKEN}"})     # a reference is fine
    job = _job({"type": "http", "url": "https://example.com/",
                "headers": {name: "s3cr3t"}})
    with pytest.raises(ValidationError):
        check_submission(job, EgressSettings(), KafkaAccess())


def test_ordinary_headers_may_be_literal() -> None:
    check_headers({"X-Tenant": "acme", "Content-Language": "en", "X-Keyboard": "qwerty"})


def test_s3_endpoints_only_the_servers_own_or_listed_ones() -> None:
    rules = EgressSettings(s3_endpoints=["https://minio.internal:9000"])
    check_s3_endpoint(None, None, rules)                                 # the server's default
    check_s3_endpoint("http://127.0.0.1:5000", "http://127.0.0.1:5000/", rules)   # its own
    check_s3_endpoint("https://MINIO.internal:9000/", None, rules)
    check_s3_endpoint("https://s3.example.com", "https://s3.example.com:443", EgressSettings())
    for url in ["https://minio.internal", "http://minio.internal:9000",
                "http://attacker.example:9000", "http://169.254.169.254/", "nonsense"]:
        with pytest.raises(EgressRefused, match="endpoint") as caught:
            check_s3_endpoint(url, "http://127.0.0.1:5000", rules)
        assert caught.value.field == "sink.endpoint_url"


def test_file_directories_stay_below_the_root() -> None:
    assert file_directory("exports/a", "/data") == "/data/exports/a"
    assert file_directory("/data/exports/a/", "/data") == "/data/exports/a"
    assert file_directory("/data", "/data") == "/data"
    assert file_directory("./a//b", "/data") == "/data/a/b"
    for directory in ["/", "/etc", "/data2/x", "/data/../etc", "../x", "a/../../x", "a/..",
                      "..", "a\\..\\..\\x"]:
        with pytest.raises(EgressRefused):
            file_directory(directory, "/data")
    with pytest.raises(EgressRefused, match=r"egress\.file_root"):
        file_directory("x", "")


def test_file_sinks_and_file_dead_letters_are_checked() -> None:
    rules, kafka = EgressSettings(file_root="/data"), KafkaAccess()
    check_job(_job({"type": "file", "directory": "out"}), rules, kafka)
    with pytest.raises(EgressRefused) as caught:
        check_job(_job({"type": "file", "directory": "/"}), rules, kafka)
    assert caught.value.field == "sink.directory"
    with pytest.raises(EgressRefused) as caught:
        check_job(_job({"type": "s3", "bucket": "bkt"},
                       dead_letter={"type": "file", "directory": "../../etc"}), rules, kafka)
    assert caught.value.field == "dead_letter.directory"
    with pytest.raises(EgressRefused, match="file sinks are off"):
        check_job(_job({"type": "file", "directory": "out"}), EgressSettings(), kafka)


def _access(**kafka: Any) -> KafkaAccess:
    return KafkaClientSettings.model_validate(
        {"bootstrap_servers": "main:9093", "config": {"sasl.password": "pw"},
         "clusters": {"legacy": {"bootstrap_servers": "old:9092"}}, **kafka}).access()


def test_jobs_naming_an_unlisted_kafka_cluster_are_refused() -> None:
    access, rules = _access(), EgressSettings(file_root="/d")
    for field, spec in [
        ("source.bootstrap_servers", {"source": {"topic": "t", "bootstrap_servers": "evil:9092"},
                                      "sink": {"type": "file", "directory": "x"}}),
        ("sink.bootstrap_servers", {"source": {"topic": "t"},
                                    "sink": {"type": "kafka", "topic": "o",
                                             "bootstrap_servers": "evil:9092"}})]:
        job = parse_job_spec({"id": "j", **spec})
        with pytest.raises(UnlistedCluster, match="not a configured Kafka cluster") as caught:
            check_job(job, rules, access)
        assert caught.value.field == field and caught.value.http_status == 400
        check_job(job, rules, _access(allow_unlisted_clusters=True))
    with pytest.raises(UnlistedCluster):
        access.properties("evil:9092")
    check_job(parse_job_spec({"id": "j", "source": {"topic": "t", "bootstrap_servers": "old:9092"},
                              "sink": {"type": "kafka", "topic": "o",
                                       "bootstrap_servers": "main:9093"}}), rules, access)


def test_an_allowed_unlisted_cluster_gets_no_credentials() -> None:
    access = _access(allow_unlisted_clusters=True)
    assert access.properties("evil:9092") == {}
    assert access.properties("main:9093") == {"sasl.password": "pw"}
    assert access.properties("old:9092") == {}


class _Rebinding(AbstractResolver):
    """A name that resolves to a public address first, then to the metadata service."""

    def __init__(self) -> None:
        self.answers = [["93.184.216.34"], ["169.254.169.254"], ["127.0.0.1", "93.184.216.34"]]

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [ResolveResult(hostname=host, host=address, port=port, family=family, proto=0,
                              flags=0) for address in self.answers.pop(0)]

    async def close(self) -> None:
        pass


async def test_every_resolution_is_checked_so_rebinding_is_refused() -> None:
    resolver = EgressResolver((), inner=_Rebinding())
    assert [r["host"] for r in await resolver.resolve("rebind.example", 80)] == ["93.184.216.34"]
    with pytest.raises(EgressDenied, match=r"169\.254\.169\.254, which HTTP sinks may not"):
        await resolver.resolve("rebind.example", 80)
    # Mixed answers: only the allowed addresses are kept, so the connection goes there alone.
    assert [r["host"] for r in await resolver.resolve("rebind.example", 80)] == ["93.184.216.34"]
