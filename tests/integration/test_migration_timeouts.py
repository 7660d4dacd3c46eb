"""A migration never hangs: blocked behind a table lock it fails after DB_MIGRATION_LOCK_TIMEOUT,
and waiting for the migration lock ends with the statement timeout."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import ROOT
from tests.support import asyncpg_dsn

# env.py's advisory lock id.
MIGRATION_LOCK_ID = 0x0C0FFEE0
# Far beyond any timeout set below; reaching it means the migration hung.
HANG = 60


@pytest.fixture
async def scratch_url(server_url: str) -> AsyncIterator[str]:
    """A database of its own, migrated to head, dropped afterwards."""
    name = f"orders_migrate_{uuid.uuid4().hex[:12]}"
    admin_url = asyncpg_dsn(make_url(server_url).set(database="postgres"))
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    await alembic(url, "upgrade", "head")
    yield url
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def alembic(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "alembic", *args],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": url, **env},
            capture_output=True,
            text=True,
            timeout=HANG,
            check=False,
        )

    return await asyncio.to_thread(run)


async def test_a_migration_blocked_by_a_table_lock_fails_instead_of_hanging(
    scratch_url: str,
) -> None:
    holder = await asyncpg.connect(asyncpg_dsn(make_url(scratch_url)))
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("LOCK TABLE orders IN ACCESS SHARE MODE")

        started = time.monotonic()
        # Dropping the table needs an exclusive lock, which the reader above keeps it from.
        result = await alembic(scratch_url, "downgrade", "base", DB_MIGRATION_LOCK_TIMEOUT="0.5")
        took = time.monotonic() - started

        await transaction.rollback()
    finally:
        await holder.close()
    assert result.returncode != 0
    assert "lock timeout" in result.stderr
    assert took < HANG


async def test_waiting_for_another_migrator_is_bounded(scratch_url: str) -> None:
    holder = await asyncpg.connect(asyncpg_dsn(make_url(scratch_url)))
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
        result = await alembic(scratch_url, "upgrade", "head", DB_MIGRATION_STATEMENT_TIMEOUT="0.5")
    finally:
        await holder.close()
    assert result.returncode != 0
    assert "TimeoutError" in result.stderr
