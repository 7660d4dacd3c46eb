"""The benchmark's reference: the three measured operations on raw asyncpg.

Starlette + one asyncpg pool, no ORM, no validation, no auth (the owner is the `X-Owner`
header), serving `POST /orders`, `GET /orders/{order_id}` and `GET /orders?limit=N` on the
service's tables with the very statements and round trips the service sends: the reads are
copies of the service's plain SQL, and the write is what SQLAlchemy compiles
`orders.adapters.repository` to, laid out for reading (`bench/run.py` checks that they still
are, token for token). Whatever the service costs beyond this is the cost of its own layers.

    DATABASE_URL=postgresql://... uvicorn --factory --app-dir bench reference:create_app
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# Copies of the service's read side (not imported: that would load the service's libraries
# into the reference and blur the memory comparison).
GET_ONE = """
SELECT o.id, o.created, o.status, o.version,
    order_items.product, order_items.size, order_items.quantity
FROM orders AS o LEFT OUTER JOIN order_items ON order_items.order_id = o.id
WHERE o.id = $1 AND o.owner = $2
ORDER BY order_items.position"""

LIST_PAGE = """
SELECT o.id, o.created, o.status, o.version,
    order_items.product, order_items.size, order_items.quantity
FROM (
    SELECT id, created, status, version FROM orders
    WHERE owner = $1
    ORDER BY created DESC, id DESC LIMIT $2
) AS o LEFT OUTER JOIN order_items ON order_items.order_id = o.id
ORDER BY o.created DESC, o.id DESC, order_items.position"""

PLACE = """
WITH new_order AS (
    INSERT INTO orders (id, owner, created, status, version)
    VALUES ($1::UUID, $2, $3, 'created', $4)
), new_items AS (
INSERT INTO order_items (order_id, position, product, size, quantity)
SELECT $1::UUID, item.position - 1, item.product, item.size, item.quantity
FROM unnest($5::TEXT[], $6::TEXT[], $7::INTEGER[])
    WITH ORDINALITY AS item(product, size, quantity, position)
)
INSERT INTO outbox (id, order_id, sequence, type, occurred, body)
SELECT event.id, $1::UUID, event.sequence, event.type, event.occurred, event.body::jsonb
FROM unnest($8::UUID[], $9::INTEGER[], $10::TEXT[], $11::TIMESTAMP WITH TIME ZONE[], $12::TEXT[])
    AS event(id, sequence, type, occurred, body)
"""


def _json(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")).encode(),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


def _not_found() -> Response:
    return Response(b'{"detail":"Order not found"}', 404, media_type="application/json")


def _fold(rows: Sequence[asyncpg.Record]) -> list[dict[str, Any]]:
    """Joined (order, item) rows, in output order, as API order objects."""
    orders: list[dict[str, Any]] = []
    current: Any = None
    for row in rows:
        if current is None or row["id"] != current:
            current = row["id"]
            orders.append(
                {
                    "id": str(current),
                    "created": row["created"].isoformat(),
                    "status": row["status"],
                    "order": [],
                }
            )
        if row["product"] is not None:
            orders[-1]["order"].append(
                {"product": row["product"], "size": row["size"], "quantity": row["quantity"]}
            )
    return orders


async def get_order(request: Request) -> Response:
    try:
        order_id = uuid.UUID(request.path_params["order_id"])
    except ValueError:
        return _not_found()
    async with request.state.pool.acquire() as connection:
        rows = await connection.fetch(GET_ONE, order_id, request.headers.get("x-owner", ""))
    orders = _fold(rows)
    return _json(orders[0]) if orders else _not_found()


async def list_orders(request: Request) -> Response:
    limit = int(request.query_params.get("limit", "20"))
    async with request.state.pool.acquire() as connection:
        # One more than the page, as the service asks for, to know whether a next page exists.
        rows = await connection.fetch(LIST_PAGE, request.headers.get("x-owner", ""), limit + 1)
    return _json({"orders": _fold(rows)[:limit]})


async def place_order(request: Request) -> Response:
    items = (await request.json())["order"]
    order_id = uuid.uuid4()
    created = datetime.now(UTC)
    products = [item["product"] for item in items]
    sizes = [item["size"] for item in items]
    quantities = [item.get("quantity", 1) for item in items]
    body = {
        "id": str(order_id),
        "created": created.isoformat(),
        "status": "created",
        "order": [
            {"product": p, "size": s, "quantity": q}
            for p, s, q in zip(products, sizes, quantities, strict=True)
        ],
    }
    # The order's first event, written with it (the service's transactional outbox).
    event_id = uuid.uuid4()
    event = {
        "id": str(event_id),
        "type": "order.placed",
        "occurred": created.isoformat(),
        "order_id": str(order_id),
        "sequence": 1,
        "order": body,
    }
    async with request.state.pool.acquire() as connection, connection.transaction():
        await connection.execute(
            PLACE,
            order_id,
            request.headers.get("x-owner", ""),
            created,
            1,
            products,
            sizes,
            quantities,
            [event_id],
            [1],
            ["order.placed"],
            [created],
            [json.dumps(event, separators=(",", ":"))],
        )
    return _json(body, 201, {"Location": f"/orders/{order_id}"})


async def live(request: Request) -> Response:
    return _json({"status": "ok"})


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Release without asyncpg's reset query: the service's pool sends none either."""


def _dsn() -> str:
    # Accept the service's spelling too (postgresql+asyncpg://).
    return os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://", 1)


def create_app() -> Starlette:
    """The reference app; the pool is sized like the service's (DB_POOL_SIZE + overflow)."""
    pool_size = int(os.environ.get("DB_POOL_SIZE", "15"))
    max_overflow = int(os.environ.get("DB_MAX_OVERFLOW", "0"))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        pool = await asyncpg.create_pool(
            _dsn(),
            min_size=pool_size,
            max_size=pool_size + max_overflow,
            reset=_keep_session,
            command_timeout=10.0,
            server_settings={"application_name": "orders-reference"},
        )
        try:
            yield {"pool": pool}
        finally:
            await pool.close()

    return Starlette(
        routes=[
            Route("/health/live", live, methods=["GET"]),
            Route("/orders", list_orders, methods=["GET"]),
            Route("/orders", place_order, methods=["POST"]),
            Route("/orders/{order_id}", get_order, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
