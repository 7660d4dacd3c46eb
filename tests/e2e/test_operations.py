"""Operations: health endpoints, a database that is unreachable or silent, request size and
item limits, and the connection pool's limits."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy.engine import make_url

from orders.adapters.database import make_engine
from orders.app import create_app
from orders.settings import DatabaseSettings, Settings
from tests.conftest import TokenFactory
from tests.support import asyncpg_dsn

LATTE = {"product": "latte", "size": "big", "quantity": 1}


@asynccontextmanager
async def serve(
    settings: Settings, collaborators: httpx.AsyncBaseTransport, token: str | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The app built from `settings`, lifespan running, with a client (and a token if given)."""
    application = create_app(settings, transport=collaborators)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        LifespanManager(application) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app),
            base_url="http://orders.test",
            headers=headers,
        ) as client,
    ):
        yield client


def with_database(settings: Settings, url: str, **changes: Any) -> Settings:
    """`settings` pointing at another database (and with other changes)."""
    database_url = DatabaseSettings(database_url=url).database_url
    return settings.model_copy(update={"database_url": database_url, **changes})


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) > 0
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()) == {"detail"}
    assert isinstance(response.json()["detail"], str)


@contextmanager
def closed_port() -> Iterator[int]:
    """A local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    yield port


@contextmanager
def silent_server() -> Iterator[int]:
    """A port whose listener completes TCP handshakes (the backlog) but never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


# Health.


async def test_live_answers_while_the_process_runs(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/health/live")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_answers_when_the_database_does(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/health/ready")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_nothing_listening_at_the_database_address_is_503_at_once(
    settings: Settings, collaborators: httpx.AsyncBaseTransport, token_for: TokenFactory
) -> None:
    with closed_port() as port:
        down = with_database(settings, f"postgresql://postgres@127.0.0.1:{port}/orders")
        async with serve(down, collaborators, token_for("alice")) as client:
            started = time.perf_counter()
            ready = await client.get("/health/ready")
            orders = await client.get("/orders")
            placed = await client.post("/orders", json={"order": [LATTE]})
            elapsed = time.perf_counter() - started
            live = await client.get("/health/live")

    for response in (ready, orders, placed):
        assert_unavailable(response)
    assert ready.json()["detail"].startswith("Database unavailable")
    assert elapsed < 2.0
    assert live.status_code == 200


async def test_a_database_that_never_answers_is_503_within_the_timeouts(
    settings: Settings, collaborators: httpx.AsyncBaseTransport, token_for: TokenFactory
) -> None:
    with silent_server() as port:
        silent = with_database(
            settings, f"postgresql://postgres@127.0.0.1:{port}/orders", db_connect_timeout=0.5
        )
        async with serve(silent, collaborators, token_for("alice")) as client:
            started = time.perf_counter()
            ready = await client.get("/health/ready")
            ready_seconds = time.perf_counter() - started
            started = time.perf_counter()
            orders = await client.get("/orders")
            orders_seconds = time.perf_counter() - started

    assert_unavailable(ready)
    assert_unavailable(orders)
    # The probe gives up after the connect timeout (or its own 2 s), a request after the
    # connect timeout: never after the client has given up on us.
    assert ready_seconds < 2.5
    assert 0.4 < orders_seconds < 1.5


async def admin(database_url: str, *statements: str) -> None:
    """Run statements on the server of `database_url`, from its maintenance database."""
    connection = await asyncpg.connect(asyncpg_dsn(make_url(database_url).set(database="postgres")))
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@pytest.mark.parametrize(
    "problem",
    ["no such database", "no such role", "too many connections for the role"],
)
async def test_a_server_that_refuses_the_connection_is_503(
    settings: Settings,
    collaborators: httpx.AsyncBaseTransport,
    token_for: TokenFactory,
    problem: str,
) -> None:
    url = make_url(settings.database_url.get_secret_value())
    role = f"orders_refused_{uuid.uuid4().hex[:8]}"
    if problem == "no such database":
        url = url.set(database=f"{url.database}_missing")
    elif problem == "no such role":
        url = url.set(username=role, password=None)
    else:
        await admin(
            str(url.render_as_string(False)), f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0'
        )
        url = url.set(username=role, password=None)
    try:
        refused = with_database(settings, url.render_as_string(False))
        async with serve(refused, collaborators, token_for("alice")) as client:
            ready = await client.get("/health/ready")
            orders = await client.get("/orders")
            placed = await client.post("/orders", json={"order": [LATTE]})
    finally:
        if problem == "too many connections for the role":
            await admin(settings.database_url.get_secret_value(), f'DROP ROLE "{role}"')

    for response in (ready, orders, placed):
        assert_unavailable(response)


