"""Idempotency keys in PostgreSQL (table `idempotency_keys`), in plain SQL.

An expired key counts as absent everywhere, so correctness never waits for the clean-up:
storing a key over an expired one replaces it in the same statement. Storing a key that
another transaction is storing waits for that transaction (the primary key's uniqueness
check), then finds its outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orders.adapters.database import driver_fetch
from orders.service.ports import KeyRecord, RequestKey, StoredAnswer

# Replaces an expired key, or takes over a running one whose holder's lease has run out.
_BEGIN: Final = """
INSERT INTO idempotency_keys AS k (owner, key, fingerprint, token, locked_until, expires)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (owner, key) DO UPDATE SET
    fingerprint = excluded.fingerprint, token = excluded.token,
    locked_until = excluded.locked_until, expires = excluded.expires,
    status = NULL, body = NULL, location = NULL, etag = NULL
WHERE k.expires <= $7
    OR (k.status IS NULL AND k.locked_until <= $7 AND k.fingerprint = excluded.fingerprint)
RETURNING true"""
_FIND: Final = """
SELECT fingerprint, status, body, location, etag FROM idempotency_keys
WHERE owner = $1 AND key = $2 AND expires > $3"""
_FINISH: Final = """
UPDATE idempotency_keys
SET status = $4, body = $5, location = $6, etag = $7, token = NULL, locked_until = NULL
WHERE owner = $1 AND key = $2 AND token = $3"""
_RELEASE: Final = "DELETE FROM idempotency_keys WHERE owner = $1 AND key = $2 AND token = $3"
_PURGE: Final = """
WITH expired AS (
    SELECT owner, key FROM idempotency_keys WHERE expires <= $1 LIMIT $2
), deleted AS (
    DELETE FROM idempotency_keys AS k USING expired
    WHERE k.owner = expired.owner AND k.key = expired.key
    RETURNING 1
)
SELECT count(*) FROM deleted"""

_ADD: Final = text(
    """
INSERT INTO idempotency_keys AS k (owner, key, fingerprint, status, body, location, etag, expires)
VALUES (:owner, :key, :fingerprint, :status, :body, :location, :etag, :expires)
ON CONFLICT (owner, key) DO UPDATE SET
    fingerprint = excluded.fingerprint, token = NULL, locked_until = NULL,
    status = excluded.status, body = excluded.body, location = excluded.location,
    etag = excluded.etag, expires = excluded.expires
WHERE k.expires <= :now
RETURNING true"""
)
_FIND_LIVE: Final = text(
    """
SELECT fingerprint, status, body, location, etag FROM idempotency_keys
WHERE owner = :owner AND key = :key AND expires > :now"""
)


def _record(row: Sequence[Any]) -> KeyRecord:
    fingerprint, status, body, location, etag = row
    answer = None if status is None else StoredAnswer(status, bytes(body), location, etag)
    return KeyRecord(bytes(fingerprint), answer)


class SqlKeyRepository:
    """The keys of one transaction (see SqlUnitOfWork)."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def add(
        self, key: RequestKey, answer: StoredAnswer, now: datetime, expires: datetime
    ) -> KeyRecord | None:
        where = {"owner": key.owner, "key": key.key, "now": now}
        stored = await self._connection.execute(
            _ADD,
            {
                **where,
                "fingerprint": key.fingerprint,
                "status": answer.status,
                "body": answer.body,
                "location": answer.location,
                "etag": answer.etag,
                "expires": expires,
            },
        )
        if stored.first() is not None:
            return None
        row = (await self._connection.execute(_FIND_LIVE, where)).first()
        if row is None:
            # Expired between the two statements: the caller's retry stores it afresh.
            return KeyRecord(key.fingerprint, None)
        return _record(row)


class SqlIdempotencyKeys:
    """Keys outside transactions: each call one statement in autocommit, on the driver."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def begin(
        self, key: RequestKey, token: UUID, now: datetime, locked_until: datetime, expires: datetime
    ) -> KeyRecord | None:
        args = (key.owner, key.key, key.fingerprint, token, locked_until, expires, now)
        # The row found may expire or be released just then: try again, a few times at most.
        for _ in range(3):
            if await driver_fetch(self._engine, _BEGIN, args):
                return None
            rows = await driver_fetch(self._engine, _FIND, (key.owner, key.key, now))
            if rows:
                return _record(rows[0])
        return KeyRecord(key.fingerprint, None)

    async def finish(self, key: RequestKey, token: UUID, answer: StoredAnswer) -> None:
        await driver_fetch(
            self._engine,
            _FINISH,
            (key.owner, key.key, token, answer.status, answer.body, answer.location, answer.etag),
        )

    async def release(self, key: RequestKey, token: UUID) -> None:
        await driver_fetch(self._engine, _RELEASE, (key.owner, key.key, token))

    async def purge(self, now: datetime, limit: int) -> int:
        [row] = await driver_fetch(self._engine, _PURGE, (now, limit))
        return int(row[0])
