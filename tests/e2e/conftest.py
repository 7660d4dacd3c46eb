"""Fixtures of the end-to-end tests: an app of its own with the settings a test asks for, and
for the tests on the real broker a virtual host per session, a connection to it, and the app
with the relay and the consumer on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractConnection
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette
from starlette.types import ASGIApp

from orders.app import create_app
from tests.broker import VirtualHost, ensure_running
from tests.conftest import TokenFactory, make_settings
from tests.support import client_for

ServeApp = Callable[..., AbstractAsyncContextManager[tuple[httpx.AsyncClient, ASGIApp]]]


@pytest.fixture
def serve_app(
    clean_database: str,
    key_pair: tuple[bytes, bytes],
    collaborators: httpx.AsyncBaseTransport,
    token_for: TokenFactory,
) -> ServeApp:
    """`async with serve_app(user, **settings) as (client, app)`: an app of its own with these
    settings (over the test's database and stand-ins), and a client signed in as `user`."""

    @asynccontextmanager
    async def serve(
        user: str = "alice", **overrides: Any
    ) -> AsyncIterator[tuple[httpx.AsyncClient, ASGIApp]]:
        settings = make_settings(clean_database, key_pair[1], **overrides)
        async with (
            LifespanManager(create_app(settings, transport=collaborators)) as manager,
            client_for(manager.app, token_for(user)) as client,
        ):
            yield client, manager.app

    return serve


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
