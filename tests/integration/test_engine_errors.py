"""What the engine's errors say, on a real PostgreSQL: they never show bound parameters (an
error's text, and so any log line or traceback made from it, holds the statement, not the
customer data sent with it), and the one classification of database errors tells an outage
that may pass from a refusal that waiting cannot fix and from a failed statement."""

from __future__ import annotations

import logging
import traceback

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from orders.adapters.database import Outage, make_engine, outage, ping
from orders.settings import DatabaseSettings

SECRET = "alice@example.com, 221B Baker Street"


async def test_a_failed_statement_does_not_show_its_parameters(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(DBAPIError) as caught:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT length(:owner) / 0"), {"owner": SECRET})

    logging.getLogger("orders.errors").error("unhandled", exc_info=caught.value)
    shown = str(caught.value) + "".join(traceback.format_exception(caught.value)) + caplog.text
    assert "division by zero" in shown
    assert "SELECT length(" in shown
    assert SECRET not in shown
    assert "hidden due to hide_parameters" in shown
    assert outage(caught.value) is None


async def test_a_database_that_does_not_exist_is_a_refusal(clean_database: str) -> None:
    url = make_url(clean_database).set(database="orders_no_such_database")
    engine = make_engine(DatabaseSettings(database_url=url.render_as_string(hide_password=False)))
    try:
        with pytest.raises(DBAPIError) as caught:
            await ping(engine, 5.0)
    finally:
        await engine.dispose()

    assert outage(caught.value) is Outage.REFUSED


async def test_a_terminated_connection_is_an_outage_that_may_pass(engine: AsyncEngine) -> None:
    with pytest.raises(DBAPIError) as caught:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))

    assert outage(caught.value) is Outage.PASSING
