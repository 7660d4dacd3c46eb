"""The relay's side of the transactional outbox: take events to publish, mark them published,
measure what waits.

Events of one order are published strictly in sequence, whatever the number of relays: a
batch locks, with `FOR UPDATE SKIP LOCKED`, only each order's *first* unpublished event (its
head), and takes that order's later unpublished events along with it. No other relay can take
an order whose head is locked: the head is skipped, and every later event still has an
unpublished one before it. So the head's lock is a lock on the order's whole queue until the
batch commits, and an event never goes out before the one before it was confirmed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final
from uuid import UUID

from sqlalchemy import ARRAY, Integer, Interval, Uuid, bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection

# The heads are found through the partial index on `position` (unpublished rows only) and
# the unique index on (order_id, sequence); the followers through the latter again.
_CLAIM: Final = text(
    """
WITH heads AS (
    SELECT head.order_id
    FROM outbox AS head
    WHERE head.published IS NULL
      AND NOT EXISTS (
          SELECT FROM outbox AS earlier
          WHERE earlier.order_id = head.order_id
            AND earlier.sequence < head.sequence
            AND earlier.published IS NULL
      )
    ORDER BY head.position
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
SELECT event.id, event.order_id, event.sequence, event.type, event.body::text AS body
FROM outbox AS event JOIN heads USING (order_id)
WHERE event.published IS NULL
ORDER BY event.order_id, event.sequence"""
).bindparams(bindparam("limit", type_=Integer))
_MARK: Final = text("UPDATE outbox SET published = now() WHERE id = ANY(:ids)").bindparams(
    bindparam("ids", type_=ARRAY(Uuid(as_uuid=True)))
)
# Every worker asks once per interval, and the backlog is largest exactly when the broker is
# away: the count stops at LAG_COUNTED_UP_TO, and the oldest is the head of the line (the
# lowest position), both through the partial index, so the query's cost stays bounded.
LAG_COUNTED_UP_TO: Final = 10_000
_LAG: Final = text(
    """
SELECT
    (SELECT count(*) FROM (
        SELECT 1 FROM outbox WHERE published IS NULL LIMIT :most
    ) AS counted) AS waiting,
    (SELECT occurred FROM outbox WHERE published IS NULL ORDER BY position LIMIT 1) AS oldest"""
).bindparams(most=LAG_COUNTED_UP_TO)
_PURGE: Final = text("DELETE FROM outbox WHERE published < now() - :keep").bindparams(
    bindparam("keep", type_=Interval)
)


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One event to publish: `body` is the message body, as JSON text."""

    id: UUID
    order_id: UUID
    sequence: int
    type: str
    body: str


@dataclass(frozen=True, slots=True)
class OutboxLag:
    """How many events wait to be published (counted up to LAG_COUNTED_UP_TO), and when the
    first in line happened."""

    waiting: int
    oldest: datetime | None

    def age(self, now: datetime) -> float:
        """Seconds since the oldest waiting event happened; 0 when none waits."""
        return max(0.0, (now - self.oldest).total_seconds()) if self.oldest else 0.0


async def claim(connection: AsyncConnection, limit: int) -> list[list[OutboxEvent]]:
    """Lock up to `limit` orders with events to publish (see the module's docstring) and
    return their unpublished events: one list per order, in sequence. The locks hold until
    the connection's transaction ends."""
    rows = await connection.execute(_CLAIM, {"limit": limit})
    orders: dict[UUID, list[OutboxEvent]] = {}
    for row in rows:
        event = OutboxEvent(row.id, row.order_id, row.sequence, row.type, row.body)
        orders.setdefault(event.order_id, []).append(event)
    return list(orders.values())


async def mark_published(connection: AsyncConnection, ids: Sequence[UUID]) -> None:
    if ids:
        await connection.execute(_MARK, {"ids": list(ids)})


async def lag(connection: AsyncConnection) -> OutboxLag:
    row = (await connection.execute(_LAG)).one()
    return OutboxLag(row.waiting, row.oldest)


async def purge(connection: AsyncConnection, keep: timedelta) -> int:
    """Delete events published more than `keep` ago; return how many."""
    return (await connection.execute(_PURGE, {"keep": keep})).rowcount
