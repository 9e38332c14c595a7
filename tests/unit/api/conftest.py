"""Fixtures: a FakeControl and the real API app served on loopback, with a client session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from master.api.app import create_app
from master.api.settings import ApiSettings
from tests.unit.api.fake_control import FakeControl, serve

JOB: dict[str, Any] = {
    "id": "orders",
    "source": {"topic": "orders"},
    "sink": {"type": "s3", "bucket": "exports"},
}


@dataclass
class Api:
    url: str
    http: aiohttp.ClientSession
    control: FakeControl

    def at(self, path: str) -> str:
        return self.url + path


@pytest.fixture
def control() -> FakeControl:
    return FakeControl()


@pytest.fixture
def settings() -> ApiSettings:
    return ApiSettings(master_id="m1", auth="none")


@pytest.fixture
async def api(control: FakeControl, settings: ApiSettings) -> AsyncIterator[Api]:
    async with serve(create_app(control, settings)) as url, aiohttp.ClientSession() as http:
        yield Api(url, http, control)
