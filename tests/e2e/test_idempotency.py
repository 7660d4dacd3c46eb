"""Idempotency keys through HTTP against a real database: replays, refusals, concurrency,
several workers, restarts, lost answers, crashes in between, and expiry."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orders.web.idempotency import fingerprint
from orders_dev.standins import Behaviour, Gate, Ledger
from tests.conftest import TokenFactory
from tests.e2e.conftest import ServeApp
from tests.support import (
    LATTE,
    asyncpg_dsn,
    client_for,
    customer,
    free_port,
    orders_process,
    orders_processes,
    standins_server,
)

MOCHA = {"product": "mocha", "size": "small", "quantity": 1}
Serving = Callable[..., AbstractAsyncContextManager[tuple[httpx.AsyncClient, ASGIApp]]]


@pytest.fixture
def serving(serve_app: ServeApp) -> Serving:
    """`async with serving(**settings) as (client, app)`: a worker of its own, as alice."""
    return partial(serve_app, "alice")


async def query(database_url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(asyncpg_dsn(make_url(database_url)))
    try:
        return list(await connection.fetch(sql, *args))
    finally:
        await connection.close()


async def count_orders(database_url: str) -> int:
    [row] = await query(database_url, "SELECT count(*) FROM orders")
    return int(row[0])


def same_answer(first: httpx.Response, again: httpx.Response) -> None:
    assert again.status_code == first.status_code
    assert again.content == first.content
    for header in ("location", "etag", "content-type"):
        assert again.headers.get(header) == first.headers.get(header), header
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers


async def test_a_repeated_create_replays_the_first_answer(
    client: httpx.AsyncClient, clean_database: str
) -> None:
    headers = {"Idempotency-Key": "create-1"}
    first = await client.post("/orders", json={"order": [LATTE]}, headers=headers)
    await client.put(first.headers["location"], json={"order": [MOCHA]})

    again = await client.post("/orders", json={"order": [LATTE]}, headers=headers)

    assert first.status_code == 201
    same_answer(first, again)
    assert await count_orders(clean_database) == 1


async def test_the_same_key_for_another_request_is_422_and_does_nothing(
    client: httpx.AsyncClient, clean_database: str, ledger: Ledger
) -> None:
    headers = {"Idempotency-Key": "k"}
    first = await client.post("/orders", json={"order": [LATTE]}, headers=headers)
    order = first.headers["location"]

    for method, path, body in (
        ("POST", "/orders", {"order": [MOCHA]}),
        ("POST", f"{order}/pay", None),
        ("POST", f"{order}/cancel", None),
    ):
        response = await client.request(method, path, json=body, headers=headers)
        assert response.status_code == 422, path
        assert response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]

    assert await count_orders(clean_database) == 1
    assert ledger.charges == []
    assert (await client.get(order)).json()["status"] == "created"


async def test_keys_belong_to_their_caller(
    client: httpx.AsyncClient, bob: httpx.AsyncClient, clean_database: str
) -> None:
    headers = {"Idempotency-Key": "shared"}
    alices = await client.post("/orders", json={"order": [LATTE]}, headers=headers)
    bobs = await bob.post("/orders", json={"order": [LATTE]}, headers=headers)

    assert bobs.status_code == 201
    assert "idempotent-replayed" not in bobs.headers
    assert bobs.json()["id"] != alices.json()["id"]
    assert await count_orders(clean_database) == 2


@pytest.mark.parametrize("key", ["", '""', "x" * 256, "tab\there", "é"])
async def test_a_malformed_key_is_400_and_does_nothing(
    client: httpx.AsyncClient, clean_database: str, key: str
) -> None:
    response = await client.post(
        "/orders", json={"order": [LATTE]}, headers={"Idempotency-Key": key.encode()}
    )

    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["detail"]
    assert await count_orders(clean_database) == 0


async def test_a_quoted_key_is_the_same_key(client: httpx.AsyncClient) -> None:
    first = await client.post(
        "/orders", json={"order": [LATTE]}, headers={"Idempotency-Key": '"abc"'}
    )
    again = await client.post(
        "/orders", json={"order": [LATTE]}, headers={"Idempotency-Key": "abc"}
    )
    longest = await client.post(
        "/orders", json={"order": [LATTE]}, headers={"Idempotency-Key": "~" * 255}
    )

    same_answer(first, again)
    assert longest.status_code == 201


async def test_twenty_concurrent_creates_with_one_key_make_one_order(
    client: httpx.AsyncClient, clean_database: str
) -> None:
    responses = await asyncio.gather(
        *(
            client.post("/orders", json={"order": [LATTE]}, headers={"Idempotency-Key": "burst"})
            for _ in range(20)
        )
    )

    assert await count_orders(clean_database) == 1
    created = [r for r in responses if "idempotent-replayed" not in r.headers]
    assert len(created) == 1
    assert created[0].status_code == 201
    for response in responses:
        if response is not created[0] and response.status_code != 409:
            same_answer(created[0], response)


async def test_two_workers_and_a_restart_share_the_keys(
    serving: Serving, clean_database: str
) -> None:
    body = {"order": [LATTE]}
    headers = {"Idempotency-Key": "across"}
    async with serving() as (one, _), serving() as (two, _):
        responses = await asyncio.gather(
            *(
                worker.post("/orders", json=body, headers=headers)
                for _ in range(10)
                for worker in (one, two)
            )
        )
    created = [r for r in responses if "idempotent-replayed" not in r.headers]
    assert [r.status_code for r in created] == [201]
    assert all(r.status_code == 409 or r.content == created[0].content for r in responses)

    async with serving() as (restarted, _):
        again = await restarted.post("/orders", json=body, headers=headers)

    same_answer(created[0], again)
    assert await count_orders(clean_database) == 1


class LosesAnswers:
    """The app, but the client never hears the answer: as when the connection drops or the
    client times out after the server committed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def nowhere(message: Message) -> None:
            return None

        await self.app(scope, receive, nowhere)
        raise ConnectionResetError("the answer was lost")


