"""Fixtures for the tests on the real broker: a virtual host per session, a connection to
it, and the app with the relay and the consumer on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractConnection
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette

from orders.app import create_app
from tests.broker import VirtualHost, ensure_running
from tests.conftest import make_settings


@pytest.fixture(scope="session")
def vhost() -> Iterator[VirtualHost]:
    ensure_running()
    host = VirtualHost()
    host.create()
    yield host
    host.delete()


@pytest.fixture
async def amqp(vhost: VirtualHost) -> AsyncIterator[AbstractConnection]:
    connection = await aio_pika.connect(vhost.url)
    async with connection:
        yield connection


@pytest.fixture
async def events_app(
    clean_database: str,
    key_pair: tuple[bytes, bytes],
    vhost: VirtualHost,
    collaborators: httpx.AsyncBaseTransport,
) -> AsyncIterator[Starlette]:
    settings = make_settings(
        clean_database,
        key_pair[1],
        broker_url=vhost.url,
        relay_idle_seconds=0.05,
        relay_retry_max_seconds=0.5,
        consumer_max_attempts=3,
    )
    async with LifespanManager(create_app(settings, transport=collaborators)) as manager:
        yield manager.app  # type: ignore[misc]
