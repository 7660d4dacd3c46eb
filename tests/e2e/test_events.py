"""Order events on the machine's real RabbitMQ (a virtual host per session) and PostgreSQL:
what is published, in which order, through a broker outage and a relay killed mid-batch."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import asyncpg
import httpx
from aio_pika.abc import AbstractConnection
from asgi_lifespan import LifespanManager
from sqlalchemy.engine import make_url
from starlette.applications import Starlette

from orders.adapters.database import make_engine
from orders.adapters.events import EventCounts, OutboxRelay
from orders.app import create_app
from orders.settings import DatabaseSettings
from tests.broker import VirtualHost, by_order, check_event, listen
from tests.conftest import ROOT, TokenFactory, make_settings
from tests.support import asyncpg_dsn, client_for, place

LATTE = {"product": "latte", "size": "big", "quantity": 2}
MOCHA = {"product": "mocha", "size": "small", "quantity": 1}


async def outbox_rows(database_url: str) -> list[dict[str, Any]]:
    connection = await asyncpg.connect(asyncpg_dsn(make_url(database_url)))
    try:
        rows = await connection.fetch(
            "SELECT id::text, order_id::text, sequence, type, published FROM outbox"
            " ORDER BY position"
        )
    finally:
        await connection.close()
    return [dict(row) for row in rows]


def check_messages(messages: list[Any]) -> None:
    """Every message is a valid event, published as §3.1 says."""
    for message in messages:
        check_event(message.event)
        assert message.routing_key == message.event["type"]
        assert message.message_id == message.event["id"]
        assert message.content_type == "application/json"
        assert message.persistent


async def test_lifecycle_publishes_exactly_the_events_in_order(
    events_app: Starlette, amqp: AbstractConnection, token_for: TokenFactory, clean_database: str
) -> None:
    listener = await listen(amqp, "orders", "#")
    async with client_for(events_app, token_for("alice")) as client:
        paid = (await place(client, LATTE))["id"]
        assert (await client.post(f"/orders/{paid}/pay")).status_code == 200
        cancelled = (await place(client, LATTE))["id"]
        assert (await client.post(f"/orders/{cancelled}/cancel")).status_code == 200
        refunded = (await place(client, MOCHA))["id"]
        assert (await client.post(f"/orders/{refunded}/pay")).status_code == 200
        assert (await client.post(f"/orders/{refunded}/cancel")).status_code == 200
        updated = (await place(client, LATTE))["id"]
        response = await client.put(f"/orders/{updated}", json={"order": [MOCHA]})
        assert response.status_code == 200
        assert (await client.delete(f"/orders/{updated}")).status_code == 204

    expected = {
        paid: ["order.placed", "order.paid", "order.scheduled"],
        cancelled: ["order.placed", "order.cancelled"],
        refunded: [
            "order.placed",
            "order.paid",
            "order.scheduled",
            "order.cancelled",
            "order.refunded",
        ],
        updated: ["order.placed", "order.updated", "order.deleted"],
    }
    total = sum(len(types) for types in expected.values())
    await listener.wait_for(lambda messages: len(messages) >= total, within=20)
    await asyncio.sleep(0.3)  # anything extra would have arrived by now
    assert len(listener.messages) == total
    check_messages(listener.messages)
    orders = by_order(listener.messages)
    assert {order: [kind for _, kind in events] for order, events in orders.items()} == expected
    for events in orders.values():
        assert [sequence for sequence, _ in events] == list(range(1, len(events) + 1))
    deleted = [m.event for m in listener.messages if m.event["type"] == "order.deleted"]
    assert deleted[0]["order"] is None
    last_paid = [m.event for m in listener.messages if m.event["order_id"] == paid][-1]
    assert last_paid["order"]["status"] == "progress"
    rows = await outbox_rows(clean_database)
    assert len(rows) == total
    assert all(row["published"] is not None for row in rows)


async def test_broker_outage_delays_events_and_loses_none(
    events_app: Starlette,
    amqp: AbstractConnection,
    vhost: VirtualHost,
    token_for: TokenFactory,
    clean_database: str,
) -> None:
    listener = await listen(amqp, "orders", "#")
    async with client_for(events_app, token_for("alice")) as client:
        first = (await place(client, LATTE))["id"]
        await listener.wait_for(lambda messages: len(messages) == 1, within=20)
        await asyncio.to_thread(vhost.revoke)
        try:
            placed = [first]
            for _ in range(10):
                placed.append((await place(client, LATTE))["id"])
            paid = placed[1]
            response = await client.post(f"/orders/{paid}/pay")
            assert response.status_code == 200
            assert response.json()["status"] == "progress"
            assert (await client.get("/orders")).status_code == 200
            waiting = [row for row in await outbox_rows(clean_database) if not row["published"]]
            assert len(waiting) == 12
        finally:
            await asyncio.to_thread(vhost.grant)
    # The listener's own connection kept its channel; the relay comes back on its own.
    await listener.wait_for(
        lambda messages: (
            len(by_order(messages)) == 11
            and sum(len(events) for events in by_order(messages).values()) == 13
        ),
        within=30,
    )
    check_messages(listener.messages)
    orders = by_order(listener.messages)
    assert orders[paid] == [(1, "order.placed"), (2, "order.paid"), (3, "order.scheduled")]
    assert all(orders[order] == [(1, "order.placed")] for order in placed if order != paid)
    assert all(row["published"] for row in await outbox_rows(clean_database))


async def test_a_relay_killed_mid_batch_loses_nothing(
    clean_database: str,
    key_pair: tuple[bytes, bytes],
    vhost: VirtualHost,
    amqp: AbstractConnection,
    collaborators: httpx.AsyncBaseTransport,
    token_for: TokenFactory,
) -> None:
    # The API writes the outbox only; a relay process of its own publishes it.
    settings = make_settings(clean_database, key_pair[1], broker_url=vhost.url, relay_enabled=False)
    async with (
        LifespanManager(create_app(settings, transport=collaborators)) as manager,
        client_for(manager.app, token_for("alice")) as client,
    ):
        orders = [(await place(client, LATTE))["id"] for _ in range(150)]
        for order in orders[:50]:
            response = await client.put(f"/orders/{order}", json={"order": [MOCHA]})
            assert response.status_code == 200
    total = 200
    listener = await listen(amqp, "orders", "#")
    env = {
        **os.environ,
        "DATABASE_URL": clean_database,
        "BROKER_URL": vhost.url,
        "CONSUMER_ENABLED": "false",
        # Small batches, so that the kill lands between the publishing and the marking.
        "RELAY_BATCH_SIZE": "5",
        "LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "orders.worker", "--relay"]
    relay = await asyncio.create_subprocess_exec(*command, cwd=ROOT, env=env)
    try:
        await listener.wait_for(lambda messages: len(messages) >= 30, within=30)
    finally:
        relay.send_signal(signal.SIGKILL)
        await relay.wait()
    rows = await outbox_rows(clean_database)
    published = sum(1 for row in rows if row["published"])
    assert 0 < published < total
    # Whatever reached the broker while the relay died was not marked: it goes out again.
    await asyncio.sleep(0.5)
    seen_before_restart = len(listener.messages)
    assert seen_before_restart >= published

    relay = await asyncio.create_subprocess_exec(*command, cwd=ROOT, env=env)
    try:
        await listener.wait_for(
            lambda messages: (
                len(by_order(messages)) == 150
                and sum(len(events) for events in by_order(messages).values()) == total
            ),
            within=60,
        )
        await asyncio.sleep(0.3)
    finally:
        relay.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(relay.wait(), 20) == 0
    check_messages(listener.messages)
    assert all(row["published"] for row in await outbox_rows(clean_database))
    # Duplicates are byte-for-byte the same event under the same id.
    first_seen: dict[str, dict[str, Any]] = {}
    for message in listener.messages:
        assert first_seen.setdefault(message.event["id"], message.event) == message.event
    for order, events in by_order(listener.messages).items():
        expected = 2 if order in orders[:50] else 1
        assert [sequence for sequence, _ in events] == list(range(1, expected + 1))


async def test_relays_side_by_side_keep_each_order_in_sequence(
    clean_database: str,
    key_pair: tuple[bytes, bytes],
    vhost: VirtualHost,
    amqp: AbstractConnection,
    collaborators: httpx.AsyncBaseTransport,
    token_for: TokenFactory,
) -> None:
    settings = make_settings(clean_database, key_pair[1], broker_url=vhost.url, relay_enabled=False)
    async with (
        LifespanManager(create_app(settings, transport=collaborators)) as manager,
        client_for(manager.app, token_for("alice")) as client,
    ):
        orders = [(await place(client, LATTE))["id"] for _ in range(30)]
        for _ in range(4):
            for order in orders:
                response = await client.put(f"/orders/{order}", json={"order": [MOCHA]})
                assert response.status_code == 200
    listener = await listen(amqp, "orders", "#")
    engine = make_engine(DatabaseSettings(database_url=clean_database))
    counts = EventCounts()
    # Three relays with tiny batches: each pass takes a few orders, the others skip them.
    relays = [
        OutboxRelay(engine, vhost.url, counts, batch_size=3, idle_seconds=0.01, retry_max=0.5)
        for _ in range(3)
    ]
    for relay in relays:
        relay.start()
    try:
        await listener.wait_for(lambda messages: len(messages) >= 150, within=60)
        await asyncio.sleep(0.3)
    finally:
        for relay in relays:
            await relay.stop()
        await engine.dispose()
    assert len(listener.messages) == 150
    assert counts.published == 150
    check_messages(listener.messages)
    for events in by_order(listener.messages).values():
        assert events == [(1, "order.placed")] + [(n, "order.updated") for n in range(2, 6)]