async def test_a_create_whose_answer_was_lost_is_replayed(
    serving: Serving, token_for: TokenFactory, clean_database: str
) -> None:
    headers = {"Idempotency-Key": "lost"}
    async with serving() as (client, app):
        async with client_for(LosesAnswers(app), token_for("alice")) as lossy:
            with pytest.raises(ConnectionResetError):
                await lossy.post("/orders", json={"order": [LATTE]}, headers=headers)

        again = await client.post("/orders", json={"order": [LATTE]}, headers=headers)
        listed = (await client.get("/orders")).json()["orders"]

    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert [order["id"] for order in listed] == [again.json()["id"]]


async def test_a_pay_whose_answer_was_lost_charges_once_and_replays(
    serving: Serving, token_for: TokenFactory, ledger: Ledger
) -> None:
    async with serving() as (client, app):
        order = (await client.post("/orders", json={"order": [LATTE]})).headers["location"]
        headers = {"Idempotency-Key": "pay-1"}
        async with client_for(LosesAnswers(app), token_for("alice")) as lossy:
            with pytest.raises(ConnectionResetError):
                await lossy.post(f"{order}/pay", headers=headers)

        again = await client.post(f"{order}/pay", headers=headers)
        third = await client.post(f"{order}/pay", headers=headers)
        without_key = await client.post(f"{order}/pay")

    assert again.status_code == 200
    assert again.json()["status"] == "progress"
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["etag"]
    assert (third.status_code, third.content) == (again.status_code, again.content)
    assert third.headers["etag"] == again.headers["etag"]
    assert without_key.status_code == 409
    assert len(ledger.charges) == 1


async def test_cancel_replays_and_refunds_once(client: httpx.AsyncClient, ledger: Ledger) -> None:
    order = (await client.post("/orders", json={"order": [LATTE]})).headers["location"]
    assert (await client.post(f"{order}/pay")).status_code == 200
    headers = {"Idempotency-Key": "cancel-1"}

    first = await client.post(f"{order}/cancel", headers=headers)
    again = await client.post(f"{order}/cancel", headers=headers)

    assert first.status_code == 200
    same_answer(first, again)
    assert len(ledger.refunds) == 1