async def test_writes_to_a_read_only_server_are_503_and_reads_still_work(
    settings: Settings, collaborators: httpx.AsyncBaseTransport, token_for: TokenFactory
) -> None:
    # What a client meets while a failover leaves it connected to a standby.
    url = settings.database_url.get_secret_value()
    database = make_url(url).database
    async with serve(settings, collaborators, token_for("alice")) as client:
        placed = await client.post("/orders", json={"order": [LATTE]})
    await admin(url, f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
    try:
        async with serve(settings, collaborators, token_for("alice")) as client:
            refused = await client.post("/orders", json={"order": [LATTE]})
            listed = await client.get("/orders")
            ready = await client.get("/health/ready")
    finally:
        await admin(url, f'ALTER DATABASE "{database}" RESET default_transaction_read_only')

    assert_unavailable(refused)
    assert [order["id"] for order in listed.json()["orders"]] == [placed.json()["id"]]
    assert ready.status_code == 200


# Limits.


class CountingBody:
    """A request body streamed in chunks, counting how much of it the server pulled."""

    def __init__(self, total: int, chunk: int = 4096) -> None:
        self.total = total
        self.chunk = chunk
        self.consumed = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        # A syntactically plausible JSON prefix, then padding.
        sent = 0
        while sent < self.total:
            size = min(self.chunk, self.total - sent)
            piece = (b'{"order": [' + b" " * size)[:size] if sent == 0 else b" " * size
            sent += size
            self.consumed = sent
            yield piece


async def test_a_body_declared_too_large_is_413_without_reading_it(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    body = CountingBody(settings.max_body_bytes * 16)
    response = await client.post(
        "/orders",
        content=body,
        headers={
            "Content-Type": "application/json",
            "Content-Length": str(body.total),
        },
    )

    assert response.status_code == 413
    assert response.json() == {
        "detail": f"Request body larger than {settings.max_body_bytes} bytes"
    }
    assert response.headers["connection"] == "close"
    assert body.consumed == 0


async def test_a_streamed_body_is_cut_off_once_it_passes_the_limit(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    body = CountingBody(settings.max_body_bytes * 16)
    # No Content-Length: httpx sends the generator chunked.
    response = await client.put(
        f"/orders/{'0' * 8}-0000-4000-8000-{'0' * 12}",
        content=body,
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 413
    assert response.json() == {
        "detail": f"Request body larger than {settings.max_body_bytes} bytes"
    }
    assert response.headers["connection"] == "close"
    assert body.consumed <= settings.max_body_bytes + body.chunk


async def test_a_body_at_the_limit_is_read(client: httpx.AsyncClient, settings: Settings) -> None:
    prefix = b'{"order": [{"product": "latte", "size": "big"}]'
    body = prefix + b" " * (settings.max_body_bytes - len(prefix) - 1) + b"}"
    assert len(body) == settings.max_body_bytes

    response = await client.post(
        "/orders", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 201


async def test_an_invalid_content_length_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/orders",
        content=b"{}",
        headers={"Content-Type": "application/json", "Content-Length": "2x"},
    )

    assert response.status_code == 400
    assert response.json() == {"detail": "Invalid Content-Length"}


async def test_more_items_than_allowed_is_422_and_places_nothing(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    limit = settings.max_items_per_order
    too_many = await client.post("/orders", json={"order": [LATTE] * (limit + 1)})
    listed = await client.get("/orders")
    just_enough = await client.post("/orders", json={"order": [LATTE] * limit})

    assert too_many.status_code == 422
    [problem] = too_many.json()["detail"]
    assert problem["loc"] == ["body", "order"]
    assert problem["type"] == "too_long"
    assert listed.json() == {"orders": []}
    assert just_enough.status_code == 201
    assert len(just_enough.json()["order"]) == limit


async def test_the_item_limit_is_configurable(
    settings: Settings, collaborators: httpx.AsyncBaseTransport, token_for: TokenFactory
) -> None:
    async with serve(
        settings.model_copy(update={"max_items_per_order": 2}), collaborators, token_for("a")
    ) as client:
        three = await client.post("/orders", json={"order": [LATTE] * 3})
        two = await client.post("/orders", json={"order": [LATTE] * 2})

    assert three.status_code == 422
    assert two.status_code == 201


@pytest.mark.parametrize("product", ["nul\x00byte", "\x00"])
async def test_a_product_postgres_cannot_store_is_422(
    client: httpx.AsyncClient, product: str
) -> None:
    placed = await client.post("/orders", json={"order": [{"product": product, "size": "big"}]})
    listed = await client.get("/orders")

    assert placed.status_code == 422
    assert placed.json()["detail"][0]["loc"] == ["body", "order", 0, "product"]
    assert listed.json() == {"orders": []}


# The connection pool.


def test_the_engine_pools_as_configured(database_url: str) -> None:
    settings = DatabaseSettings(
        database_url=database_url, db_pool_size=3, db_max_overflow=2, db_pool_timeout=1.5
    )
    engine = make_engine(settings)
    pool: Any = engine.pool

    assert pool.size() == 3
    assert pool.timeout() == 1.5
    # Overflow counts up from -pool_size; its ceiling is what the setting allows.
    assert pool._max_overflow == 2


async def waiting_on_lock(database_url: str) -> int:
    connection = await asyncpg.connect(asyncpg_dsn(make_url(database_url)))
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'orders'"
            " AND wait_event_type = 'Lock'"
        )
    finally:
        await connection.close()
    return count


async def test_the_pool_never_opens_more_than_size_plus_overflow(
    settings: Settings, collaborators: httpx.AsyncBaseTransport, token_for: TokenFactory
) -> None:
    small = settings.model_copy(
        update={"db_pool_size": 1, "db_max_overflow": 1, "db_pool_timeout": 0.3}
    )
    locker = await asyncpg.connect(asyncpg_dsn(make_url(settings.database_url.get_secret_value())))
    try:
        async with serve(small, collaborators, token_for("alice")) as client:
            # Every read now waits for the lock, holding its pooled connection.
            transaction = locker.transaction()
            await transaction.start()
            await locker.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
            blocked = [asyncio.create_task(client.get("/orders")) for _ in range(2)]
            for _ in range(100):
                if await waiting_on_lock(settings.database_url.get_secret_value()) == 2:
                    break
                await asyncio.sleep(0.02)
            started = time.perf_counter()
            third = await client.get("/orders")
            waited = time.perf_counter() - started
            connections = await waiting_on_lock(settings.database_url.get_secret_value())
            await transaction.rollback()
            first, second = await asyncio.gather(*blocked)
    finally:
        await locker.close()

    assert connections == 2
    assert_unavailable(third)
    assert 0.25 < waited < 1.5
    assert first.status_code == second.status_code == 200


async def test_a_statement_over_the_command_timeout_is_503_and_the_pool_stays_healthy(
    settings: Settings, collaborators: httpx.AsyncBaseTransport, token_for: TokenFactory
) -> None:
    url = settings.database_url.get_secret_value()
    quick = settings.model_copy(update={"db_command_timeout": 0.3, "db_pool_size": 1})
    locker = await asyncpg.connect(asyncpg_dsn(make_url(url)))
    try:
        async with serve(quick, collaborators, token_for("alice")) as client:
            assert (await client.get("/orders")).status_code == 200
            transaction = locker.transaction()
            await transaction.start()
            await locker.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
            started = time.perf_counter()
            read = await client.get("/orders")
            written = await client.post("/orders", json={"order": [LATTE]})
            waited = time.perf_counter() - started
            await transaction.rollback()
            after = await client.get("/orders")
            placed = await client.post("/orders", json={"order": [LATTE]})
    finally:
        await locker.close()

    assert_unavailable(read)
    assert_unavailable(written)
    assert 0.5 < waited < 2.0
    assert after.json() == {"orders": []}
    assert placed.status_code == 201


async def test_pooled_connections_the_server_closed_are_replaced_without_a_failure(
    settings: Settings, collaborators: httpx.AsyncBaseTransport, token_for: TokenFactory
) -> None:
    url = settings.database_url.get_secret_value()
    async with serve(settings, collaborators, token_for("alice")) as client:
        order_id = (await client.post("/orders", json={"order": [LATTE]})).json()["id"]
        warm = await asyncio.gather(*(client.get("/orders") for _ in range(6)))
        assert {response.status_code for response in warm} == {200}
        # What a restart or an operator does to the service's sessions.
        connection = await asyncpg.connect(asyncpg_dsn(make_url(url)))
        try:
            terminated = await connection.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'orders'"
            )
            deadline = time.monotonic() + 5
            while await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'orders'"
            ):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
        finally:
            await connection.close()
        await asyncio.sleep(0.05)  # the driver sees each socket close as it happens
        reads = [(await client.get(f"/orders/{order_id}")).status_code for _ in range(6)]
        writes = [
            (await client.put(f"/orders/{order_id}", json={"order": [LATTE]})).status_code
            for _ in range(3)
        ]

    assert terminated >= 2
    assert reads == [200] * 6
    assert writes == [200] * 3
