"""The five CRUD routes of the v1 contract, through HTTP, against a real database."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.support import asyncpg_dsn, place, set_status

LATTE = {"product": "latte", "size": "big", "quantity": 2}
MOCHA = {"product": "mocha", "size": "small", "quantity": 1}


async def snapshot(database_url: str) -> list[tuple[Any, ...]]:
    """Everything in the database, to prove a refused request changed nothing."""
    connection = await asyncpg.connect(asyncpg_dsn(make_url(database_url)))
    try:
        rows = await connection.fetch(
            "SELECT o.id, o.owner, o.status, o.updated, i.position, i.product, i.size, i.quantity"
            " FROM orders o LEFT JOIN order_items i ON i.order_id = o.id ORDER BY 1, 5"
        )
    finally:
        await connection.close()
    return [tuple(row) for row in rows]


async def test_place_order_returns_the_contract_shape(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/orders", json={"order": [LATTE, {"product": "tea", "size": "medium"}]}
    )

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "created", "status", "order"}
    assert body["status"] == "created"
    assert body["order"] == [LATTE, {"product": "tea", "size": "medium", "quantity": 1}]
    assert response.headers["location"] == f"/orders/{body['id']}"
    created = datetime.fromisoformat(body["created"])
    assert created.utcoffset() == timedelta(0)
    assert uuid.UUID(body["id"])


async def test_get_order_returns_what_was_placed(client: httpx.AsyncClient) -> None:
    placed = await place(client, LATTE, MOCHA)

    response = await client.get(f"/orders/{placed['id']}")

    assert response.status_code == 200
    assert response.json() == placed


async def test_list_is_newest_first_with_limit_and_cancelled_filters(
    client: httpx.AsyncClient, clean_database: str
) -> None:
    ids = [(await place(client, {**LATTE, "quantity": n}))["id"] for n in range(1, 5)]
    await set_status(clean_database, ids[1], "cancelled")

    everything = (await client.get("/orders")).json()["orders"]
    assert [order["id"] for order in everything] == ids[::-1]
    assert all(set(order) == {"id", "created", "status", "order"} for order in everything)

    limited = (await client.get("/orders", params={"limit": 2})).json()["orders"]
    assert [order["id"] for order in limited] == [ids[3], ids[2]]

    cancelled = (await client.get("/orders", params={"cancelled": "true"})).json()["orders"]
    assert [order["id"] for order in cancelled] == [ids[1]]

    active = (await client.get("/orders", params={"cancelled": "false"})).json()["orders"]
    assert [order["id"] for order in active] == [ids[3], ids[2], ids[0]]


async def test_list_of_nobody_is_empty(client: httpx.AsyncClient) -> None:
    response = await client.get("/orders")

    assert response.status_code == 200
    assert response.json() == {"orders": []}


async def test_update_replaces_the_items(client: httpx.AsyncClient) -> None:
    placed = await place(client, LATTE, MOCHA)

    response = await client.put(f"/orders/{placed['id']}", json={"order": [MOCHA]})

    assert response.status_code == 200
    assert response.json() == {**placed, "order": [MOCHA]}
    assert (await client.get(f"/orders/{placed['id']}")).json()["order"] == [MOCHA]


async def test_delete_removes_the_order(client: httpx.AsyncClient, clean_database: str) -> None:
    placed = await place(client)

    response = await client.delete(f"/orders/{placed['id']}")

    assert response.status_code == 204
    assert response.content == b""
    assert (await client.get(f"/orders/{placed['id']}")).status_code == 404
    assert await snapshot(clean_database) == []


async def test_a_cancelled_order_can_be_deleted(
    client: httpx.AsyncClient, clean_database: str
) -> None:
    placed = await place(client)
    await set_status(clean_database, placed["id"], "cancelled")

    assert (await client.delete(f"/orders/{placed['id']}")).status_code == 204


@pytest.mark.parametrize("status", ["paid", "progress", "cancelled", "dispatched", "delivered"])
async def test_update_is_refused_once_the_order_left_created(
    client: httpx.AsyncClient, clean_database: str, status: str
) -> None:
    placed = await place(client)
    await set_status(clean_database, placed["id"], status)
    before = await snapshot(clean_database)

    response = await client.put(f"/orders/{placed['id']}", json={"order": [MOCHA]})

    assert response.status_code == 409
    assert status in response.json()["detail"]
    assert await snapshot(clean_database) == before


@pytest.mark.parametrize("status", ["paid", "progress", "dispatched", "delivered"])
async def test_delete_is_refused_for_paid_orders(
    client: httpx.AsyncClient, clean_database: str, status: str
) -> None:
    placed = await place(client)
    await set_status(clean_database, placed["id"], status)
    before = await snapshot(clean_database)

    response = await client.delete(f"/orders/{placed['id']}")

    assert response.status_code == 409
    assert isinstance(response.json()["detail"], str)
    assert await snapshot(clean_database) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/orders/{id}"),
        ("PUT", "/orders/{id}"),
        ("DELETE", "/orders/{id}"),
        ("POST", "/orders/{id}/pay"),
        ("POST", "/orders/{id}/cancel"),
    ],
)
async def test_unknown_order_is_404(client: httpx.AsyncClient, method: str, path: str) -> None:
    url = path.format(id=uuid.uuid4())
    body = {"order": [LATTE]} if method == "PUT" else None

    response = await client.request(method, url, json=body)

    assert response.status_code == 404
    assert response.json() == {"detail": "Order not found"}


BAD_BODIES: list[tuple[str, Any]] = [
    ("quantity true", {"order": [{**LATTE, "quantity": True}]}),
    ("quantity 1.5", {"order": [{**LATTE, "quantity": 1.5}]}),
    ("quantity '2'", {"order": [{**LATTE, "quantity": "2"}]}),
    ("quantity 0", {"order": [{**LATTE, "quantity": 0}]}),
    ("quantity too big", {"order": [{**LATTE, "quantity": 1_000_001}]}),
    ("quantity null", {"order": [{**LATTE, "quantity": None}]}),
    ("empty product", {"order": [{**LATTE, "product": ""}]}),
    ("product not a string", {"order": [{**LATTE, "product": 5}]}),
    ("missing product", {"order": [{"size": "big"}]}),
    ("unknown size", {"order": [{**LATTE, "size": "huge"}]}),
    ("missing size", {"order": [{"product": "latte"}]}),
    ("unknown item field", {"order": [{**LATTE, "price": 3}]}),
    ("unknown top-level field", {"order": [LATTE], "status": "paid"}),
    ("no items", {"order": []}),
    ("order not a list", {"order": LATTE}),
    ("missing order", {}),
    ("body is a list", [LATTE]),
    ("body is a string", "latte"),
]


@pytest.mark.parametrize(("case", "body"), BAD_BODIES, ids=[case for case, _ in BAD_BODIES])
async def test_invalid_bodies_are_422_and_change_nothing(
    client: httpx.AsyncClient, clean_database: str, case: str, body: Any
) -> None:
    existing = await place(client)
    before = await snapshot(clean_database)

    created = await client.post("/orders", json=body)
    updated = await client.put(f"/orders/{existing['id']}", json=body)

    for response in (created, updated):
        assert response.status_code == 422, case
        problems = response.json()["detail"]
        assert problems
        assert all(set(p) == {"loc", "msg", "type"} for p in problems)
        assert all(p["loc"][0] == "body" for p in problems)
    assert await snapshot(clean_database) == before


@pytest.mark.parametrize("raw", [b"", b"{", b'{"order": [', b"not json", b"\xff\xfe"])
async def test_malformed_json_is_400(
    client: httpx.AsyncClient, clean_database: str, raw: bytes
) -> None:
    response = await client.post(
        "/orders", content=raw, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json() == {"detail": "Malformed JSON body"}
    assert await snapshot(clean_database) == []


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_a_body_that_is_not_json_is_415(
    client: httpx.AsyncClient, clean_database: str, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}

    response = await client.post("/orders", content=b'{"order": []}', headers=headers)

    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]
    assert await snapshot(clean_database) == []


async def test_json_with_charset_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/orders",
        content=b'{"order": [{"product": "latte", "size": "big"}]}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )

    assert response.status_code == 201


@pytest.mark.parametrize("order_id", ["not-a-uuid", "123", "0" * 33])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_malformed_order_id_is_422(
    client: httpx.AsyncClient, clean_database: str, order_id: str, method: str
) -> None:
    await place(client)
    before = await snapshot(clean_database)
    body = {"order": [LATTE]} if method == "PUT" else None

    response = await client.request(method, f"/orders/{order_id}", json=body)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "order_id"]
    assert await snapshot(clean_database) == before


@pytest.mark.parametrize(
    "params", [{"limit": "0"}, {"limit": "-1"}, {"limit": "ten"}, {"cancelled": "maybe"}]
)
async def test_bad_query_parameters_are_422(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    response = await client.get("/orders", params=params)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "query"


@pytest.mark.parametrize(
    ("method", "path"), [("PATCH", "/orders"), ("DELETE", "/orders"), ("PATCH", "/orders/{id}")]
)
async def test_unknown_methods_are_405(client: httpx.AsyncClient, method: str, path: str) -> None:
    response = await client.request(method, path.format(id=uuid.uuid4()))

    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"}
    assert "allow" in response.headers


async def test_unknown_paths_are_404_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/nothing/here")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}