async def test_a_pay_still_running_is_409_then_replayed(
    client: httpx.AsyncClient, behaviour: Behaviour, ledger: Ledger
) -> None:
    order = (await client.post("/orders", json={"order": [LATTE]})).headers["location"]
    headers = {"Idempotency-Key": "slow-pay"}
    behaviour.delay_seconds = 0.5

    first = asyncio.ensure_future(client.post(f"{order}/pay", headers=headers))
    await asyncio.sleep(0.2)
    while_running = await client.post(f"{order}/pay", headers=headers)
    done = await first
    after = await client.post(f"{order}/pay", headers=headers)

    assert while_running.status_code == 409
    assert while_running.headers["retry-after"]
    assert done.status_code == 200
    same_answer(done, after)
    assert len(ledger.charges) == 1


async def test_a_failure_to_retry_is_not_kept_but_a_refusal_is(
    client: httpx.AsyncClient, behaviour: Behaviour, ledger: Ledger
) -> None:
    order = (await client.post("/orders", json={"order": [LATTE]})).headers["location"]
    headers = {"Idempotency-Key": "flaky"}

    behaviour.kitchen_fail_with = 503
    failed = await client.post(f"{order}/pay", headers=headers)
    behaviour.kitchen_fail_with = None
    retried = await client.post(f"{order}/pay", headers=headers)

    assert failed.status_code == 502
    assert retried.status_code == 200
    assert "idempotent-replayed" not in retried.headers
    assert len(ledger.charges) == 1

    other = (await client.post("/orders", json={"order": [LATTE]})).headers["location"]
    behaviour.payment_status = "invalid"
    refused = await client.post(f"{other}/pay", headers={"Idempotency-Key": "refused"})
    behaviour.payment_status = "paid"
    again = await client.post(f"{other}/pay", headers={"Idempotency-Key": "refused"})
    assert refused.status_code == 402
    same_answer(refused, again)


async def test_a_key_left_running_by_a_dead_worker_is_taken_over_after_its_lease(
    client: httpx.AsyncClient, clean_database: str, ledger: Ledger
) -> None:
    placed = await client.post("/orders", json={"order": [LATTE]})
    order = placed.headers["location"]
    now = datetime.now(UTC)
    held = (
        "INSERT INTO idempotency_keys (owner, key, fingerprint, token, locked_until, expires)"
        " VALUES ('alice', $1, $2, $3, $4, $5)"
    )
    print_ = fingerprint("POST", f"{order}/pay", b"")
    await query(
        clean_database,
        held,
        "live",
        print_,
        uuid.uuid4(),
        now + timedelta(minutes=1),
        now + timedelta(days=1),
    )
    await query(
        clean_database,
        held,
        "dead",
        print_,
        uuid.uuid4(),
        now - timedelta(seconds=1),
        now + timedelta(days=1),
    )

    blocked = await client.post(f"{order}/pay", headers={"Idempotency-Key": "live"})
    taken_over = await client.post(f"{order}/pay", headers={"Idempotency-Key": "dead"})

    assert blocked.status_code == 409
    assert taken_over.status_code == 200
    assert len(ledger.charges) == 1


async def test_expired_keys_are_new_keys_and_are_purged(
    serving: Serving, clean_database: str
) -> None:
    headers = {"Idempotency-Key": "short-lived"}
    async with serving(idempotency_key_ttl_seconds=0.3, idempotency_purge_interval_seconds=0.2) as (
        client,
        _,
    ):
        first = await client.post("/orders", json={"order": [LATTE]}, headers=headers)
        await asyncio.sleep(0.4)
        second = await client.post("/orders", json={"order": [LATTE]}, headers=headers)
        assert second.status_code == 201
        assert "idempotent-replayed" not in second.headers
        assert second.json()["id"] != first.json()["id"]

        for _ in range(100):
            if not await query(clean_database, "SELECT key FROM idempotency_keys"):
                break
            await asyncio.sleep(0.1)
        assert await query(clean_database, "SELECT key FROM idempotency_keys") == []


