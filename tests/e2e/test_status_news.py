"""Kitchen's and delivery's news through the real broker: orders move to dispatched and
delivered once, whatever arrives twice, early, for the wrong order, or malformed; what cannot
be handled ends in the dead-letter queue with its reason, and the consumer keeps going."""

from __future__ import annotations

import asyncio
import json
import uuid
from functools import partial
from typing import Any

import aio_pika
import asyncpg
import httpx
from aio_pika.abc import AbstractConnection
from asgi_lifespan import LifespanManager
from sqlalchemy.engine import make_url
from starlette.applications import Starlette

from orders.adapters.database import make_engine
from orders.adapters.events import (
    REASON_HEADER,
    EventCounts,
    StatusConsumer,
    declare_status_queue,
)
from orders.adapters.unit_of_work import SqlUnitOfWork
from orders.app import create_app
from orders.service.status import StatusService
from orders.settings import DatabaseSettings
from orders_dev.standins import Courier, create_standins
from tests.broker import Listener, VirtualHost, check_event, listen
from tests.conftest import TokenFactory, make_settings
from tests.support import asyncpg_dsn, client_for, place

LATTE = {"product": "latte", "size": "big", "quantity": 2}
QUEUE = "orders.status"


async def send(
    connection: AbstractConnection,
    exchange: str,
    key: str,
    body: Any,
    message_id: str | None = None,
) -> str:
    """Publish as kitchen or delivery would; return the message id."""
    message_id = message_id or str(uuid.uuid4())
    channel = await connection.channel()
    try:
        target = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        await target.publish(
            aio_pika.Message(raw, message_id=message_id, content_type="application/json"),
            routing_key=key,
        )
    finally:
        await channel.close()
    return message_id


def dispatched(order_id: str) -> dict[str, str]:
    return {"schedule_id": f"schedule-{order_id[:8]}", "order_id": order_id}


async def status_of(client: httpx.AsyncClient, order_id: str) -> str:
    response = await client.get(f"/orders/{order_id}")
    assert response.status_code == 200
    status: str = response.json()["status"]
    return status


async def until_status(client: httpx.AsyncClient, order_id: str, status: str) -> None:
    async with asyncio.timeout(20):
        while await status_of(client, order_id) != status:  # noqa: ASYNC110 (polls the API)
            await asyncio.sleep(0.05)


async def event_types(database_url: str, order_id: str) -> list[str]:
    connection = await asyncpg.connect(asyncpg_dsn(make_url(database_url)))
    try:
        rows = await connection.fetch(
            "SELECT type FROM outbox WHERE order_id = $1 ORDER BY sequence", uuid.UUID(order_id)
        )
    finally:
        await connection.close()
    return [row["type"] for row in rows]


async def dead_letters(connection: AbstractConnection, queue: str) -> Listener:
    """What the consumer of `queue` dead-letters (declared first, as the consumer would)."""
    channel = await connection.channel()
    await declare_status_queue(channel, queue)
    await channel.close()
    return await listen(connection, "", "", queue=f"{queue}.dead")


def reasons(dead: Listener) -> dict[str, str]:
    return {m.message_id or "": m.headers[REASON_HEADER] for m in dead.messages}


