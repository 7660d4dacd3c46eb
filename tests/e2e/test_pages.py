"""Pages of `GET /orders` through HTTP: bounds, the `next` link, cursors that survive new
orders and refuse tampering, and the largest answer a list can give, in bytes and in the
server's memory."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from orders.settings import Settings
from tests.conftest import TokenFactory
from tests.e2e.conftest import ServeApp
from tests.support import (
    LATTE,
    asyncpg_dsn,
    customer,
    free_port,
    orders_process,
    place,
    set_status,
)

Serving = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
NEXT = re.compile(r'^<([^>]+)>; rel="next"$')


@pytest.fixture
def serving(serve_app: ServeApp) -> Serving:
    """`async with serving(user, **settings) as client`: an app with these settings."""

    @asynccontextmanager
    async def serve(user: str = "alice", **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        async with serve_app(user, **overrides) as (client, _):
            yield client

    return serve


def next_page(response: httpx.Response) -> str | None:
    link = response.headers.get("link")
    if link is None:
        return None
    match = NEXT.match(link)
    assert match is not None, link
    return match.group(1)


async def walk(client: httpx.AsyncClient, first: str) -> tuple[list[str], list[httpx.Response]]:
    ids: list[str] = []
    pages = []
    url: str | None = first
    while url is not None:
        response = await client.get(url)
        assert response.status_code == 200, response.text
        pages.append(response)
        ids.extend(order["id"] for order in response.json()["orders"])
        url = next_page(response)
    return ids, pages


async def test_a_walk_sees_every_order_once_while_orders_are_placed(
    client: httpx.AsyncClient,
) -> None:
    existing = [(await place(client))["id"] for _ in range(23)]
    # Placed while the walk goes on: newer than its first page, so never part of it.
    placing = asyncio.gather(*(client.post("/orders", json={"order": [LATTE]}) for _ in range(15)))

    ids, pages = await walk(client, "/orders?limit=4")
    assert all(response.status_code == 201 for response in await placing)

    assert ids == existing[::-1]
    assert [len(page.json()["orders"]) for page in pages] == [4, 4, 4, 4, 4, 3]
    # The link keeps the query, and the last page has none.
    assert next_page(pages[0]) is not None
    assert next_page(pages[0]).startswith("/orders?limit=4&after=")  # type: ignore[union-attr]
    assert next_page(pages[-1]) is None


async def test_orders_placed_in_the_same_microsecond_are_ordered_by_id(
    client: httpx.AsyncClient, clean_database: str
) -> None:
    placed = {(await place(client))["id"] for _ in range(5)}
    connection = await asyncpg.connect(asyncpg_dsn(make_url(clean_database)))
    try:
        await connection.execute("UPDATE orders SET created = '2026-11-29T12:00:00Z'")
    finally:
        await connection.close()

    ids, _ = await walk(client, "/orders?limit=2")

    assert ids == sorted(placed, reverse=True)


async def test_the_filter_travels_with_the_cursor(
    client: httpx.AsyncClient, clean_database: str
) -> None:
    ids = [(await place(client))["id"] for _ in range(6)]
    for order_id in ids[::2]:
        await set_status(clean_database, order_id, "cancelled")

    cancelled, pages = await walk(client, "/orders?cancelled=true&limit=2")
    others, _ = await walk(client, "/orders?cancelled=false&limit=2")

    assert cancelled == ids[::2][::-1]
    assert others == ids[1::2][::-1]
    assert "cancelled=true" in (next_page(pages[0]) or "")


async def test_page_size_and_its_maximum_are_settings(serving: Serving) -> None:
    async with serving(page_size=3, page_size_max=5) as client:
        for _ in range(7):
            await place(client)

        default = await client.get("/orders")
        largest = await client.get("/orders", params={"limit": 5})
        too_large = await client.get("/orders", params={"limit": 6})
        too_small = await client.get("/orders", params={"limit": 0})

        assert len(default.json()["orders"]) == 3
        assert "limit=" not in (next_page(default) or "limit=")
        assert len(largest.json()["orders"]) == 5
        for refused in (too_large, too_small):
            assert refused.status_code == 422
            assert refused.json()["detail"][0]["loc"] == ["query", "limit"]


def _tamper(cursor: str) -> list[str]:
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    variants = []
    for index in (0, 7, 8, 23, 24, len(raw) - 1):
        changed = bytearray(raw)
        changed[index] ^= 1
        variants.append(base64.urlsafe_b64encode(bytes(changed)).rstrip(b"=").decode())
    return [*variants, cursor[:-1], cursor + "A", "", "not a cursor", "%00", "A" * 128]


async def test_a_tampered_or_made_up_cursor_is_422(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await place(client)
    link = next_page(await client.get("/orders?limit=1"))
    assert link is not None
    cursor = link.rsplit("after=", 1)[1]

    for forged in _tamper(cursor):
        response = await client.get("/orders", params={"limit": 1, "after": forged})
        assert response.status_code == 422, forged
        assert response.json()["detail"][0]["loc"] == ["query", "after"]


async def test_another_users_or_another_filters_cursor_is_422(
    client: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    for _ in range(3):
        await place(client)
        await place(bob)
    link = next_page(await client.get("/orders?limit=1"))
    assert link is not None

    foreign = await bob.get(link)
    other_filter = await client.get(link + "&cancelled=false")

    assert foreign.status_code == 422
    assert other_filter.status_code == 422
    assert (await client.get(link)).status_code == 200


async def test_a_cursor_signed_with_another_key_is_422(serving: Serving) -> None:
    async with serving(page_cursor_key="k" * 32) as client:
        for _ in range(3):
            await place(client)
        link = next_page(await client.get("/orders?limit=1"))
        assert link is not None
        assert (await client.get(link)).status_code == 200
    async with serving(page_cursor_key="another key of thirty-two bytes!") as client:
        assert (await client.get(link)).status_code == 422


async def test_a_product_is_at_most_100_characters(client: httpx.AsyncClient) -> None:
    longest = {"product": "x" * 100, "size": "small"}
    assert (await client.post("/orders", json={"order": [longest]})).status_code == 201

    too_long = {"product": "x" * 101, "size": "small"}
    response = await client.post("/orders", json={"order": [too_long]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "order", 0, "product"]


# The largest an item can be written as: a product of 100 characters that JSON escapes into
# six bytes each (control characters, `\u0001`), a size, the largest quantity.
WORST_ITEM = {"product": "\x01" * 100, "size": "medium", "quantity": 1_000_000}


def largest_answer(page_size_max: int, items_per_order: int) -> int:
    """The bound the README states for a list answer, in bytes."""
    item = len(json.dumps(WORST_ITEM, separators=(",", ":")))
    order = len('{"id":"00000000-0000-0000-0000-000000000000","created":"","status":"cancelled",')
    order += (
        len("2026-11-29T12:00:00.000000+00:00") + len('"order":[]},') + items_per_order * (item + 1)
    )
    return len('{"orders":[]}') + page_size_max * order


async def test_the_largest_list_answer_is_bounded_by_the_settings(serving: Serving) -> None:
    async with serving(page_size=10, page_size_max=10, max_items_per_order=20) as client:
        for _ in range(12):
            response = await client.post("/orders", json={"order": [WORST_ITEM] * 20})
            assert response.status_code == 201

        answer = await client.get("/orders", params={"limit": 10})

        assert len(answer.json()["orders"]) == 10
        assert len(answer.content) <= largest_answer(10, 20)
        # The bound is tight: the worst case comes within a few percent of it.
        assert len(answer.content) > 0.95 * largest_answer(10, 20)


def test_the_default_bound() -> None:
    defaults = Settings.model_fields
    bound = largest_answer(
        defaults["page_size_max"].default, defaults["max_items_per_order"].default
    )
    # What the README promises for the default settings.
    assert bound < 6_600_000


def memory_mib(pid: int) -> dict[str, float]:
    """The resident set of a process now (VmRSS) and at its highest so far (VmHWM), MiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM")}


