"""Order events over RabbitMQ, with aio-pika: the outbox relay publishes what happened to
orders; the status consumer applies kitchen's and delivery's news. The messages are those of
asyncapi.yaml; why an outbox: docs/adr/0005-transactional-outbox.md.

Both run as background tasks for as long as the process (see `EventWorkers`), each on a
connection of its own. Neither ever stops the process: when the broker or the database is
unreachable they log, wait (exponential back-off up to a bound) and try again; meanwhile
events wait in the outbox and status messages in their queue.

Topology, declared (idempotently) by whoever connects first:

- `orders` (topic): the events; routing key = event type (`order.placed`, ...).
- `kitchen`, `delivery` (topic): where the news comes from; declared too, so that the queue
  can be bound before either of those services ever started.
- `<queue>` (quorum, durable): bound to `kitchen`/`schedule.dispatched` and
  `delivery`/`order.delivered`.
- `<queue>.dead` (quorum, durable) behind the fanout exchange `<queue>.dead`: what cannot be
  handled, with the reason in the `x-orders-reason` header. The queue also dead-letters there
  by itself past `BROKER_DELIVERY_LIMIT` deliveries, should a message ever outlive its
  consumers' own count (a consumer killed while handling it, again and again).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final
from uuid import UUID

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from orders.adapters import outbox
from orders.domain import DomainError
from orders.service.background import BackgroundLoop
from orders.service.status import MalformedMessage, Outcome, StatusService, read_news
from orders.settings import EventSettings

logger = logging.getLogger(__name__)

EVENTS_EXCHANGE: Final = "orders"
KITCHEN_EXCHANGE: Final = "kitchen"
DELIVERY_EXCHANGE: Final = "delivery"
# The queue's own limit, a safety net well above any CONSUMER_MAX_ATTEMPTS (which must stay
# below it): fixed, because a queue's arguments cannot change once declared.
BROKER_DELIVERY_LIMIT: Final = 100
REASON_HEADER: Final = "x-orders-reason"
CONNECT_TIMEOUT_SECONDS: Final = 10.0
CONFIRM_TIMEOUT_SECONDS: Final = 15.0
RETRY_BASE_SECONDS: Final = 0.5
PURGE_EVERY_SECONDS: Final = 3600.0


@dataclass(slots=True)
class EventCounts:
    """Counters since the process started, for metrics: monotonic, never reset."""

    published: int = 0
    consumed: int = 0
    duplicates: int = 0
    retried: int = 0
    dead_lettered: int = 0


def backoff(failures: int, ceiling: float) -> float:
    """Seconds to wait after `failures` failures in a row: doubling, jittered, bounded."""
    delay: float = min(ceiling, RETRY_BASE_SECONDS * 2 ** min(failures, 30))
    return delay * random.uniform(0.5, 1.0)  # noqa: S311 (jitter, not cryptography)


# The names the broker shows for the connections (management UI, `rabbitmqctl
# list_connections client_properties`), so an operator can tell the two apart.
RELAY_CONNECTION: Final = "orders outbox relay"
CONSUMER_CONNECTION: Final = "orders status consumer"


async def _connect(url: str, name: str) -> AbstractConnection:
    return await aio_pika.connect(
        url, timeout=CONNECT_TIMEOUT_SECONDS, client_properties={"connection_name": name}
    )


class _Worker(BackgroundLoop):
    """A loop that runs `_session` (one connection's life), again after a back-off when it
    fails, until `stop()`."""

    name = "worker"

    def __init__(self, url: str, counts: EventCounts, retry_max: float) -> None:
        super().__init__()
        self._url = url
        self._counts = counts
        self._retry_max = retry_max
        self.connected = False

    async def _session(self) -> None:
        raise NotImplementedError

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                await self._session()
                failures = 0
            except Exception as error:
                delay = backoff(failures, self._retry_max)
                failures += 1
                logger.warning(
                    "%s: %s: %s; trying again in %.1f s",
                    self.name,
                    type(error).__name__,
                    error or "failed",
                    delay,
                )
            finally:
                self.connected = False
            await self._pause(RETRY_BASE_SECONDS if failures == 0 else delay)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


class OutboxRelay(_Worker):
    """Publishes the outbox to the `orders` exchange with publisher confirms.

    A batch is one transaction: lock up to `batch_size` orders' pending events (see
    `adapters.outbox`), publish each order's events one after another (each confirmed before
    the next is sent), the orders side by side, and mark published what was confirmed. If
    the broker fails mid-batch, what was confirmed is marked and the rest waits; if the
    process dies, nothing is marked and all of it goes out again with the same ids.
    """

    name = "outbox relay"

    def __init__(
        self,
        engine: AsyncEngine,
        url: str,
        counts: EventCounts,
        *,
        batch_size: int,
        idle_seconds: float,
        retry_max: float,
        keep: timedelta | None = None,
    ) -> None:
        super().__init__(url, counts, retry_max)
        self._engine = engine
        self._batch_size = batch_size
        self._idle = idle_seconds
        self._keep = keep
        self._last_purge = 0.0

    async def _session(self) -> None:
        async with await _connect(self._url, RELAY_CONNECTION) as connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await declare_events_exchange(channel)
            self.connected = True
            logger.info("outbox relay: connected to the broker")
            while not self._stopping.is_set():
                sent = await self.publish_batch(exchange)
                await self._purge()
                if sent < self._batch_size:
                    await self._pause(self._idle)

    async def publish_batch(self, exchange: AbstractExchange) -> int:
        """Publish one batch; return how many events were confirmed."""
        confirmed: list[UUID] = []

        async def publish_order(events: list[outbox.OutboxEvent]) -> None:
            for event in events:
                await exchange.publish(
                    aio_pika.Message(
                        event.body.encode(),
                        message_id=str(event.id),
                        type=event.type,
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=event.type,
                    # Nobody listening is fine for events: no return, no error.
                    mandatory=False,
                    timeout=CONFIRM_TIMEOUT_SECONDS,
                )
                confirmed.append(event.id)

        async with self._engine.connect() as connection, connection.begin():
            orders = await outbox.claim(connection, self._batch_size)
            results = await asyncio.gather(
                *(publish_order(events) for events in orders), return_exceptions=True
            )
            await outbox.mark_published(connection, confirmed)
        self._counts.published += len(confirmed)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return len(confirmed)

    async def _purge(self) -> None:
        if self._keep is None:
            return
        now = asyncio.get_running_loop().time()
        if self._last_purge and now - self._last_purge < PURGE_EVERY_SECONDS:
            return
        self._last_purge = now
        async with self._engine.connect() as connection, connection.begin():
            removed = await outbox.purge(connection, self._keep)
        if removed:
            logger.info("outbox relay: removed %d events published long ago", removed)


async def declare_events_exchange(channel: AbstractChannel) -> AbstractExchange:
    return await channel.declare_exchange(
        EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
    )


def dead_letter_name(queue: str) -> str:
    return f"{queue}.dead"


async def declare_status_queue(
    channel: AbstractChannel, queue: str
) -> tuple[aio_pika.abc.AbstractQueue, AbstractExchange]:
    """Declare the status queue, its bindings and its dead-letter queue; return the queue and
    the dead-letter exchange."""
    dead_exchange = await channel.declare_exchange(
        dead_letter_name(queue), aio_pika.ExchangeType.FANOUT, durable=True
    )
    dead_queue = await channel.declare_queue(
        dead_letter_name(queue), durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead_queue.bind(dead_exchange)
    status = await channel.declare_queue(
        queue,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": dead_letter_name(queue),
            "x-delivery-limit": BROKER_DELIVERY_LIMIT,
        },
    )
    for exchange, key in (
        (KITCHEN_EXCHANGE, "schedule.dispatched"),
        (DELIVERY_EXCHANGE, "order.delivered"),
    ):
        source = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        await status.bind(source, routing_key=key)
    return status, dead_exchange


def message_key(message: AbstractIncomingMessage) -> str:
    """The id a message is deduplicated by: its `message_id`, or else a digest of where it
    came from and what it says (the same news twice is still the same news)."""
    if message.message_id:
        return message.message_id
    digest = hashlib.sha256()
    for part in (message.exchange or "", message.routing_key or ""):
        digest.update(part.encode() + b"\0")
    digest.update(message.body)
    return "sha256:" + digest.hexdigest()


class StatusConsumer(_Worker):
    """Consumes the status queue and applies each message through `StatusService`.

    Handled (applied, already so, or a duplicate): acknowledged. Never handleable (malformed,
    unknown order, a transition the order refuses): dead-lettered at once with the reason.
    Failed for a reason that may pass (the database down, or `delivered` overtaking
    `dispatched`): returned to the queue after a short pause, and dead-lettered once it has
    been tried `max_attempts` times.
    """

    name = "status consumer"

    def __init__(
        self,
        service: StatusService,
        url: str,
        counts: EventCounts,
        *,
        queue: str,
        prefetch: int,
        max_attempts: int,
        retry_max: float,
    ) -> None:
        super().__init__(url, counts, retry_max)
        self._service = service
        self._queue = queue
        self._prefetch = prefetch
        self._max_attempts = max_attempts

    async def _session(self) -> None:
        async with await _connect(self._url, CONSUMER_CONNECTION) as connection:
            lost = asyncio.Event()
            channel = await connection.channel(publisher_confirms=True)
            connection.close_callbacks.add(lambda *_: lost.set())
            channel.close_callbacks.add(lambda *_: lost.set())
            await channel.set_qos(prefetch_count=self._prefetch)
            queue, dead = await declare_status_queue(channel, self._queue)

            async def on_message(message: AbstractIncomingMessage) -> None:
                try:
                    await self.handle(message, dead)
                except Exception as error:
                    # The channel went away mid-message: it is redelivered to someone.
                    logger.warning("status consumer: message not settled (%s)", error)
                    lost.set()

            tag = await queue.consume(on_message)
            self.connected = True
            logger.info("status consumer: consuming %s", self._queue)
            await _first(lost.wait(), self._stopping.wait())
            if lost.is_set() and not self._stopping.is_set():
                raise ConnectionError("the broker closed the connection")
            with contextlib.suppress(Exception):
                await queue.cancel(tag)

    async def handle(self, message: AbstractIncomingMessage, dead: AbstractExchange) -> None:
        """Handle one message and settle it (ack, requeue or dead-letter)."""
        attempt = _delivery_count(message) + 1
        try:
            news = read_news(message.exchange or "", message.routing_key or "", message.body)
            outcome = await self._service.apply(message_key(message), news)
        except (MalformedMessage, DomainError) as error:
            await self._dead_letter(message, dead, str(error), attempt)
            return
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            if attempt >= self._max_attempts:
                await self._dead_letter(
                    message, dead, f"gave up after {attempt} attempts ({reason})", attempt
                )
                return
            logger.warning(
                "status consumer: message %s failed (attempt %d of %d): %s",
                message.message_id,
                attempt,
                self._max_attempts,
                reason,
            )
            self._counts.retried += 1
            await asyncio.sleep(backoff(attempt - 1, 5.0))
            await message.nack(requeue=True)
            return
        await message.ack()
        if outcome is Outcome.DUPLICATE:
            self._counts.duplicates += 1
        else:
            self._counts.consumed += 1

    async def _dead_letter(
        self,
        message: AbstractIncomingMessage,
        dead: AbstractExchange,
        reason: str,
        attempt: int,
    ) -> None:
        logger.warning(
            "status consumer: dead-lettering message %s from %s/%s: %s",
            message.message_id,
            message.exchange,
            message.routing_key,
            reason,
        )
        headers = dict(message.headers or {})
        headers.update(
            {
                REASON_HEADER: reason[:1000],
                "x-orders-exchange": message.exchange or "",
                "x-orders-routing-key": message.routing_key or "",
                "x-orders-attempts": attempt,
            }
        )
        await dead.publish(
            aio_pika.Message(
                message.body,
                headers=headers,
                message_id=message.message_id,
                content_type=message.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=message.routing_key or "",
            mandatory=False,
            timeout=CONFIRM_TIMEOUT_SECONDS,
        )
        # Only once the dead-letter copy is confirmed: a failure before leaves the original
        # in the queue.
        await message.ack()
        self._counts.dead_lettered += 1


def _delivery_count(message: AbstractIncomingMessage) -> int:
    # Quorum queues count earlier deliveries in this header (absent on the first).
    count = (message.headers or {}).get("x-delivery-count")
    return count if isinstance(count, int) and not isinstance(count, bool) else 0


async def _first(*waits: Awaitable[Any]) -> None:
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


class EventWorkers:
    """The relay and the consumer a process runs (either may be off): `start()` and
    `await stop()` in the lifespan, `counts` for metrics, `lag()` for the outbox lag."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        relay: OutboxRelay | None,
        consumer: StatusConsumer | None,
        counts: EventCounts,
    ) -> None:
        self._engine = engine
        self.relay = relay
        self.consumer = consumer
        self.counts = counts

    def start(self) -> None:
        for worker in (self.relay, self.consumer):
            if worker is not None:
                worker.start()

    async def stop(self) -> None:
        await asyncio.gather(
            *(worker.stop() for worker in (self.relay, self.consumer) if worker is not None)
        )

    async def lag(self) -> outbox.OutboxLag:
        """Events waiting in the outbox and the oldest one's time (one indexed query)."""
        async with self._engine.connect() as connection:
            return await outbox.lag(connection)


def build_workers(
    engine: AsyncEngine,
    status: StatusService,
    settings: EventSettings,
    *,
    relay: bool,
    consumer: bool,
) -> EventWorkers:
    """The workers asked for (and allowed by `settings`); none without a BROKER_URL."""
    counts = EventCounts()
    url = settings.broker_url.get_secret_value() if settings.broker_url is not None else None
    return EventWorkers(
        engine,
        relay=OutboxRelay(
            engine,
            url,
            counts,
            batch_size=settings.relay_batch_size,
            idle_seconds=settings.relay_idle_seconds,
            retry_max=settings.relay_retry_max_seconds,
            keep=timedelta(hours=settings.outbox_keep_hours),
        )
        if url is not None and relay and settings.relay_enabled
        else None,
        consumer=StatusConsumer(
            status,
            url,
            counts,
            queue=settings.consumer_queue,
            prefetch=settings.consumer_prefetch,
            max_attempts=settings.consumer_max_attempts,
            retry_max=settings.relay_retry_max_seconds,
        )
        if url is not None and consumer and settings.consumer_enabled
        else None,
        counts=counts,
    )