async def test_news_moves_orders_once_and_dead_letters_the_rest(
    events_app: Starlette,
    amqp: AbstractConnection,
    token_for: TokenFactory,
    clean_database: str,
) -> None:
    dead = await dead_letters(amqp, QUEUE)
    async with client_for(events_app, token_for("alice")) as client:
        travels = (await place(client, LATTE))["id"]
        crossed = (await place(client, LATTE))["id"]
        cancelled = (await place(client, LATTE))["id"]
        unpaid = (await place(client, LATTE))["id"]
        stuck = (await place(client, LATTE))["id"]
        for order in (travels, crossed, stuck):
            assert (await client.post(f"/orders/{order}/pay")).status_code == 200
        assert (await client.post(f"/orders/{cancelled}/cancel")).status_code == 200

        # The same message twice, then the same news under another id.
        twice = await send(amqp, "kitchen", "schedule.dispatched", dispatched(travels))
        await send(amqp, "kitchen", "schedule.dispatched", dispatched(travels), twice)
        await send(amqp, "kitchen", "schedule.dispatched", dispatched(travels))
        await until_status(client, travels, "dispatched")
        await send(amqp, "delivery", "order.delivered", {"order_id": travels})
        await send(amqp, "delivery", "order.delivered", {"order_id": travels})
        await until_status(client, travels, "delivered")

        # Delivered overtakes dispatched: applied once the dispatch is known.
        await send(amqp, "delivery", "order.delivered", {"order_id": crossed})
        await send(amqp, "kitchen", "schedule.dispatched", dispatched(crossed))
        await until_status(client, crossed, "delivered")

        bad = {
            await send(amqp, "kitchen", "schedule.dispatched", dispatched(str(uuid.uuid4()))): (
                "not found"
            ),
            await send(amqp, "kitchen", "schedule.dispatched", dispatched(cancelled)): (
                "cannot dispatch an order in status 'cancelled'"
            ),
            await send(amqp, "kitchen", "schedule.dispatched", b"{not json"): "not JSON",
            await send(amqp, "kitchen", "schedule.dispatched", {"order_id": unpaid}): (
                "schedule_id is missing"
            ),
            await send(amqp, "delivery", "order.delivered", {"order_id": "nope"}): ("not a UUID"),
            await send(amqp, "kitchen", "schedule.dispatched", dispatched(unpaid)): (
                "cannot dispatch an order in status 'created'"
            ),
            await send(amqp, "delivery", "order.delivered", {"order_id": unpaid}): (
                "cannot deliver an order in status 'created'"
            ),
            # In the kitchen, never dispatched: tried a few times, then refused.
            await send(amqp, "delivery", "order.delivered", {"order_id": stuck}): (
                "gave up after 3 attempts (NewsTooEarly"
            ),
        }
        await dead.wait_for(lambda messages: len(messages) >= len(bad), within=30)
        await asyncio.sleep(0.3)
        found = reasons(dead)
        assert set(found) == set(bad)
        for message_id, reason in bad.items():
            assert reason in found[message_id], (reason, found[message_id])
        assert all(m.headers["x-orders-routing-key"] for m in dead.messages)

        # Still consuming after all that.
        late = (await place(client, LATTE))["id"]
        assert (await client.post(f"/orders/{late}/pay")).status_code == 200
        await send(amqp, "kitchen", "schedule.dispatched", dispatched(late))
        await until_status(client, late, "dispatched")

        assert await status_of(client, cancelled) == "cancelled"
        assert await status_of(client, unpaid) == "created"
        assert await status_of(client, stuck) == "progress"

    news = ["order.dispatched", "order.delivered"]
    lifecycle = ["order.placed", "order.paid", "order.scheduled"]
    assert await event_types(clean_database, travels) == lifecycle + news
    assert await event_types(clean_database, crossed) == lifecycle + news


async def test_a_database_outage_retries_then_dead_letters(
    vhost: VirtualHost, amqp: AbstractConnection
) -> None:
    # A database nobody listens on: every try fails as an outage does.
    engine = make_engine(
        DatabaseSettings(
            database_url="postgresql://postgres@127.0.0.1:9/none", db_connect_timeout=1
        )
    )
    queue = f"orders.status.{uuid.uuid4().hex[:8]}"
    counts = EventCounts()
    consumer = StatusConsumer(
        StatusService(partial(SqlUnitOfWork, engine)),
        vhost.url,
        counts,
        queue=queue,
        prefetch=5,
        max_attempts=2,
        retry_max=0.5,
    )
    consumer.start()
    try:
        async with asyncio.timeout(20):
            while not consumer.connected:  # noqa: ASYNC110 (a flag, no event to wait on)
                await asyncio.sleep(0.05)
        dead = await dead_letters(amqp, queue)
        message_id = await send(
            amqp, "kitchen", "schedule.dispatched", dispatched(str(uuid.uuid4()))
        )
        await dead.wait_for(lambda messages: len(messages) == 1, within=30)
        [message] = dead.messages
        assert message.message_id == message_id
        assert "gave up after 2 attempts (StorageUnavailable" in message.headers[REASON_HEADER]
        assert counts.retried == 1
        assert counts.dead_lettered == 1
        assert consumer.connected
    finally:
        await consumer.stop()
        await engine.dispose()


async def test_an_order_travels_to_delivered_through_the_broker(
    clean_database: str,
    key_pair: tuple[bytes, bytes],
    vhost: VirtualHost,
    amqp: AbstractConnection,
    token_for: TokenFactory,
) -> None:
    # The kitchen stand-in dispatches and delivery delivers, over the broker, on their own.
    courier = Courier(vhost.url, dispatch_seconds=0.1, delivery_seconds=0.1)
    standins = httpx.ASGITransport(app=create_standins(courier=courier))
    settings = make_settings(
        clean_database, key_pair[1], broker_url=vhost.url, relay_idle_seconds=0.05
    )
    listener = await listen(amqp, "orders", "#")
    async with (
        LifespanManager(create_app(settings, transport=standins)) as manager,
        client_for(manager.app, token_for("alice")) as client,
    ):
        order = (await place(client, LATTE))["id"]
        assert (await client.post(f"/orders/{order}/pay")).json()["status"] == "progress"
        await until_status(client, order, "delivered")
        await listener.wait_for(lambda messages: len(messages) == 5, within=20)
        await courier.close()
    assert [key for key, _ in courier.sent] == ["schedule.dispatched", "order.delivered"]
    assert [m.event["type"] for m in listener.messages] == [
        "order.placed",
        "order.paid",
        "order.scheduled",
        "order.dispatched",
        "order.delivered",
    ]
    for message in listener.messages:
        check_event(message.event)
    assert listener.messages[-1].event["order"]["status"] == "delivered"