@pytest.mark.slow
async def test_two_server_processes_and_a_restart_share_the_keys(
    tmp_path: Path, clean_database: str, key_pair: tuple[bytes, bytes], token_for: TokenFactory
) -> None:
    token = token_for("alice")
    body = {"order": [LATTE]}
    headers = {"Idempotency-Key": "across-processes"}
    # Creating an order calls no collaborator: nothing listens at their address.
    nowhere = f"http://127.0.0.1:{free_port()}"
    with orders_processes(tmp_path, clean_database, key_pair[1], nowhere, "one", "two") as [
        (one, url_one),
        (two, url_two),
    ]:
        async with customer(url_one, token) as first, customer(url_two, token) as second:
            responses = await asyncio.gather(
                *(
                    client.post("/orders", json=body, headers=headers)
                    for _ in range(10)
                    for client in (first, second)
                )
            )
        # One process is stopped as a deployment does, the other killed outright.
        one.send_signal(signal.SIGTERM)
        two.send_signal(signal.SIGKILL)
        assert one.wait(timeout=15) == -signal.SIGTERM
        assert two.wait(timeout=15) == -signal.SIGKILL

    created = [r for r in responses if "idempotent-replayed" not in r.headers]
    assert [r.status_code for r in created] == [201]
    for response in responses:
        if response is not created[0] and response.status_code != 409:
            same_answer(created[0], response)
    assert await count_orders(clean_database) == 1

    with orders_process(tmp_path, clean_database, key_pair[1], nowhere, "restarted") as (_, url):
        async with customer(url, token) as client:
            again = await client.post("/orders", json=body, headers=headers)

    same_answer(created[0], again)
    assert await count_orders(clean_database) == 1


async def retry_while_in_flight(
    client: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> httpx.Response:
    """POST `path` as a careful client does: again, after a pause, while it is 409 (the key
    or the order still held by the request that went before)."""
    for _ in range(40):
        response = await client.post(path, headers=headers)
        if response.status_code != 409:
            return response
        await asyncio.sleep(min(float(response.headers.get("retry-after", "1")), 0.25))
    raise AssertionError(f"still 409 after 40 tries: {response.text}")


@pytest.mark.slow
async def test_a_pay_cut_off_by_a_killed_process_is_finished_by_its_retry_in_a_new_one(
    tmp_path: Path, clean_database: str, key_pair: tuple[bytes, bytes], token_for: TokenFactory
) -> None:
    token = token_for("alice")
    behaviour, ledger = Behaviour(), Ledger()
    headers = {"Idempotency-Key": "pay-across-a-crash"}
    # Short leases, so that the dead process's hold on the key and on the order runs out
    # soon. The reconciler is off: the customer's retry alone completes the payment.
    settings = {
        "ACTION_LEASE_SECONDS": "2",
        "HTTP_CALL_DEADLINE": "0.5",
        "RECONCILE_ENABLED": "false",
    }
    async with standins_server(behaviour, ledger) as standins:
        with orders_process(
            tmp_path, clean_database, key_pair[1], standins, "doomed", **settings
        ) as (doomed, url):
            async with customer(url, token) as client:
                order_id = (await client.post("/orders", json={"order": [LATTE]})).json()["id"]
                # Payments charges, and the process dies before it hears so.
                gate = behaviour.gate = Gate("charge", "after")
                paying = asyncio.create_task(
                    client.post(f"/orders/{order_id}/pay", headers=headers)
                )
                await gate.arrived.wait()
                doomed.send_signal(signal.SIGKILL)
                doomed.wait()
                with pytest.raises(httpx.TransportError):
                    await paying
        behaviour.gate = None
        gate.open.set()

        with orders_process(
            tmp_path, clean_database, key_pair[1], standins, "fresh", **settings
        ) as (_, url):
            async with customer(url, token) as client:
                paid = await retry_while_in_flight(client, f"/orders/{order_id}/pay", headers)
                again = await client.post(f"/orders/{order_id}/pay", headers=headers)

    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "progress"
    same_answer(paid, again)
    # The retry asked payments again with the charge's own key; one payment came of both.
    assert ledger.charges == [(order_id, "paid")] * 2
    [payment] = ledger.payments.values()
    [row] = await query(clean_database, "SELECT payment_id FROM orders")
    assert str(row["payment_id"]) == payment["payment_id"]
