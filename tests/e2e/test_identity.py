"""Identity through HTTP: every order route needs a verified token; users never see each
other's orders; health and docs stay open."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from cryptography.hazmat.primitives import serialization
from jose import jwk, jwt
from starlette.applications import Starlette

from orders.app import create_app
from orders.settings import Settings
from orders_dev.devtoken import generate_key_pair, mint
from tests.conftest import AUDIENCE, ISSUER, TokenFactory
from tests.support import client_for
from tests.support import place as place_order
from tests.unit.test_tokens import b64, claims, forge

LATTE = {"product": "latte", "size": "big", "quantity": 1}
ORDER_ROUTES = [
    ("GET", "/orders"),
    ("POST", "/orders"),
    ("GET", "/orders/{id}"),
    ("PUT", "/orders/{id}"),
    ("DELETE", "/orders/{id}"),
    ("POST", "/orders/{id}/pay"),
    ("POST", "/orders/{id}/cancel"),
]


def challenge(response: httpx.Response) -> str:
    assert response.status_code == 401
    assert isinstance(response.json()["detail"], str)
    return response.headers["www-authenticate"]


@pytest.mark.parametrize(("method", "path"), ORDER_ROUTES)
async def test_every_order_route_needs_a_token(
    anonymous: httpx.AsyncClient, method: str, path: str
) -> None:
    body = {"order": [LATTE]} if method in ("POST", "PUT") and path.count("/") < 3 else None

    response = await anonymous.request(method, path.format(id=uuid.uuid4()), json=body)

    assert challenge(response) == "Bearer"
    assert response.json()["detail"].startswith("Not authenticated")


@pytest.mark.parametrize(
    "path", ["/health/live", "/health/ready", "/openapi/orders.json", "/docs/orders"]
)
async def test_health_and_docs_need_no_token(anonymous: httpx.AsyncClient, path: str) -> None:
    assert (await anonymous.get(path)).status_code == 200


@pytest.mark.parametrize(
    "header",
    ["Basic YWxpY2U6c2VjcmV0", "Token abc", "bearer", "Digest x", "Bearer", "Bearer   "],
)
async def test_wrong_scheme_or_empty_header_is_401(
    anonymous: httpx.AsyncClient, header: str
) -> None:
    response = await anonymous.get("/orders", headers={"Authorization": header})

    assert challenge(response).startswith("Bearer")


@pytest.mark.parametrize(
    "token", ["abc", "a.b", "a.b.c.d", "a.b.c", "!!!.???.###", "eyJhbGciOiJSUzI1NiJ9..", "a" * 9000]
)
async def test_malformed_tokens_are_401_not_500(anonymous: httpx.AsyncClient, token: str) -> None:
    response = await anonymous.get("/orders", headers={"Authorization": f"Bearer {token}"})

    assert challenge(response) == 'Bearer error="invalid_token"'
    assert token not in response.text


def bad_tokens(private: bytes, public: bytes) -> dict[str, str]:
    """One token for each way a token can be wrong, all signed or forged for this app."""
    other_private, _ = generate_key_pair()
    now = int(time.time())
    good = claims(aud=AUDIENCE, iss=ISSUER)

    def signed(**overrides: Any) -> str:
        return jwt.encode(
            claims(**{"aud": AUDIENCE, "iss": ISSUER, **overrides}),
            private.decode(),
            algorithm="RS256",
        )

    header, _, signature = signed().split(".")
    other_payload = b64(json.dumps({**good, "sub": "bob"}).encode())
    none_header = b64(json.dumps({"alg": "none"}).encode())
    der = serialization.load_pem_public_key(public).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "expired": signed(exp=now - 3600),
        "not yet valid": signed(nbf=now + 3600),
        "wrong audience": signed(aud="billing"),
        "wrong issuer": signed(iss="https://evil.test"),
        "no exp": signed(exp=None),
        "no aud": signed(aud=None),
        "no iss": signed(iss=None),
        "no sub": signed(sub=None),
        "alg none": f"{none_header}.{b64(json.dumps(good).encode())}.",
        "HS256 with PEM": forge({"alg": "HS256"}, good, public, hashlib.sha256),
        "HS512 with PEM": forge({"alg": "HS512"}, good, public, hashlib.sha512),
        "HS256 with DER": forge({"alg": "HS256"}, good, der, hashlib.sha256),
        "HS512 with DER": forge({"alg": "HS512"}, good, der, hashlib.sha512),
        "another key": mint(other_private, sub="alice", audience=AUDIENCE, issuer=ISSUER),
        "tampered payload": f"{header}.{other_payload}.{signature}",
    }


async def test_every_bad_token_is_refused_with_invalid_token(
    anonymous: httpx.AsyncClient, key_pair: tuple[bytes, bytes]
) -> None:
    for case, token in bad_tokens(*key_pair).items():
        response = await anonymous.get("/orders", headers={"Authorization": f"Bearer {token}"})

        assert response.status_code == 401, case
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"', case
        assert response.json()["detail"].startswith("Invalid token"), case
        assert token not in response.text, case


async def test_a_forged_hmac_token_is_valid_hmac_and_still_refused(
    anonymous: httpx.AsyncClient, key_pair: tuple[bytes, bytes]
) -> None:
    # The forged token really is a valid HS256 signature under the public key, so a verifier
    # that trusted the header's algorithm would accept it.
    token = bad_tokens(*key_pair)["HS256 with PEM"]
    signing_input, _, signature = token.rpartition(".")
    expected = hmac.new(key_pair[1], signing_input.encode(), hashlib.sha256).digest()
    assert b64(expected) == signature

    response = await anonymous.get("/orders", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 401
    assert "algorithm" in response.json()["detail"]


async def place(client: httpx.AsyncClient) -> str:
    order_id: str = (await place_order(client, LATTE))["id"]
    return order_id


@pytest.mark.parametrize(("method", "path"), ORDER_ROUTES[2:])
async def test_another_users_order_is_exactly_like_an_unknown_one(
    client: httpx.AsyncClient, bob: httpx.AsyncClient, method: str, path: str
) -> None:
    alices = await place(client)
    body = {"order": [LATTE]} if method == "PUT" else None

    foreign = await bob.request(method, path.format(id=alices), json=body)
    unknown = await bob.request(method, path.format(id=uuid.uuid4()), json=body)

    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json() == unknown.json()
    after = await client.get(f"/orders/{alices}")
    assert after.json()["status"] == "created"
    assert after.json()["order"] == [LATTE]


async def test_the_list_shows_only_the_callers_orders(
    client: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    alices = {await place(client) for _ in range(3)}
    bobs = {await place(bob)}

    assert {o["id"] for o in (await client.get("/orders")).json()["orders"]} == alices
    assert {o["id"] for o in (await bob.get("/orders")).json()["orders"]} == bobs


class Issuer:
    """A JWKS endpoint reached through the app's HTTP client."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0

    def publish(self, kid: str, public_pem: bytes) -> None:
        key = jwk.construct(public_pem.decode(), "RS256").to_dict()
        self.keys.append({**key, "kid": kid})

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        return httpx.Response(200, json={"keys": self.keys})


