"""Entity tags through HTTP: every single-order answer carries one, If-None-Match gives 304,
If-Match refuses a change to an order that has changed (412) and then changes nothing."""

from __future__ import annotations

import httpx
import pytest

from orders_dev.standins import Ledger
from tests.e2e.test_orders_api import snapshot
from tests.support import LATTE, place

MOCHA = {"product": "mocha", "size": "small", "quantity": 1}


async def test_every_single_order_answer_carries_the_tag_a_get_gives(
    client: httpx.AsyncClient,
) -> None:
    placed = await client.post("/orders", json={"order": [LATTE]})
    order = f"/orders/{placed.json()['id']}"
    tags = [placed.headers["etag"], (await client.get(order)).headers["etag"]]
    assert tags[0] == tags[1]

    for method, path, body in (
        ("PUT", order, {"order": [MOCHA]}),
        ("POST", f"{order}/pay", None),
        ("POST", f"{order}/cancel", None),
    ):
        response = await client.request(method, path, json=body)
        assert response.status_code == 200
        assert response.headers["etag"] == (await client.get(order)).headers["etag"]
        tags.append(response.headers["etag"])
    # A new tag for every change; strong (no W/) and quoted.
    assert len(set(tags)) == 4
    assert all(tag.startswith('"') and tag.endswith('"') for tag in tags)


async def test_two_orders_never_share_a_tag(client: httpx.AsyncClient) -> None:
    placed = [await client.post("/orders", json={"order": [LATTE]}) for _ in range(2)]
    assert len({response.headers["etag"] for response in placed}) == 2


async def test_if_none_match_is_304_until_the_order_changes(client: httpx.AsyncClient) -> None:
    order = f"/orders/{(await place(client))['id']}"
    tag = (await client.get(order)).headers["etag"]

    for header in (tag, f'"other", {tag}', f"W/{tag}", "*"):
        unchanged = await client.get(order, headers={"If-None-Match": header})
        assert unchanged.status_code == 304, header
        assert unchanged.content == b""
        assert unchanged.headers["etag"] == tag

    await client.put(order, json={"order": [MOCHA]})
    changed = await client.get(order, headers={"If-None-Match": tag})
    assert changed.status_code == 200
    assert changed.json()["order"] == [MOCHA]


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("PUT", "", {"order": [MOCHA]}),
        ("DELETE", "", None),
        ("POST", "/pay", None),
        ("POST", "/cancel", None),
    ],
)
async def test_a_stale_if_match_is_412_and_changes_nothing(
    client: httpx.AsyncClient,
    ledger: Ledger,
    clean_database: str,
    method: str,
    suffix: str,
    body: dict[str, object] | None,
) -> None:
    order = f"/orders/{(await place(client))['id']}"
    stale = (await client.get(order)).headers["etag"]
    current = (await client.put(order, json={"order": [LATTE, LATTE]})).headers["etag"]
    before = await snapshot(clean_database)

    for header in (stale, f"W/{current}", '"garbage"', f"{stale}, {stale}"):
        refused = await client.request(
            method, order + suffix, json=body, headers={"If-Match": header}
        )
        assert refused.status_code == 412, header
        assert "detail" in refused.json()

    assert await snapshot(clean_database) == before
    assert ledger.charges == []
    accepted = await client.request(
        method, order + suffix, json=body, headers={"If-Match": f"{stale}, {current}"}
    )
    assert accepted.status_code in (200, 204)


async def test_if_match_any_needs_only_the_order(client: httpx.AsyncClient) -> None:
    order = f"/orders/{(await place(client))['id']}"
    response = await client.put(order, json={"order": [MOCHA]}, headers={"If-Match": "*"})
    assert response.status_code == 200


async def test_another_users_order_is_404_whatever_its_tag(
    client: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    order = f"/orders/{(await place(client))['id']}"
    tag = (await client.get(order)).headers["etag"]

    assert (await bob.get(order, headers={"If-None-Match": tag})).status_code == 404
    for header in (tag, '"v999-0"'):
        response = await bob.put(order, json={"order": [MOCHA]}, headers={"If-Match": header})
        assert response.status_code == 404