@pytest.mark.slow
async def test_memory_stays_flat_while_the_largest_pages_are_served(
    tmp_path: Path, clean_database: str, key_pair: tuple[bytes, bytes], token_for: TokenFactory
) -> None:
    """The largest pages the default settings allow, served again and again, some at once:
    the server's memory rises by what the requests in flight hold, then stays level, and
    the event loop still answers its health check."""
    defaults = Settings.model_fields
    size, items = defaults["page_size_max"].default, defaults["max_items_per_order"].default
    bound = largest_answer(size, items)
    # Requests in flight at once; rounds (each of them asks for three pages in a round).
    at_once, warm_up, measured = 4, 3, 3
    # Listing calls no collaborator: nothing listens at their address.
    nowhere = f"http://127.0.0.1:{free_port()}"
    with orders_process(
        tmp_path, clean_database, key_pair[1], nowhere, "lists", LOG_LEVEL="WARNING"
    ) as (process, url):
        async with customer(url, token_for("alice")) as client:
            largest = json.dumps({"order": [WORST_ITEM] * items}, separators=(",", ":"))
            placing = asyncio.Semaphore(at_once)

            async def place_largest() -> None:
                async with placing:
                    response = await client.post(
                        "/orders", content=largest, headers={"Content-Type": "application/json"}
                    )
                    assert response.status_code == 201, response.text

            # One more than a page, so that every page is full and has a next link.
            await asyncio.gather(*(place_largest() for _ in range(size + 1)))
            before = memory_mib(process.pid)

            first = await client.get("/orders", params={"limit": size})
            assert len(first.json()["orders"]) == size
            assert next_page(first) is not None
            # The worst case the settings allow, and within its bound.
            assert 0.95 * bound < len(first.content) <= bound

            async def pages(count: int) -> None:
                for _ in range(count):
                    page = await client.get("/orders", params={"limit": size})
                    assert page.status_code == 200
                    assert len(page.content) == len(first.content)

            probes: list[float] = []
            serving = True

            async def probe() -> None:
                async with httpx.AsyncClient(base_url=url, timeout=30) as health:
                    while serving:
                        started = time.monotonic()
                        assert (await health.get("/health/live")).status_code == 200
                        probes.append(time.monotonic() - started)
                        await asyncio.sleep(0.05)

            probing = asyncio.create_task(probe())
            try:
                for _ in range(warm_up):
                    await asyncio.gather(*(pages(3) for _ in range(at_once)))
                warm = memory_mib(process.pid)
                for _ in range(measured):
                    await asyncio.gather(*(pages(3) for _ in range(at_once)))
                after = memory_mib(process.pid)
            finally:
                serving = False
                await probing

    answer_mib = bound / 2**20
    print(
        f"\nlargest list answer: {len(first.content)} bytes (bound {bound});"
        f" {(warm_up + measured) * 3 * at_once} served, {at_once} at once;"
        f" RSS {before['VmRSS']:.0f} MiB before, {warm['VmHWM']:.0f} peak after warm-up,"
        f" {after['VmHWM']:.0f} peak at the end, {after['VmRSS']:.0f} at the end;"
        f" /health/live slowest {max(probes) * 1000:.0f} ms of {len(probes)}"
    )
    # Each request in flight holds its answer a few times over (rows, objects, JSON, bytes
    # being sent), and no more.
    assert after["VmHWM"] - before["VmRSS"] < at_once * 4 * answer_mib
    # Level: after the warm-up, as many pages again raise the peak by less than one more
    # answer per request in flight (a leak of an eighth of an answer per page would not).
    assert after["VmHWM"] - warm["VmHWM"] < at_once * answer_mib
    # The event loop keeps answering: a probe waits behind a few answers at most (a few
    # hundred milliseconds on an idle machine; the bound leaves room for a busy one).
    assert max(probes) < 3.0