@pytest.fixture
async def jwks_app(settings: Settings) -> AsyncIterator[tuple[Starlette, Issuer]]:
    issuer = Issuer()
    jwks_settings = settings.model_copy(
        update={
            "jwt_public_key": None,
            "jwt_jwks_url": "https://issuer.test/.well-known/jwks.json",
            "jwks_min_refresh_seconds": 0.0,
        }
    )
    application = create_app(jwks_settings, transport=httpx.MockTransport(issuer.handle))
    async with LifespanManager(application) as manager:
        yield manager.app, issuer  # type: ignore[misc]


async def test_jwks_rotation_through_http(jwks_app: tuple[Starlette, Issuer]) -> None:
    app, issuer = jwks_app
    first_private, first_public = generate_key_pair()
    second_private, second_public = generate_key_pair()
    issuer.publish("2026-01", first_public)

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://orders.test"
    ) as http:

        def bearer(private: bytes, kid: str) -> dict[str, str]:
            token = mint(private, sub="alice", audience=AUDIENCE, issuer=ISSUER, kid=kid)
            return {"Authorization": f"Bearer {token}"}

        assert (
            await http.get("/orders", headers=bearer(first_private, "2026-01"))
        ).status_code == 200

        unknown = await http.get("/orders", headers=bearer(second_private, "2026-02"))
        assert unknown.status_code == 401
        assert "unknown signing key" in unknown.json()["detail"]

        issuer.publish("2026-02", second_public)
        rotated = await http.get("/orders", headers=bearer(second_private, "2026-02"))
        assert rotated.status_code == 200
        assert issuer.fetches == 3


async def test_a_user_with_a_token_from_the_dev_tool_is_accepted(
    client: httpx.AsyncClient, token_for: TokenFactory
) -> None:
    response = await client.get(
        "/orders", headers={"Authorization": f"Bearer {token_for('carol')}"}
    )

    assert response.status_code == 200


async def test_unreachable_jwks_is_503_not_500(settings: Settings) -> None:
    def issuer_down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500)

    jwks_settings = settings.model_copy(
        update={"jwt_public_key": None, "jwt_jwks_url": "https://issuer.test/jwks.json"}
    )
    private, _ = generate_key_pair()
    token = mint(private, sub="alice", audience=AUDIENCE, issuer=ISSUER, kid="k1")
    application = create_app(jwks_settings, transport=httpx.MockTransport(issuer_down))
    async with LifespanManager(application) as manager, client_for(manager.app, token) as http:
        response = await http.get("/orders")

    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert "keys" in response.json()["detail"]
