"""Findings of the security review, through HTTP: a subject that is no identifier and JSON
bodies that repeat a key are refused with a 4xx, and change nothing."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy.engine import make_url
from starlette.applications import Starlette

from tests.conftest import AUDIENCE, ISSUER
from tests.support import LATTE, asyncpg_dsn, client_for, place


async def stored_orders(database_url: str) -> int:
    connection = await asyncpg.connect(asyncpg_dsn(make_url(database_url)))
    try:
        count: int = await connection.fetchval("SELECT count(*) FROM orders")
    finally:
        await connection.close()
    return count


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(private_pem: bytes, **overrides: Any) -> str:
    """A token signed by the session's key, built by hand so that `\\u0000` reaches the
    service as any issuer's JSON would carry it."""
    now = int(time.time())
    claims = {"sub": "alice", "aud": AUDIENCE, "iss": ISSUER, "iat": now, "exp": now + 300}
    claims.update(overrides)
    signing_input = (
        f"{b64(json.dumps({'alg': 'RS256', 'typ': 'JWT'}).encode())}."
        f"{b64(json.dumps(claims).encode())}"
    )
    private = serialization.load_pem_private_key(private_pem, None)
    assert isinstance(private, rsa.RSAPrivateKey)
    signature = private.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


@pytest.mark.parametrize("subject", ["al\x00ice", "a" * 1000, "bob\r\nX-Admin: yes"])
async def test_a_subject_that_is_no_identifier_is_401_on_every_order_route(
    app: Starlette, key_pair: tuple[bytes, bytes], clean_database: str, subject: str
) -> None:
    async with client_for(app, signed(key_pair[0], sub=subject)) as client:
        listed = await client.get("/orders")
        placed = await client.post("/orders", json={"order": [LATTE]})

    for response in (listed, placed):
        assert response.status_code == 401, response.text
        assert response.json()["detail"].startswith("Invalid token: invalid claims: sub")
    assert await stored_orders(clean_database) == 0


async def test_a_token_issued_in_the_future_is_401(
    anonymous: httpx.AsyncClient, key_pair: tuple[bytes, bytes]
) -> None:
    token = signed(key_pair[0], iat=int(time.time()) + 10**6)

    response = await anonymous.get("/orders", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 401
    assert "iat is in the future" in response.json()["detail"]


DUPLICATED: list[tuple[str, str]] = [
    ("top level", '{"order": [], "order": [LATTE]}'),
    (
        "in an item",
        '{"order": [{"product": "latte", "product": "tea", "size": "big", "quantity": 1}]}',
    ),
    ("same value", '{"order": [LATTE], "order": [LATTE]}'),
]


@pytest.mark.parametrize(("where", "body"), DUPLICATED, ids=[where for where, _ in DUPLICATED])
async def test_a_body_that_repeats_a_key_is_400_and_stores_nothing(
    client: httpx.AsyncClient, clean_database: str, where: str, body: str
) -> None:
    content = body.replace("LATTE", json.dumps(LATTE))
    headers = {"Content-Type": "application/json"}

    placed = await client.post("/orders", content=content, headers=headers)
    order = await place(client)
    updated = await client.put(f"/orders/{order['id']}", content=content, headers=headers)

    for response in (placed, updated):
        assert response.status_code == 400, response.text
        assert response.json() == {"detail": "Duplicate key in JSON body"}
    assert await stored_orders(clean_database) == 1
    assert (await client.get(f"/orders/{order['id']}")).json()["order"] == order["order"]


async def test_malformed_json_is_still_reported_as_malformed(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/orders", content=b'{"order": [', headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json() == {"detail": "Malformed JSON body"}


@pytest.mark.parametrize(
    "path",
    [
        "/docs/orders/assets/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/docs/orders/assets/..%2f..%2f..%2fetc%2fpasswd",
        "/docs/orders/assets/%2e%2e%2f%2e%2e%2fsettings.py",
    ],
)
async def test_the_docs_assets_do_not_leave_their_directory(
    anonymous: httpx.AsyncClient, path: str
) -> None:
    response = await anonymous.get(httpx.URL(path))

    assert response.status_code == 404
    assert b"root:" not in response.content
