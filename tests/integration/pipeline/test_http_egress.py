"""The HTTP sink's egress rules where they sit, in the connection: a name that resolves to an
address the server does not allow (here `localhost`, a loopback address) is refused when the
sink connects — the task fails with the reason — and nothing reaches the receiver; the same
name is delivered to once the server allows loopback; a receiver's redirect is never followed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from aiohttp import web

from tasks.egress import EgressSettings
from tasks.runner import TaskState
from tests.integration.fakebroker import RecordingRelay
from tests.integration.pipeline.kit import (
    create_topic,
    environment,
    job,
    json_records,
    produce,
    run_until_committed,
    runner,
    unique,
    wait_for,
)
from tests.integration.pipeline.receiver import Receiver


async def test_a_name_resolving_to_a_refused_address_is_refused_when_connecting(
        kafka: str, tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("egress-http"))
    produce(kafka, topic, json_records(0, 100))
    async with Receiver() as receiver:
        url = receiver.url.replace("127.0.0.1", "localhost")
        spec = job(topic, {"type": "http", "url": url, "batch_records": 50, "max_retries": 1},
                   transform={"parse": {"format": "json"}})
        closed = dataclasses.replace(environment(kafka, tmp_path),
                                     egress=EgressSettings(file_root=str(tmp_path)))
        r = runner(closed, spec)
        await r.start()
        try:
            await wait_for(lambda: r.stats().state is TaskState.FAILED,
                           f"the task failed ({r.stats()})")
        finally:
            await r.stop(drain=False)
        assert receiver.statuses == [] and r.stats().committed_offset <= 0
        assert "localhost resolves to" in r.stats().last_error
        assert "may not reach" in r.stats().last_error
        # The same job on a server that allows loopback: delivered.
        await run_until_committed(runner(environment(kafka, tmp_path), spec), 100)
        assert sum(len(req.records) for req in receiver.accepted) == 100


async def test_a_redirect_is_not_followed(kafka: str, tmp_path: Path) -> None:
    topic = create_topic(kafka, unique("egress-redirect"))
    produce(kafka, topic, json_records(0, 50))
    async with RecordingRelay(None) as elsewhere:
        async def redirect(_request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(f"http://{elsewhere.bootstrap}/steal")

        app = web.Application()
        app.router.add_post("/ingest", redirect)
        app_runner = web.AppRunner(app)
        await app_runner.setup()
        try:
            site = web.TCPSite(app_runner, "127.0.0.1", 0)
            await site.start()
            port = int(app_runner.addresses[0][1])
            spec = job(topic, {"type": "http", "url": f"http://127.0.0.1:{port}/ingest",
                               "batch_records": 50}, transform={"parse": {"format": "json"}},
                       dead_letter={"type": "file", "directory": "dlq"})
            r = runner(environment(kafka, tmp_path), spec)
            await run_until_committed(r, 50)
        finally:
            await app_runner.cleanup()
        assert elsewhere.connections == 0
        assert r.stats().dead_letters_total == 50     # a 3xx is a refusal, like a 4xx
        assert list((tmp_path / "dlq").rglob("*.ndjson"))   # relative: below the file root
