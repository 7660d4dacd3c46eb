"""The schema this build was made for, and whether a database has it.

The expected revision is the head of the Alembic migrations shipped with the service (the
image carries `alembic/` next to the `pyproject.toml` that configures it), so it follows new
migrations without being written down anywhere else. Readiness asks the database which
revision it is at: a replica whose database is behind that head must not take traffic.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine

# Alembic's default; alembic/env.py does not rename it.
VERSION_TABLE = "alembic_version"
_UNDEFINED_TABLE = "42P01"
_READ_REVISION = text(f"SELECT version_num FROM {VERSION_TABLE}")  # noqa: S608


@dataclass(frozen=True)
class SchemaHistory:
    """The revisions this build knows, and which of them are its heads."""

    heads: frozenset[str]
    known: frozenset[str]

    @classmethod
    def from_alembic(cls, config_file: Path) -> SchemaHistory:
        """Read the migrations Alembic's configuration in `config_file` points at.

        Raises OSError when the file or the migrations cannot be read.
        """
        # Imported here: only a process that serves (or tests) needs Alembic's script loader.
        from alembic.config import Config
        from alembic.script import ScriptDirectory
        from alembic.util import CommandError

        if not config_file.is_file():
            raise FileNotFoundError(f"{config_file}: no such file")
        try:
            scripts = ScriptDirectory.from_config(Config(toml_file=str(config_file)))
            heads = frozenset(scripts.get_heads())
            known = frozenset(script.revision for script in scripts.walk_revisions())
        except CommandError as error:
            raise OSError(f"{config_file}: {error}") from None
        if not heads:
            raise OSError(f"{config_file}: the migrations have no head revision")
        return cls(heads=heads, known=known)

    def lag(self, current: frozenset[str]) -> str | None:
        """Why a database at revisions `current` cannot serve this build; None when it can.

        A revision this build does not know is newer than it: the next release has migrated
        while this one still runs. That is the normal middle of a rollout (migrations are
        made to keep the previous release working), so it counts as ready.
        """
        if not current:
            return "the database has no migration applied"
        if current == self.heads or not current <= self.known:
            return None
        return (
            f"the database is at revision {', '.join(sorted(current))}, behind "
            f"{', '.join(sorted(self.heads))} that this build needs"
        )


async def schema_lag(engine: AsyncEngine, history: SchemaHistory, within: float) -> str | None:
    """Why the database cannot serve this build yet (SchemaHistory.lag), or None when it can.

    One short query, the one a bare ping would cost anyway: it proves the database answers
    and reads its revision. Raises TimeoutError or a driver error when the database is down.
    """
    async with asyncio.timeout(within), engine.connect() as connection:
        try:
            result = await connection.execute(_READ_REVISION)
        except ProgrammingError as error:
            if getattr(error.orig, "sqlstate", None) == _UNDEFINED_TABLE:
                return f"the database has no {VERSION_TABLE} table: it was never migrated"
            raise
        current = frozenset(str(revision) for revision in result.scalars())
    return history.lag(current)
