"""Stand-ins for the payments and kitchen services (docs/collaborators.md), for the compose stack,
local demos and tests. Not part of the orders service itself.

    python -m orders_dev.standins --port 8001

serves payments (`POST /payments`, `POST /payments/{payment_id}/refund`) and the kitchen
(`/kitchen/schedules`) on one port. Charges, refunds and schedules are idempotent per
`Idempotency-Key`, as real ones should be, and a key repeated while its first request is still
being handled is answered 409 (as the IETF Idempotency-Key draft prescribes).

The `Behaviour` makes them refuse, fail, answer slowly or trickle, fail at random, or hold a
request before or after it takes effect (for crash tests): set it in code, or from the
environment with STANDIN_PAYMENT_STATUS (paid|pending|invalid), STANDIN_REFUND_STATUS
(refunded|pending|invalid), STANDIN_FAIL_WITH (an HTTP status for every call),
STANDIN_DELAY_SECONDS, STANDIN_TRICKLE_SECONDS and STANDIN_FAULT_RATE (0..1). The `Ledger`
records everything that took effect; tests assert against it.

With STANDIN_BROKER_URL set (an amqp:// URL), the kitchen also plays its part in the event
flow (asyncapi.yaml): STANDIN_DISPATCH_SECONDS (default 3) after a new schedule it publishes
`schedule.dispatched` (`{"schedule_id", "order_id"}`) to the topic exchange `kitchen`, and
STANDIN_DELIVERY_SECONDS (default 3) later delivery publishes `order.delivered`
(`{"order_id"}`) to the topic exchange `delivery`; a schedule cancelled meanwhile goes
nowhere. The order id is the schedule's Idempotency-Key, as the orders service sends it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import aio_pika
from aio_pika.abc import AbstractConnection
from pydantic_core import to_json
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

Operation = Literal["charge", "refund", "schedule", "cancel"]


@dataclass
class Gate:
    """Holds the next requests of one operation, `before` they take effect or `after` (the
    answer is held back), until `open` is set. `arrived` is set when one is held."""

    operation: Operation
    phase: Literal["before", "after"]
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    open: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Behaviour:
    """How the stand-ins answer; tests change it while the server runs."""

    payment_status: str = "paid"
    refund_status: str = "refunded"
    payments_fail_with: int | None = None
    refunds_fail_with: int | None = None
    kitchen_fail_with: int | None = None
    cancel_fail_with: int | None = None
    delay_seconds: float = 0.0
    # Send each answer's body a few bytes at a time, this many seconds apart.
    trickle_seconds: float | None = None
    # The share of requests that fail at random: before taking effect (500 or 409), or after
    # (the answer is lost as a 500).
    fault_rate: float = 0.0
    random: random.Random = field(default_factory=lambda: random.Random(0))  # noqa: S311
    gate: Gate | None = None

    @classmethod
    def from_env(cls) -> Behaviour:
        fail = os.environ.get("STANDIN_FAIL_WITH")
        status = int(fail) if fail else None
        trickle = os.environ.get("STANDIN_TRICKLE_SECONDS")
        return cls(
            payment_status=os.environ.get("STANDIN_PAYMENT_STATUS", "paid"),
            refund_status=os.environ.get("STANDIN_REFUND_STATUS", "refunded"),
            payments_fail_with=status,
            refunds_fail_with=status,
            kitchen_fail_with=status,
            cancel_fail_with=status,
            delay_seconds=float(os.environ.get("STANDIN_DELAY_SECONDS", "0")),
            trickle_seconds=float(trickle) if trickle else None,
            fault_rate=float(os.environ.get("STANDIN_FAULT_RATE", "0")),
        )


@dataclass
class Ledger:
    """Everything the stand-ins did, for tests to inspect."""

    charges: list[tuple[str, str]] = field(default_factory=list)
    """(order id, status answered) for every charge request that took effect."""
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Payments by idempotency key: payment_id, order_id, status."""
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Refunds by idempotency key: refund_id, payment_id, status."""
    schedules: dict[str, dict[str, Any]] = field(default_factory=dict)
    schedule_keys: dict[str, str] = field(default_factory=dict)
    """Schedule ids by idempotency key (the order id)."""
    cancels: list[str] = field(default_factory=list)
    trickled: int = 0
    """Trickled answers sent to the end."""

    def paid_payments(self, order_id: str) -> list[dict[str, Any]]:
        return [
            payment
            for payment in self.payments.values()
            if payment["order_id"] == order_id and payment["status"] == "paid"
        ]

    def refunds_of(self, payment_id: str) -> list[dict[str, Any]]:
        return [
            refund
            for refund in self.refunds.values()
            if refund["payment_id"] == payment_id and refund["status"] == "refunded"
        ]


def _once(
    records: dict[str, dict[str, Any]], key: str, status: str, **fields: str
) -> dict[str, Any]:
    """What the request with `key` did: made on its first use; asked again about a pending
    one, by now it has been decided."""
    record = records.get(key)
    if record is None:
        record = records[key] = {**fields, "status": status}
    elif record["status"] == "pending":
        record["status"] = status
    return record


class Courier:
    """Publishes the kitchen's and delivery's news about schedules: dispatched after
    `dispatch_seconds`, delivered `delivery_seconds` later, each as a persistent message with
    a message id. Connects on first use and again after a failure."""

    def __init__(self, url: str, *, dispatch_seconds: float, delivery_seconds: float) -> None:
        self.url = url
        self.dispatch_seconds = dispatch_seconds
        self.delivery_seconds = delivery_seconds
        self.sent: list[tuple[str, dict[str, str]]] = []
        """(routing key, body) of every message published."""
        self._connection: AbstractConnection | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_env(cls) -> Courier | None:
        url = os.environ.get("STANDIN_BROKER_URL")
        if not url:
            return None
        return cls(
            url,
            dispatch_seconds=float(os.environ.get("STANDIN_DISPATCH_SECONDS", "3")),
            delivery_seconds=float(os.environ.get("STANDIN_DELIVERY_SECONDS", "3")),
        )

    def follow(self, order_id: str, schedule: dict[str, Any]) -> None:
        """Dispatch, then deliver, the schedule of this order, unless it is cancelled first."""
        task = asyncio.create_task(self._travel(order_id, schedule))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._connection is not None:
            await self._connection.close()

    async def _travel(self, order_id: str, schedule: dict[str, Any]) -> None:
        await asyncio.sleep(self.dispatch_seconds)
        if schedule["status"] == "cancelled":
            return
        schedule["status"] = "dispatched"
        body = {"schedule_id": schedule["id"], "order_id": order_id}
        await self._publish("kitchen", "schedule.dispatched", body)
        await asyncio.sleep(self.delivery_seconds)
        await self._publish("delivery", "order.delivered", {"order_id": order_id})

    async def _publish(self, exchange: str, key: str, body: dict[str, str]) -> None:
        for attempt in range(10):
            try:
                if self._connection is None or self._connection.is_closed:
                    self._connection = await aio_pika.connect(self.url, timeout=10)
                channel = await self._connection.channel()
                try:
                    target = await channel.declare_exchange(
                        exchange, aio_pika.ExchangeType.TOPIC, durable=True
                    )
                    await target.publish(
                        aio_pika.Message(
                            to_json(body),
                            message_id=str(uuid.uuid4()),
                            content_type="application/json",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=key,
                        mandatory=False,
                    )
                finally:
                    await channel.close()
            except Exception as error:
                print(f"standins: publishing {key} failed ({error}); again", file=sys.stderr)
                self._connection = None
                await asyncio.sleep(min(30.0, 0.5 * 2**attempt))
            else:
                self.sent.append((key, body))
                return


def _error(status: int, detail: str) -> Response:
    return JSONResponse({"detail": detail}, status_code=status)


def create_standins(
    behaviour: Behaviour | None = None,
    ledger: Ledger | None = None,
    courier: Courier | None = None,
) -> Starlette:
    behaviour = behaviour if behaviour is not None else Behaviour()
    ledger = ledger if ledger is not None else Ledger()
    in_flight: set[str] = set()

    async def json_body(request: Request) -> Any:
        try:
            return await request.json()
        except ValueError:
            return None

    def answer(body: dict[str, Any], status_code: int) -> Response:
        if behaviour.trickle_seconds is None:
            return JSONResponse(body, status_code=status_code)
        pause = behaviour.trickle_seconds

        async def chunks() -> AsyncIterator[bytes]:
            data = to_json(body)
            for start in range(0, len(data), 12):
                yield data[start : start + 12]
                await asyncio.sleep(pause)
            ledger.trickled += 1

        return StreamingResponse(chunks(), status_code=status_code, media_type="application/json")

    async def handle(
        request: Request,
        operation: Operation,
        key: str | None,
        apply: Callable[[], tuple[dict[str, Any], int]],
    ) -> Response:
        """Run `apply` (what the call does) with the configured delays, faults and gates."""
        await asyncio.sleep(behaviour.delay_seconds)
        if key is not None and key in in_flight:
            return _error(409, "a request with this Idempotency-Key is still in progress")
        gate = behaviour.gate if behaviour.gate and behaviour.gate.operation == operation else None
        fault = (
            behaviour.random.choice(("before", "conflict", "after"))
            if behaviour.random.random() < behaviour.fault_rate
            else None
        )
        if fault == "before":
            return _error(500, f"{operation} failed")
        if fault == "conflict":
            return _error(409, "a request with this Idempotency-Key is still in progress")
        if key is not None:
            in_flight.add(key)
        try:
            if gate is not None and gate.phase == "before":
                await _hold(gate)
                if await request.is_disconnected():
                    return _error(499, "the client went away before this took effect")
            body, status_code = apply()
            if gate is not None and gate.phase == "after":
                await _hold(gate)
        finally:
            if key is not None:
                in_flight.discard(key)
        if fault == "after":
            return _error(500, f"{operation} failed after taking effect")
        return answer(body, status_code)

    async def pay(request: Request) -> Response:
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("order_id"), str):
            return _error(422, "order_id is required")
        if behaviour.payments_fail_with is not None:
            return _error(behaviour.payments_fail_with, "payments failed")
        order_id = body["order_id"]
        key = request.headers.get("idempotency-key", order_id)

        def charge() -> tuple[dict[str, Any], int]:
            payment = _once(
                ledger.payments,
                key,
                behaviour.payment_status,
                payment_id=str(uuid.uuid4()),
                order_id=order_id,
            )
            ledger.charges.append((order_id, payment["status"]))
            return {"payment_id": payment["payment_id"], "status": payment["status"]}, 201

        return await handle(request, "charge", key, charge)

    async def refund(request: Request) -> Response:
        payment_id = request.path_params["payment_id"]
        if behaviour.refunds_fail_with is not None:
            return _error(behaviour.refunds_fail_with, "refunds failed")
        if not any(payment["payment_id"] == payment_id for payment in ledger.payments.values()):
            return _error(404, "no such payment")
        key = request.headers.get("idempotency-key", payment_id)

        def give_back() -> tuple[dict[str, Any], int]:
            done = _once(
                ledger.refunds,
                key,
                behaviour.refund_status,
                refund_id=str(uuid.uuid4()),
                payment_id=payment_id,
            )
            return {"refund_id": done["refund_id"], "status": done["status"]}, 201

        return await handle(request, "refund", key, give_back)

    async def schedule(request: Request) -> Response:
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("order"), list):
            return _error(422, "order is required")
        if behaviour.kitchen_fail_with is not None:
            return _error(behaviour.kitchen_fail_with, "kitchen failed")
        key = request.headers.get("idempotency-key") or str(uuid.uuid4())

        def make() -> tuple[dict[str, Any], int]:
            if key not in ledger.schedule_keys:
                schedule_id = str(uuid.uuid4())
                ledger.schedule_keys[key] = schedule_id
                ledger.schedules[schedule_id] = {
                    "id": schedule_id,
                    "scheduled": datetime.now(UTC).isoformat(),
                    "status": "pending",
                    "order": body["order"],
                }
                if courier is not None:
                    courier.follow(key, ledger.schedules[schedule_id])
            return ledger.schedules[ledger.schedule_keys[key]], 201

        return await handle(request, "schedule", key, make)

    async def cancel(request: Request) -> Response:
        schedule_id = request.path_params["schedule_id"]
        if behaviour.cancel_fail_with is not None:
            return _error(behaviour.cancel_fail_with, "kitchen refused to cancel")
        found = ledger.schedules.get(schedule_id)
        if found is None:
            return _error(404, "no such schedule")

        def call_off() -> tuple[dict[str, Any], int]:
            ledger.cancels.append(schedule_id)
            found["status"] = "cancelled"
            return found, 200

        return await handle(request, "cancel", None, call_off)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if courier is not None:
                await courier.close()

    app = Starlette(
        lifespan=lifespan,
        routes=[
            Route("/payments", pay, methods=["POST"]),
            Route("/payments/{payment_id}/refund", refund, methods=["POST"]),
            Route("/kitchen/schedules", schedule, methods=["POST"]),
            Route("/kitchen/schedules/{schedule_id}/cancel", cancel, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ],
    )
    app.state.behaviour = behaviour
    app.state.ledger = ledger
    return app


async def _hold(gate: Gate) -> None:
    gate.arrived.set()
    await gate.open.wait()


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m orders_dev.standins", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    app = create_standins(Behaviour.from_env(), courier=Courier.from_env())
    uvicorn.run(app, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
