"""Pool and statement metrics on a real PostgreSQL: connections in use, checkouts that had
to wait or gave up, and failed statements by SQLSTATE class."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine

from orders.adapters.database import make_engine
from orders.observability.metrics import Metrics
from orders.observability.pool import instrument_engine, measured_pool_class
from orders.settings import DatabaseSettings


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def one_connection(clean_database: str, metrics: Metrics) -> AsyncIterator[AsyncEngine]:
    """An engine with a pool of one connection and no overflow, instrumented."""
    settings = DatabaseSettings(
        database_url=clean_database, db_pool_size=1, db_max_overflow=0, db_pool_timeout=0.5
    )
    engine = make_engine(settings, poolclass=measured_pool_class(metrics, 0))
    instrument_engine(engine, metrics, 1)
    yield engine
    await engine.dispose()


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    # As a scrape does: the sampled gauges are read first.
    metrics.sample()
    return metrics.registry.get_sample_value(name, labels)


async def test_in_use_follows_checkouts_and_checkins(
    one_connection: AsyncEngine, metrics: Metrics
) -> None:
    assert sample(metrics, "orders_db_pool_capacity") == 1
    async with one_connection.connect() as connection:
        await connection.execute(text("SELECT 1"))
        assert sample(metrics, "orders_db_pool_connections_in_use") == 1
    assert sample(metrics, "orders_db_pool_connections_in_use") == 0
    # Neither checkout found the pool full.
    assert sample(metrics, "orders_db_pool_wait_seconds_count") == 0


async def test_a_checkout_that_waits_is_timed(
    one_connection: AsyncEngine, metrics: Metrics
) -> None:
    holder = await one_connection.connect()
    await holder.execute(text("SELECT 1"))

    async def release_soon() -> None:
        await asyncio.sleep(0.1)
        await holder.close()

    releasing = asyncio.create_task(release_soon())
    async with one_connection.connect() as waiter:
        await waiter.execute(text("SELECT 1"))
    await releasing

    assert sample(metrics, "orders_db_pool_wait_seconds_count") == 1
    waited = sample(metrics, "orders_db_pool_wait_seconds_sum")
    assert waited is not None
    assert waited >= 0.05
    assert sample(metrics, "orders_db_pool_timeouts_total") == 0


async def test_a_checkout_that_gives_up_is_counted(
    one_connection: AsyncEngine, metrics: Metrics
) -> None:
    async with one_connection.connect() as holder:
        await holder.execute(text("SELECT 1"))
        with pytest.raises(PoolTimeout):
            await one_connection.connect()
    assert sample(metrics, "orders_db_pool_timeouts_total") == 1
    assert sample(metrics, "orders_db_pool_wait_seconds_count") == 1
    assert sample(metrics, "orders_db_pool_connections_in_use") == 0


async def test_failed_statements_are_counted_by_sqlstate_class(
    one_connection: AsyncEngine, metrics: Metrics
) -> None:
    async with one_connection.connect() as connection:
        with pytest.raises(DBAPIError):
            await connection.execute(text("SELECT 1 / 0"))
        await connection.rollback()
        with pytest.raises(DBAPIError):
            await connection.execute(text("SELECT * FROM no_such_table"))
    errors = "orders_db_statement_errors_total"
    assert sample(metrics, errors, sqlstate_class="22") == 1
    assert sample(metrics, errors, sqlstate_class="42") == 1
