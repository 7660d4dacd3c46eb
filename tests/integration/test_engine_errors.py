"""The engine never shows bound parameters: an error's text (and so any log line or
traceback made from it) holds the statement, not the customer data sent with it."""

from __future__ import annotations

import logging
import traceback

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

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
