"""A real database outage: a PostgreSQL this test owns shuts down while the app runs, then
starts again. Every route that needs it answers 503 quickly meanwhile, never 500, never
hangs, and the app recovers by itself: while the server is shutting down (new sessions
refused), once it is gone, after a stop that breaks a full pool, and after a quick restart
nobody noticed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy.engine import make_url

from orders.app import create_app
from orders.settings import Settings
from tests.conftest import ROOT, TokenFactory, make_settings
from tests.support import EmbeddedPostgres, asyncpg_dsn

LATTE = {"product": "latte", "size": "big", "quantity": 1}
# Each request must be answered within this, whatever state the database is in.
ANSWER_WITHIN = 5.0
# How long a request may wait for a pooled connection. A failed connect frees its slot in
# the pool without waking the requests queued for one, so in a burst larger than the pool
# those wait out this timeout before their 503.
POOL_TIMEOUT = 1.0


@pytest.fixture
def own_postgres(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedPostgres]:
    """A migrated PostgreSQL of this test's own, that it may stop and start."""
    # EmbeddedPostgres sets these for the server; keep them from leaking into other tests.
    monkeypatch.setenv("LC_ALL", "C")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    with EmbeddedPostgres(tmp_path / "postgres") as server:
        subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": server.url()},
            check=True,
            capture_output=True,
        )
        yield server


@pytest.fixture
def own_settings(own_postgres: EmbeddedPostgres, key_pair: tuple[bytes, bytes]) -> Settings:
    return make_settings(own_postgres.url(), key_pair[1], db_pool_timeout=POOL_TIMEOUT)


@asynccontextmanager
async def serve(
    settings: Settings, collaborators: httpx.AsyncBaseTransport, token: str
) -> AsyncIterator[httpx.AsyncClient]:
    """A fresh app (an empty pool) with its lifespan running, and a client for it."""
    application = create_app(settings, transport=collaborators)
    async with (
        LifespanManager(application) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app),
            base_url="http://orders.test",
            headers={"Authorization": f"Bearer {token}"},
        ) as client,
    ):
        yield client


def every_database_route(order_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("GET", "/health/ready", {}),
        ("GET", "/orders", {}),
        ("POST", "/orders", {"json": {"order": [LATTE]}}),
        ("GET", f"/orders/{order_id}", {}),
        ("PUT", f"/orders/{order_id}", {"json": {"order": [LATTE, LATTE]}}),
        ("DELETE", f"/orders/{order_id}", {}),
        ("POST", f"/orders/{order_id}/pay", {}),
        ("POST", f"/orders/{order_id}/cancel", {}),
    ]


async def timed(
    client: httpx.AsyncClient, method: str, path: str, **kwargs: Any
) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = await asyncio.wait_for(client.request(method, path, **kwargs), ANSWER_WITHIN)
    return response, time.perf_counter() - started


async def all_unavailable(client: httpx.AsyncClient, order_id: str, rounds: int) -> float:
    """Send every route `rounds` times, then a burst larger than the pool: all must be 503s,
    one by one at once, in the burst within the pool timeout. Returns the slowest single
    answer, in seconds."""
    answers: list[tuple[str, httpx.Response, float]] = []
    for _ in range(rounds):
        for method, path, kwargs in every_database_route(order_id):
            response, seconds = await timed(client, method, path, **kwargs)
            answers.append((f"{method} {path}", response, seconds))
    burst = await asyncio.gather(*(timed(client, "GET", "/orders") for _ in range(20)))
    everything = answers + [("GET /orders (burst)", r, seconds) for r, seconds in burst]

    for route, response, _ in everything:
        assert response.status_code == 503, (route, response.status_code, response.text)
        assert int(response.headers["retry-after"]) > 0, route
        assert response.headers["content-type"] == "application/json", route
        assert set(response.json()) == {"detail"}, route
    slowest = max(seconds for _, _, seconds in answers)
    assert slowest < 0.5, [(route, round(seconds, 3)) for route, _, seconds in answers]
    assert max(seconds for _, seconds in burst) < POOL_TIMEOUT + 0.5
    assert (await client.get("/health/live")).status_code == 200
    return slowest


async def recovery(client: httpx.AsyncClient, order_id: str) -> tuple[int, float]:
    """Requests (and seconds) until the order can be read again."""
    started = time.perf_counter()
    attempts = 0
    while True:
        attempts += 1
        response, _ = await timed(client, "GET", f"/orders/{order_id}")
        if response.status_code == 200:
            return attempts, time.perf_counter() - started
        assert response.status_code == 503, response.text
        assert time.perf_counter() - started < 10, f"not recovered after {attempts} requests"
        await asyncio.sleep(0.05)


