"""RabbitMQ for the tests: a virtual host of their own on the machine's broker, a listener
that records what is published, and the AsyncAPI message schemas to check it against.

The broker is the one at 127.0.0.1:5672 (BROKER_HOST/BROKER_PORT to change that); virtual
hosts are made and removed with `rabbitmqctl` (RABBITMQCTL to change that), so runs never
see each other's exchanges or queues.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import aio_pika
import jsonschema
import yaml
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from orders.adapters.events import CONSUMER_CONNECTION, RELAY_CONNECTION

ROOT = Path(__file__).resolve().parent.parent
HOST = os.environ.get("BROKER_HOST", "127.0.0.1")
PORT = int(os.environ.get("BROKER_PORT", "5672"))
USER = "guest"


def ensure_running(seconds: float = 90) -> None:
    """Start the machine's RabbitMQ when it is installed but not running, as the suite starts
    a PostgreSQL of its own when none is given; wait until it answers."""
    ping = ["rabbitmq-diagnostics", "-q", "ping"]
    if subprocess.run(ping, capture_output=True, timeout=60).returncode == 0:
        return
    subprocess.run(["rabbitmq-server", "-detached"], check=True, capture_output=True, timeout=60)
    deadline = time.monotonic() + seconds
    while subprocess.run(ping, capture_output=True, timeout=60).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError("RabbitMQ did not start")
        time.sleep(1)


def _rabbitmqctl_command() -> str:
    return os.environ.get("RABBITMQCTL", "rabbitmqctl")


def rabbitmqctl(*args: str) -> None:
    subprocess.run(
        [_rabbitmqctl_command(), "-q", *args],
        check=True,
        capture_output=True,
        timeout=60,
    )


class VirtualHost:
    """A throwaway virtual host; `revoke()` and `grant()` its user's permissions."""

    def __init__(self) -> None:
        self.name = f"orders-test-{uuid.uuid4().hex[:10]}"
        self.url = f"amqp://{USER}:{USER}@{HOST}:{PORT}/{self.name}"

    def create(self) -> None:
        rabbitmqctl("add_vhost", self.name)
        self.grant()

    def grant(self) -> None:
        rabbitmqctl("set_permissions", "-p", self.name, USER, ".*", ".*", ".*")

    def revoke(self) -> None:
        """Take the user's access away. A channel that already wrote to an exchange keeps
        its cached permission, so the service's connections are closed too: they can only
        come back once access is granted again."""
        rabbitmqctl("clear_permissions", "-p", self.name, USER)
        self.close_connections(RELAY_CONNECTION, CONSUMER_CONNECTION)

    def close_connections(self, *names: str) -> None:
        """Close this virtual host's connections that carry one of these names."""
        listing = subprocess.run(
            [
                _rabbitmqctl_command(),
                "-q",
                "list_connections",
                "--no-table-headers",
                "pid",
                "vhost",
                "client_properties",
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        for line in listing.splitlines():
            pid, vhost, properties = line.split("\t", 2)
            if vhost == self.name and any(
                f'{{"connection_name","{name}"}}' in properties for name in names
            ):
                rabbitmqctl("close_connection", pid, "access revoked by the test")

    def delete(self) -> None:
        rabbitmqctl("delete_vhost", self.name)


@cache
def asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "asyncapi.yaml").read_text())
    return document


def message_schema(event_type: str) -> dict[str, Any]:
    """The JSON Schema of the event `event_type` (e.g. `order.paid`) in asyncapi.yaml."""
    what = event_type.removeprefix("order.")
    message = asyncapi()["components"]["messages"][f"order{what[:1].upper()}{what[1:]}"]
    assert message["name"] == event_type
    schema: dict[str, Any] = message["payload"]["schema"]
    return schema


def check_event(body: dict[str, Any]) -> None:
    """Raise unless `body` is valid against its message's schema (formats checked too)."""
    jsonschema.validate(
        body,
        message_schema(body["type"]),
        format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER,
    )


@dataclass
class Received:
    routing_key: str
    message_id: str | None
    content_type: str | None
    persistent: bool
    headers: dict[str, Any]
    body: dict[str, Any] | bytes

    @property
    def event(self) -> dict[str, Any]:
        assert isinstance(self.body, dict)
        return self.body


@dataclass
class Listener:
    """Records what reaches a queue, in arrival order."""

    messages: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            body: dict[str, Any] | bytes = json.loads(message.body)
        except ValueError:
            body = message.body
        self.messages.append(
            Received(
                message.routing_key or "",
                message.message_id,
                message.content_type,
                message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT,
                dict(message.headers or {}),
                body,
            )
        )
        self.arrived.set()
        await message.ack()

    async def wait_for(self, done: Callable[[list[Received]], bool], within: float) -> None:
        """Wait until `done(messages)` holds; fail after `within` seconds."""
        async with asyncio.timeout(within):
            while not done(self.messages):
                self.arrived.clear()
                await self.arrived.wait()


async def listen(
    connection: AbstractConnection, exchange: str, key: str, *, queue: str | None = None
) -> Listener:
    """Bind a queue (a fresh exclusive one unless `queue` names an existing one) to
    `exchange`/`key` (no binding when `exchange` is empty) and record what arrives."""
    channel = await connection.channel()
    listener = Listener()
    if queue is None:
        source = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        bound = await channel.declare_queue(exclusive=True)
        await bound.bind(source, routing_key=key)
    else:
        bound = await channel.get_queue(queue)
    await bound.consume(listener.on_message)
    return listener


def by_order(messages: list[Received]) -> dict[str, list[tuple[int, str]]]:
    """(sequence, type) of each order's events in arrival order, duplicates dropped."""
    seen: set[str] = set()
    orders: dict[str, list[tuple[int, str]]] = {}
    for message in messages:
        event = message.event
        if event["id"] in seen:
            continue
        seen.add(event["id"])
        orders.setdefault(event["order_id"], []).append((event["sequence"], event["type"]))
    return orders
