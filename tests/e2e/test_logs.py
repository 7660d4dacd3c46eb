"""Logs through HTTP: one structured access line per request with its request id, JSON or
text; X-Request-ID honoured or replaced and returned; an unhandled error logged once, the
client told nothing more than "Internal server error"; tokens never logged."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from orders.app import create_app
from orders.settings import Settings
from orders_dev.devtoken import mint
from tests.conftest import ISSUER, TokenFactory

LATTE = {"product": "latte", "size": "big", "quantity": 1}
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")


@contextmanager
def captured() -> Iterator[io.StringIO]:
    """Everything the `orders` loggers write, formatted exactly as the configured handler
    formats it (configure_logging stops propagation, so caplog would see nothing)."""
    logger = logging.getLogger("orders")
    [installed] = logger.handlers
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(installed.formatter)
    for log_filter in installed.filters:
        handler.addFilter(log_filter)
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


Serve = Callable[..., Any]


@pytest.fixture
def serve(settings: Settings, collaborators: httpx.AsyncBaseTransport) -> Serve:
    """`async with serve(log_format="json") as (client, log)`: the app configured so, and what
    it logs while the block runs."""

    @asynccontextmanager
    async def serving(
        transport: httpx.AsyncBaseTransport | None = None, **changes: Any
    ) -> AsyncIterator[tuple[httpx.AsyncClient, io.StringIO]]:
        configured = settings.model_copy(update={"log_level": "INFO", **changes})
        application = create_app(configured, transport=transport or collaborators)
        with captured() as log:
            async with (
                LifespanManager(application) as manager,
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=manager.app), base_url="http://orders.test"
                ) as client,
            ):
                yield client, log

    return serving


def access_lines(log: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    return [line for line in lines if line["logger"] == "orders.access"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_one_json_line_per_request_with_the_route_template(
    serve: Serve, token_for: TokenFactory
) -> None:
    async with serve(log_format="json") as (client, log):
        placed = await client.post(
            "/orders", json={"order": [LATTE]}, headers=bearer(token_for("alice"))
        )
        order_id = placed.json()["id"]
        fetched = await client.get(
            f"/orders/{order_id}",
            headers={**bearer(token_for("alice")), "X-Request-ID": "checkout-42"},
        )
        missing = await client.get(f"/orders/{uuid.uuid4()}")

    lines = access_lines(log)
    assert [(line["method"], line["path"], line["status"]) for line in lines] == [
        ("POST", "/orders", 201),
        ("GET", "/orders/{order_id}", 200),
        ("GET", "/orders/{order_id}", 401),
    ]
    assert lines[1]["request_id"] == "checkout-42" == fetched.headers["x-request-id"]
    assert lines[0]["request_id"] == placed.headers["x-request-id"]
    assert lines[2]["request_id"] == missing.headers["x-request-id"]
    for line in lines:
        assert line["level"] == "INFO"
        assert isinstance(line["duration_ms"], float | int)
        assert line["duration_ms"] >= 0
        assert order_id not in json.dumps(line)


async def test_text_lines_are_human_readable(serve: Serve) -> None:
    async with serve(log_format="text") as (client, log):
        response = await client.get("/health/live", headers={"X-Request-ID": "probe-1"})

    [line] = [line for line in log.getvalue().splitlines() if "orders.access" in line]
    assert response.headers["x-request-id"] == "probe-1"
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO orders\.access \[probe-1\] "
        r"GET /health/live 200 \d+\.\dms",
        line,
    ), line


async def test_a_request_id_is_generated_when_none_is_given(serve: Serve) -> None:
    async with serve(log_format="json") as (client, log):
        first = await client.get("/health/live")
        second = await client.get("/health/live")

    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(GENERATED_ID.match(rid) for rid in ids)
    assert ids[0] != ids[1]
    assert [line["request_id"] for line in access_lines(log)] == ids


@pytest.mark.parametrize(
    "given",
    [b"x" * 129, b"two words", b"semi;colon", b'quote"d', b"\xc3\xbcnicode", b""],
    ids=["too-long", "space", "semicolon", "quote", "non-ascii", "empty"],
)
async def test_an_unsafe_request_id_is_replaced(serve: Serve, given: bytes) -> None:
    async with serve(log_format="json") as (client, log):
        response = await client.get("/health/live", headers=[(b"X-Request-ID", given)])

    returned = response.headers["x-request-id"]
    assert GENERATED_ID.match(returned)
    [line] = access_lines(log)
    assert line["request_id"] == returned
    assert given.decode(errors="replace") not in log.getvalue() or not given


async def test_the_longest_safe_request_id_is_kept(serve: Serve) -> None:
    given = "a-Z_0.9:" * 16
    async with serve(log_format="json") as (client, log):
        response = await client.get("/health/live", headers={"X-Request-ID": given})

    assert response.headers["x-request-id"] == given
    assert access_lines(log)[0]["request_id"] == given


async def test_an_unknown_path_cannot_forge_a_log_line(serve: Serve) -> None:
    async with serve(log_format="text") as (client, log):
        response = await client.get("/nope%0A2026-01-01 00:00:00,000 INFO orders.access forged")

    assert response.status_code == 404
    [line] = [line for line in log.getvalue().splitlines() if " orders.app " not in line]
    assert "/nope\\n2026" in line


class Exploding(httpx.AsyncBaseTransport):
    """Payments and kitchen fail in a way nothing expects: a bug, not an outage."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise RuntimeError("collaborator client blew up")


