"""Idempotency keys: a repeated request answers what the first one answered (docs/api.md;
the store: docs/adr/0006-idempotency-key-store.md).

A key belongs to one caller and one request (its fingerprint). Placing an order stores the
key with the order, in the same transaction (`OrderService.place_order`): an acknowledged
order is never placed twice. Pay and cancel call out while they run, so their key is held
first, with a lease, and their answer stored when they end (`IdempotentRequests`); if the
process dies in between, the lease runs out and a retry with the key runs the action again,
which the order's own pending outcomes keep from charging twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NoReturn
from uuid import UUID, uuid4

from orders.domain import OrderView
from orders.service.background import BackgroundLoop
from orders.service.ports import (
    IdempotencyKeys,
    KeyRecord,
    RequestKey,
    ServiceError,
    StoredAnswer,
)

logger = logging.getLogger(__name__)


class KeyReused(ServiceError):
    """The key was used before by this caller for another request."""

    def __init__(self, key: str) -> None:
        super().__init__("this Idempotency-Key was used for a different request")
        self.key = key


class KeyInFlight(ServiceError):
    """The first request with this key is still running."""

    def __init__(self, key: str) -> None:
        super().__init__("a request with this Idempotency-Key is still being processed")
        self.key = key


class AlreadyAnswered(ServiceError):
    """The request was answered before; `answer` is what to send again."""

    def __init__(self, answer: StoredAnswer) -> None:
        super().__init__("answered before")
        self.answer = answer


@dataclass(frozen=True, slots=True)
class Idempotent:
    """A keyed request, and how to render its answer from the order it produced."""

    key: RequestKey
    answer: Callable[[OrderView], StoredAnswer]


def refuse(record: KeyRecord, key: RequestKey) -> NoReturn:
    """Raise what a live record means for a request with the same key."""
    if record.fingerprint != key.fingerprint:
        raise KeyReused(key.key)
    if record.answer is not None:
        raise AlreadyAnswered(record.answer)
    raise KeyInFlight(key.key)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class IdempotentRequests:
    """Keys of requests that run outside one transaction (pay, cancel).

    `ttl` is how long a key lives; `lease` how long a running request holds it before a
    retry may take over (as long as an order's claim: the action cannot run longer).
    """

    def __init__(
        self,
        keys: IdempotencyKeys,
        *,
        ttl: timedelta,
        lease: timedelta,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._keys = keys
        self._ttl = ttl
        self._lease = lease
        self._clock = clock

    async def begin(self, key: RequestKey) -> UUID:
        """Hold the key for this request and return the token to finish it with; raise
        AlreadyAnswered, KeyReused or KeyInFlight when another request has it."""
        token = uuid4()
        now = self._clock()
        record = await self._keys.begin(key, token, now, now + self._lease, now + self._ttl)
        if record is not None:
            refuse(record, key)
        return token

    async def finish(self, key: RequestKey, token: UUID, answer: StoredAnswer | None) -> None:
        """Store the answer to replay, or with None forget the key (a retry runs afresh)."""
        if answer is None:
            await self._keys.release(key, token)
        else:
            await self._keys.finish(key, token, answer)

    async def purge(self, batch_size: int) -> int:
        """Delete expired keys, a batch at a time; return how many."""
        purged = 0
        while True:
            deleted = await self._keys.purge(self._clock(), batch_size)
            purged += deleted
            if deleted < batch_size:
                return purged


class KeyPurger(BackgroundLoop):
    """Deletes expired keys in the background: `start()` in the lifespan, `await stop()` at
    its end. When nothing has expired, a pass is one indexed statement."""

    name = "key-purger"

    def __init__(
        self, requests: IdempotentRequests, *, interval: float, batch_size: int = 1000
    ) -> None:
        super().__init__()
        self._requests = requests
        self._interval = interval
        self._batch_size = batch_size

    async def _run(self) -> None:
        # Keys live for hours: nothing is lost by waiting an interval before the first pass.
        while not await self._wait():
            try:
                purged = await self._requests.purge(self._batch_size)
            except Exception as error:
                # A database outage, say: try again next time, never die.
                logger.warning(
                    "purging idempotency keys failed (%s: %s)", type(error).__name__, error
                )
            else:
                if purged:
                    logger.info("deleted %d expired idempotency keys", purged)

    async def _wait(self) -> bool:
        """Wait an interval; True when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self._interval)
        return self._stopping.is_set()
