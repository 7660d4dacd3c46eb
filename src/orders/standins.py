"""Stand-ins for the payments and kitchen services (DESIGN §3), for the compose stack,
local demos and tests. Not part of the orders service itself.

    python -m orders.standins --port 8001

serves both `POST /payments` and the kitchen's `/kitchen/schedules` on one port. Payments and
schedules are idempotent per `Idempotency-Key` (or order id), as real ones should be. The
`Behaviour` can make them refuse, fail, or answer slowly: set it in code, or from the
environment with STANDIN_PAYMENT_STATUS (paid|pending|invalid), STANDIN_FAIL_WITH (an HTTP
status for every call) and STANDIN_DELAY_SECONDS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class Behaviour:
    """How the stand-ins answer; tests change it while the server runs."""

    payment_status: str = "paid"
    payments_fail_with: int | None = None
    kitchen_fail_with: int | None = None
    cancel_fail_with: int | None = None
    delay_seconds: float = 0.0

    @classmethod
    def from_env(cls) -> Behaviour:
        fail = os.environ.get("STANDIN_FAIL_WITH")
        status = int(fail) if fail else None
        return cls(
            payment_status=os.environ.get("STANDIN_PAYMENT_STATUS", "paid"),
            payments_fail_with=status,
            kitchen_fail_with=status,
            cancel_fail_with=status,
            delay_seconds=float(os.environ.get("STANDIN_DELAY_SECONDS", "0")),
        )


@dataclass
class Ledger:
    """Everything the stand-ins were asked, for tests to inspect."""

    charges: list[tuple[str, str]] = field(default_factory=list)
    """(order id, status answered) for every charge request that got an answer."""
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    schedules: dict[str, dict[str, Any]] = field(default_factory=dict)
    schedule_keys: dict[str, str] = field(default_factory=dict)
    cancels: list[str] = field(default_factory=list)


def _error(status: int, detail: str) -> Response:
    return JSONResponse({"detail": detail}, status_code=status)


def create_standins(behaviour: Behaviour | None = None, ledger: Ledger | None = None) -> Starlette:
    behaviour = behaviour if behaviour is not None else Behaviour()
    ledger = ledger if ledger is not None else Ledger()

    async def json_body(request: Request) -> Any:
        try:
            return await request.json()
        except ValueError:
            return None

    async def pay(request: Request) -> Response:
        await asyncio.sleep(behaviour.delay_seconds)
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("order_id"), str):
            return _error(422, "order_id is required")
        if behaviour.payments_fail_with is not None:
            return _error(behaviour.payments_fail_with, "payments failed")
        key = request.headers.get("idempotency-key", body["order_id"])
        payment = ledger.payments.get(key)
        if payment is None:
            payment = ledger.payments[key] = {
                "payment_id": str(uuid.uuid4()),
                "status": behaviour.payment_status,
            }
        elif payment["status"] == "pending":
            # Asked again about a pending payment: by now it has been decided.
            payment["status"] = behaviour.payment_status
        ledger.charges.append((body["order_id"], payment["status"]))
        return JSONResponse(payment, status_code=201)

    async def schedule(request: Request) -> Response:
        await asyncio.sleep(behaviour.delay_seconds)
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("order"), list):
            return _error(422, "order is required")
        if behaviour.kitchen_fail_with is not None:
            return _error(behaviour.kitchen_fail_with, "kitchen failed")
        key = request.headers.get("idempotency-key") or str(uuid.uuid4())
        if key not in ledger.schedule_keys:
            schedule_id = str(uuid.uuid4())
            ledger.schedule_keys[key] = schedule_id
            ledger.schedules[schedule_id] = {
                "id": schedule_id,
                "scheduled": datetime.now(UTC).isoformat(),
                "status": "pending",
                "order": body["order"],
            }
        return JSONResponse(ledger.schedules[ledger.schedule_keys[key]], status_code=201)

    async def cancel(request: Request) -> Response:
        await asyncio.sleep(behaviour.delay_seconds)
        schedule_id = request.path_params["schedule_id"]
        if behaviour.cancel_fail_with is not None:
            return _error(behaviour.cancel_fail_with, "kitchen refused to cancel")
        found = ledger.schedules.get(schedule_id)
        if found is None:
            return _error(404, "no such schedule")
        ledger.cancels.append(schedule_id)
        found["status"] = "cancelled"
        return JSONResponse(found)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[
            Route("/payments", pay, methods=["POST"]),
            Route("/kitchen/schedules", schedule, methods=["POST"]),
            Route("/kitchen/schedules/{schedule_id}/cancel", cancel, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
    app.state.behaviour = behaviour
    app.state.ledger = ledger
    return app


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m orders.standins", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    uvicorn.run(create_standins(Behaviour.from_env()), host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