async def refuses_new_sessions(url: str) -> bool:
    try:
        connection = await asyncpg.connect(asyncpg_dsn(make_url(url)))
    except asyncpg.CannotConnectNowError:
        return True
    await connection.close()
    return False


@pytest.mark.slow
async def test_a_database_outage_is_503_everywhere_and_the_service_recovers(
    own_postgres: EmbeddedPostgres,
    own_settings: Settings,
    collaborators: httpx.AsyncBaseTransport,
    token_for: TokenFactory,
) -> None:
    url = own_settings.database_url.get_secret_value()
    async with serve(own_settings, collaborators, token_for("alice")) as client:
        placed = await client.post("/orders", json={"order": [LATTE]})
        order_id = placed.json()["id"]

    async with serve(own_settings, collaborators, token_for("alice")) as client:
        # 1. Shutting down: a smart shutdown waits for open sessions and refuses new ones
        # ("the database system is shutting down"). This app has no connection yet.
        session = await asyncpg.connect(asyncpg_dsn(make_url(url)))
        postmaster = int((own_postgres.pgdata / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGTERM)
        for _ in range(100):
            if await refuses_new_sessions(url):
                break
            await asyncio.sleep(0.02)
        shutting_down_slowest = await all_unavailable(client, order_id, rounds=1)

        # 2. Down: the last session ends, the server exits, its socket is gone.
        await session.close()
        for _ in range(200):
            if not (own_postgres.pgdata / "postmaster.pid").exists():
                break
            await asyncio.sleep(0.05)
        down_slowest = await all_unavailable(client, order_id, rounds=2)

        await asyncio.to_thread(own_postgres.start)
        first_attempts, first_seconds = await recovery(client, order_id)

        # 3. A crash-like stop (fast shutdown) with the pool full of connections it breaks.
        warm = await asyncio.gather(*(client.get("/orders") for _ in range(8)))
        assert {response.status_code for response in warm} == {200}
        await asyncio.to_thread(own_postgres.stop)
        broken_slowest = await all_unavailable(client, order_id, rounds=2)

        await asyncio.to_thread(own_postgres.start)
        second_attempts, second_seconds = await recovery(client, order_id)

        # 4. A restart nobody noticed: the pool is full of connections the server closed.
        warm = await asyncio.gather(*(client.get("/orders") for _ in range(8)))
        assert {response.status_code for response in warm} == {200}
        await asyncio.to_thread(own_postgres.stop)
        await asyncio.to_thread(own_postgres.start)
        after_restart = [(await client.get(f"/orders/{order_id}")).status_code for _ in range(3)]
        after_restart += [
            (await client.put(f"/orders/{order_id}", json={"order": [LATTE]})).status_code
            for _ in range(3)
        ]

        # Everything works again, on the same data, without a restart.
        ready = await client.get("/health/ready")
        updated = await client.put(f"/orders/{order_id}", json={"order": [LATTE, LATTE]})
        paid = await client.post(f"/orders/{order_id}/pay")
        cancelled = await client.post(f"/orders/{order_id}/cancel")
        other = await client.post("/orders", json={"order": [LATTE]})
        deleted = await client.delete(f"/orders/{other.json()['id']}")
        listed = await client.get("/orders")

    assert ready.status_code == 200
    assert updated.status_code == 200
    assert paid.json()["status"] == "progress"
    assert cancelled.json()["status"] == "cancelled"
    assert deleted.status_code == 204
    assert [order["id"] for order in listed.json()["orders"]] == [order_id]
    # The first request after the server is back succeeds: what broke left the pool.
    assert (first_attempts, second_attempts) == (1, 1)
    assert after_restart == [200] * 6
    print(
        f"\noutage: slowest 503 while shutting down {shutting_down_slowest * 1000:.0f} ms, "
        f"down {down_slowest * 1000:.0f} ms, with a broken pool {broken_slowest * 1000:.0f} ms; "
        f"recovered on request {first_attempts} ({first_seconds * 1000:.0f} ms) and "
        f"{second_attempts} ({second_seconds * 1000:.0f} ms); after an unnoticed restart "
        f"{after_restart.count(503)} of {len(after_restart)} requests failed"
    )