@pytest.mark.parametrize("log_format", ["json", "text"])
async def test_an_unhandled_error_is_logged_once_and_answered_plainly(
    serve: Serve, token_for: TokenFactory, log_format: str
) -> None:
    token = token_for("alice")
    async with serve(log_format=log_format, transport=Exploding()) as (client, log):
        placed = await client.post("/orders", json={"order": [LATTE]}, headers=bearer(token))
        failed = await client.post(f"/orders/{placed.json()['id']}/pay", headers=bearer(token))

    assert failed.status_code == 500
    assert failed.json() == {"detail": "Internal server error"}
    assert failed.headers["content-type"] == "application/json"
    assert "Traceback" not in failed.text
    assert "blew up" not in failed.text
    rid = failed.headers["x-request-id"]
    output = log.getvalue()
    assert output.count("RuntimeError: collaborator client blew up") == 1
    if log_format == "json":
        lines = [json.loads(line) for line in output.splitlines()]
        [error] = [line for line in lines if line["level"] == "ERROR"]
        assert error["logger"] == "orders.errors"
        assert error["request_id"] == rid
        assert "RuntimeError: collaborator client blew up" in error["exception"]
        assert [line["status"] for line in lines if line["logger"] == "orders.access"] == [
            201,
            500,
        ]
    else:
        errors = [line for line in output.splitlines() if " ERROR " in line]
        assert len(errors) == 1
        assert f"[{rid}]" in errors[0]
        assert "RuntimeError: collaborator client blew up" in output


@pytest.mark.parametrize("log_format", ["json", "text"])
async def test_tokens_never_reach_the_logs(
    serve: Serve, token_for: TokenFactory, key_pair: tuple[bytes, bytes], log_format: str
) -> None:
    valid = token_for("alice")
    expired = token_for("alice", ttl_seconds=-3600)
    wrong_audience = mint(key_pair[0], sub="alice", audience="someone-else", issuer=ISSUER)
    header, payload, signature = valid.split(".")
    tampered = f"{header}.{payload}.{signature[::-1]}"
    tokens = [valid, expired, wrong_audience, tampered, "not-a-jwt-at-all-0123456789"]

    async with serve(log_format=log_format, log_level="DEBUG", transport=Exploding()) as (
        client,
        log,
    ):
        placed = await client.post("/orders", json={"order": [LATTE]}, headers=bearer(valid))
        order_id = placed.json()["id"]
        for token in tokens:
            await client.get("/orders", headers=bearer(token))
            await client.get(f"/orders/{order_id}", params={"access_token": token})
            await client.post(f"/orders/{order_id}/pay", headers=bearer(token))
        await client.get("/orders", headers={"Authorization": valid})

    output = log.getvalue()
    assert output.count("orders.access") >= 3 * len(tokens)
    for token in tokens:
        for part in token.split("."):
            if len(part) > 16:
                assert part not in output
