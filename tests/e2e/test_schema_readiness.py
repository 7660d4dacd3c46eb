"""Readiness knows the schema: a replica whose database is behind the Alembic head it was
built for answers /health/ready with 503 and logs why; once migrated it is ready, and a
database already past its head (the next release migrated first) keeps it ready."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from orders.adapters.schema import SchemaHistory
from orders.app import create_app
from orders.settings import Settings
from tests.conftest import ROOT
from tests.e2e.test_operations import assert_unavailable, serve, with_database
from tests.support import asyncpg_dsn

NEXT_REVISION = "9999"
NEXT_MIGRATION = '''"""The next release's migration: it only has to exist."""

revision = "{revision}"
down_revision = "{down_revision}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
'''


def alembic(config: Path, database_url: str, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(config), *args],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        check=True,
        capture_output=True,
    )


@contextmanager
def logged() -> Iterator[io.StringIO]:
    """What the `orders` loggers write while the block runs (they do not propagate)."""
    logger = logging.getLogger("orders")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


@pytest.fixture(scope="module")
def next_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Alembic configuration of a build with one migration more than this one."""
    directory = tmp_path_factory.mktemp("next-release")
    shutil.copytree(
        ROOT / "alembic", directory / "alembic", ignore=shutil.ignore_patterns("__pycache__")
    )
    (head,) = SchemaHistory.from_alembic(ROOT / "pyproject.toml").heads
    (directory / "alembic" / "versions" / f"{NEXT_REVISION}_next.py").write_text(
        NEXT_MIGRATION.format(revision=NEXT_REVISION, down_revision=head)
    )
    config = directory / "pyproject.toml"
    config.write_text(f'[tool.alembic]\nscript_location = "{directory / "alembic"}"\n')
    return config


@pytest.fixture
def empty_database(database_url: str) -> Iterator[str]:
    """A database of its own with no migration applied."""
    url = make_url(database_url)
    name = f"orders_schema_{uuid.uuid4().hex[:12]}"

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(asyncpg_dsn(url.set(database="postgres")))
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    yield url.set(database=name).render_as_string(hide_password=False)
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def test_the_head_comes_from_the_shipped_migrations(next_release: Path) -> None:
    this = SchemaHistory.from_alembic(ROOT / "pyproject.toml")
    following = SchemaHistory.from_alembic(next_release)
    assert following.heads == {NEXT_REVISION}
    assert this.heads < following.known
    assert this.known < following.known


async def test_a_database_never_migrated_is_not_ready(
    empty_database: str, settings: Settings, collaborators: httpx.AsyncBaseTransport
) -> None:
    build = with_database(settings, empty_database)
    # create_app() installs the log handlers, so listen once it has.
    async with serve(build, collaborators) as client:
        with logged() as log:
            response = await client.get("/health/ready")
    assert_unavailable(response)
    assert response.json()["detail"] == "Database schema not up to date"
    assert "never migrated" in log.getvalue()


async def test_a_database_behind_the_head_is_not_ready_until_migrated(
    empty_database: str,
    next_release: Path,
    settings: Settings,
    collaborators: httpx.AsyncBaseTransport,
) -> None:
    alembic(ROOT / "pyproject.toml", empty_database, "upgrade", "head")
    (current,) = SchemaHistory.from_alembic(ROOT / "pyproject.toml").heads
    build = with_database(settings, empty_database, alembic_config=next_release)
    async with serve(build, collaborators) as client:
        with logged() as log:
            behind = await client.get("/health/ready")
        # The migrations Job of the next release runs while the replica is up.
        await asyncio.to_thread(alembic, next_release, empty_database, "upgrade", "head")
        migrated = await client.get("/health/ready")
    assert_unavailable(behind)
    # The log says why; the open answer does not name revisions.
    assert f"revision {current}, behind {NEXT_REVISION}" in log.getvalue()
    assert current not in behind.text
    assert migrated.status_code == 200, migrated.text


async def test_a_database_ahead_of_the_head_keeps_the_old_release_ready(
    empty_database: str,
    next_release: Path,
    settings: Settings,
    collaborators: httpx.AsyncBaseTransport,
) -> None:
    alembic(next_release, empty_database, "upgrade", "head")
    old_build = with_database(settings, empty_database)
    async with serve(old_build, collaborators) as client:
        response = await client.get("/health/ready")
    assert response.status_code == 200, response.text


def test_migrations_that_cannot_be_read_stop_the_start(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="ALEMBIC_CONFIG: cannot read the migrations"):
        create_app(settings.model_copy(update={"alembic_config": tmp_path / "missing.toml"}))
