"""Pay and cancel through HTTP, with payments and kitchen played by the stand-ins: the happy
paths, every failure kind, exactly-once charging under concurrency."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy.engine import make_url

from orders.app import create_app
from orders.settings import Settings
from orders_dev.standins import Behaviour, Ledger, create_standins
from tests.conftest import TokenFactory
from tests.support import asyncpg_dsn, client_for, free_port, set_status, standins_server
from tests.support import place as place_order

LATTE = {"product": "latte", "size": "big", "quantity": 2}


async def place(client: httpx.AsyncClient) -> str:
    order_id: str = (await place_order(client, LATTE))["id"]
    return order_id


@asynccontextmanager
async def serving(settings: Settings, token: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app with these settings and the real network for payments and kitchen."""
    async with (
        LifespanManager(create_app(settings)) as manager,
        client_for(manager.app, token) as client,
    ):
        yield client


async def row(database_url: str, order_id: str) -> dict[str, Any]:
    """The order's row as stored, claim columns included."""
    connection = await asyncpg.connect(asyncpg_dsn(make_url(database_url)))
    try:
        found = await connection.fetchrow(
            "SELECT status, payment_id, schedule_id, action, charge_attempt, charge_pending"
            " FROM orders"
            " WHERE id = $1",
            uuid.UUID(order_id),
        )
    finally:
        await connection.close()
    assert found is not None
    return dict(found)


async def test_pay_charges_then_schedules(
    client: httpx.AsyncClient, ledger: Ledger, clean_database: str
) -> None:
    order_id = await place(client)

    response = await client.post(f"/orders/{order_id}/pay")

    assert response.status_code == 200
    assert response.json()["status"] == "progress"
    assert response.json()["order"] == [LATTE]
    assert ledger.charges == [(order_id, "paid")]
    [schedule] = ledger.schedules.values()
    assert schedule["order"] == [LATTE]
    stored = await row(clean_database, order_id)
    assert stored["status"] == "progress"
    assert stored["schedule_id"] == schedule["id"]
    assert str(stored["payment_id"]) == ledger.payments[f"{order_id}:0"]["payment_id"]
    assert stored["action"] is None


async def test_a_refused_payment_is_402_and_changes_nothing(
    client: httpx.AsyncClient, behaviour: Behaviour, ledger: Ledger, clean_database: str
) -> None:
    order_id = await place(client)
    behaviour.payment_status = "invalid"

    response = await client.post(f"/orders/{order_id}/pay")

    assert response.status_code == 402
    assert "refused" in response.json()["detail"]
    assert ledger.schedules == {}
    stored = await row(clean_database, order_id)
    assert (stored["status"], stored["action"], stored["payment_id"]) == ("created", None, None)


async def test_after_a_refusal_a_new_attempt_can_succeed(
    client: httpx.AsyncClient, behaviour: Behaviour, ledger: Ledger
) -> None:
    order_id = await place(client)
    behaviour.payment_status = "invalid"
    assert (await client.post(f"/orders/{order_id}/pay")).status_code == 402

    behaviour.payment_status = "paid"
    response = await client.post(f"/orders/{order_id}/pay")

    assert response.status_code == 200
    assert ledger.charges == [(order_id, "invalid"), (order_id, "paid")]


@pytest.mark.parametrize(
    ("setup", "unknown"),
    [
        (lambda b: setattr(b, "payments_fail_with", 500), True),
        (lambda b: setattr(b, "payments_fail_with", 404), False),
        (lambda b: setattr(b, "payment_status", "pending"), True),
    ],
    ids=["5xx", "4xx", "pending"],
)
async def test_payment_failures_leave_the_order_unchanged(
    client: httpx.AsyncClient,
    behaviour: Behaviour,
    ledger: Ledger,
    clean_database: str,
    setup: Callable[[Behaviour], None],
    unknown: bool,
) -> None:
    order_id = await place(client)
    setup(behaviour)

    response = await client.post(f"/orders/{order_id}/pay")

    assert response.status_code == 502
    assert "payments" in response.json()["detail"]
    assert ledger.schedules == {}
    stored = await row(clean_database, order_id)
    assert (stored["status"], stored["action"], stored["charge_attempt"]) == ("created", None, 0)
    # After a 5xx or "pending" the customer may have been charged: only paying again is allowed.
    assert stored["charge_pending"] is unknown
    edit = await client.put(f"/orders/{order_id}", json={"order": [LATTE]})
    assert edit.status_code == (409 if unknown else 200)


async def test_paying_again_settles_an_unknown_charge(
    client: httpx.AsyncClient, behaviour: Behaviour, ledger: Ledger, clean_database: str
) -> None:
    order_id = await place(client)
    behaviour.payment_status = "pending"
    assert (await client.post(f"/orders/{order_id}/pay")).status_code == 502
    for method, path in (("DELETE", f"/orders/{order_id}"), ("POST", f"/orders/{order_id}/cancel")):
        response = await client.request(method, path)
        assert response.status_code == 409
        assert "not known yet" in response.json()["detail"]
        assert response.headers["Retry-After"] == "5"

    behaviour.payment_status = "paid"
    paid = await client.post(f"/orders/{order_id}/pay")

    assert paid.status_code == 200
    # The same idempotency key both times: payments sees one charge, asked twice.
    assert list(ledger.payments) == [f"{order_id}:0"]
    assert (await row(clean_database, order_id))["charge_pending"] is False


async def test_kitchen_failure_after_the_charge_leaves_it_paid_and_a_retry_does_not_charge(
    client: httpx.AsyncClient, behaviour: Behaviour, ledger: Ledger, clean_database: str
) -> None:
    order_id = await place(client)
    behaviour.kitchen_fail_with = 503

    failed = await client.post(f"/orders/{order_id}/pay")

    assert failed.status_code == 502
    assert "kitchen" in failed.json()["detail"]
    assert (await row(clean_database, order_id))["status"] == "paid"
    assert (await client.get(f"/orders/{order_id}")).json()["status"] == "paid"

    behaviour.kitchen_fail_with = None
    retried = await client.post(f"/orders/{order_id}/pay")

    assert retried.status_code == 200
    assert retried.json()["status"] == "progress"
    assert ledger.charges == [(order_id, "paid")]
    assert len(ledger.schedules) == 1


@pytest.mark.parametrize("status", ["progress", "cancelled", "dispatched", "delivered"])
async def test_pay_is_409_outside_created_and_paid(
    client: httpx.AsyncClient, ledger: Ledger, clean_database: str, status: str
) -> None:
    order_id = await place(client)
    await set_status(clean_database, order_id, status)

    response = await client.post(f"/orders/{order_id}/pay")

    assert response.status_code == 409
    # Not allowed in this status: nothing to wait for.
    assert "Retry-After" not in response.headers
    assert ledger.charges == []


async def test_twenty_concurrent_pays_charge_once(
    client: httpx.AsyncClient, behaviour: Behaviour, ledger: Ledger
) -> None:
    order_id = await place(client)
    behaviour.delay_seconds = 0.05

    responses = await asyncio.gather(*(client.post(f"/orders/{order_id}/pay") for _ in range(20)))

    codes = sorted(response.status_code for response in responses)
    assert codes == [200] + [409] * 19
    # Refused while the first pay ran: look again in a moment. Refused after it: not allowed.
    for response in (refused for refused in responses if refused.status_code == 409):
        running = "another payment or cancellation runs" in response.json().get("detail", "")
        assert response.headers.get("Retry-After") == ("1" if running else None)
    assert len(ledger.charges) == 1
    assert len(ledger.schedules) == 1


@pytest.mark.parametrize("status", ["created", "paid"])
async def test_cancel_before_the_kitchen_needs_no_kitchen(
    client: httpx.AsyncClient, ledger: Ledger, clean_database: str, status: str
) -> None:
    order_id = await place(client)
    await set_status(clean_database, order_id, status)

    response = await client.post(f"/orders/{order_id}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert ledger.cancels == []


async def test_cancel_in_progress_cancels_the_kitchen_schedule_first(
    client: httpx.AsyncClient, ledger: Ledger, clean_database: str
) -> None:
    order_id = await place(client)
    await client.post(f"/orders/{order_id}/pay")
    schedule_id = (await row(clean_database, order_id))["schedule_id"]

    response = await client.post(f"/orders/{order_id}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert ledger.cancels == [schedule_id]
    assert ledger.schedules[schedule_id]["status"] == "cancelled"


@pytest.mark.parametrize(("fail_with", "expected"), [(409, 502), (500, 502)])
async def test_when_the_kitchen_refuses_to_cancel_the_order_stays_in_progress(
    client: httpx.AsyncClient,
    behaviour: Behaviour,
    clean_database: str,
    fail_with: int,
    expected: int,
) -> None:
    order_id = await place(client)
    await client.post(f"/orders/{order_id}/pay")
    behaviour.cancel_fail_with = fail_with

    response = await client.post(f"/orders/{order_id}/cancel")

    assert response.status_code == expected
    assert "kitchen" in response.json()["detail"]
    stored = await row(clean_database, order_id)
    assert (stored["status"], stored["action"]) == ("progress", None)


@pytest.mark.parametrize("status", ["cancelled", "dispatched", "delivered"])
async def test_cancel_is_409_in_final_states(
    client: httpx.AsyncClient, clean_database: str, status: str
) -> None:
    order_id = await place(client)
    await set_status(clean_database, order_id, status)

    response = await client.post(f"/orders/{order_id}/cancel")

    assert response.status_code == 409


async def test_a_paid_order_cannot_be_deleted_but_a_cancelled_one_can(
    client: httpx.AsyncClient,
) -> None:
    order_id = await place(client)
    await client.post(f"/orders/{order_id}/pay")

    assert (await client.delete(f"/orders/{order_id}")).status_code == 409
    assert (await client.post(f"/orders/{order_id}/cancel")).status_code == 200
    assert (await client.delete(f"/orders/{order_id}")).status_code == 204


# Transport-level failures: the network itself misbehaves.


class Faulty(httpx.AsyncBaseTransport):
    """Payments and kitchen as stand-ins, except that chosen paths raise a transport error
    or answer with a response of the test's making."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.failures: dict[str, Exception | httpx.Response] = {}
        self.calls: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request.url.path)
        for suffix, failure in self.failures.items():
            if request.url.path.endswith(suffix):
                if isinstance(failure, httpx.Response):
                    return failure
                raise failure
        return await self.inner.handle_async_request(request)


@pytest.fixture
async def faulty_client(
    settings: Settings, behaviour: Behaviour, ledger: Ledger, token_for: TokenFactory
) -> AsyncIterator[tuple[httpx.AsyncClient, Faulty]]:
    faulty = Faulty(httpx.ASGITransport(app=create_standins(behaviour, ledger)))
    async with (
        LifespanManager(create_app(settings, transport=faulty)) as manager,
        client_for(manager.app, token_for("alice")) as client,
    ):
        yield client, faulty


@pytest.mark.parametrize(
    ("failure", "status", "sent"),
    [
        (httpx.ReadTimeout("slow"), 504, True),
        (httpx.ConnectTimeout("slow"), 504, False),
        (httpx.ConnectError("refused"), 503, False),
        (httpx.RemoteProtocolError("garbled"), 503, True),
        ("gzip that is not", 502, True),
    ],
    ids=["read-timeout", "connect-timeout", "refused", "protocol", "bad-encoding"],
)
@pytest.mark.parametrize("who", ["/payments", "/kitchen/schedules"])
async def test_transport_failures_map_to_502_503_504(
    faulty_client: tuple[httpx.AsyncClient, Faulty],
    clean_database: str,
    failure: Exception | str,
    status: int,
    sent: bool,
    who: str,
) -> None:
    client, faulty = faulty_client
    order_id = await place(client)
    faulty.failures[who] = (
        httpx.Response(
            201, headers={"Content-Encoding": "gzip"}, stream=httpx.ByteStream(b"not gzip")
        )
        if isinstance(failure, str)
        else failure
    )

    response = await client.post(f"/orders/{order_id}/pay")

    assert response.status_code == status
    assert set(response.json()) == {"detail"}
    if status == 503:
        assert response.headers["retry-after"]
    stored = await row(clean_database, order_id)
    assert stored["status"] == ("created" if who == "/payments" else "paid")
    assert stored["action"] is None
    # A charge request that may have reached payments leaves the charge pending.
    assert stored["charge_pending"] is (who == "/payments" and sent)


async def test_cancel_retries_a_lost_kitchen_answer(
    faulty_client: tuple[httpx.AsyncClient, Faulty], ledger: Ledger
) -> None:
    client, faulty = faulty_client
    order_id = await place(client)
    await client.post(f"/orders/{order_id}/pay")
    faulty.failures["/cancel"] = httpx.ReadTimeout("lost")

    failed = await client.post(f"/orders/{order_id}/cancel")

    assert failed.status_code == 504
    assert sum(path.endswith("/cancel") for path in faulty.calls) == 3
    faulty.failures.clear()
    assert (await client.post(f"/orders/{order_id}/cancel")).status_code == 200


# Real sockets: a slow stand-in server and a port where nothing listens.


@pytest.fixture
async def slow_standins(behaviour: Behaviour, ledger: Ledger) -> AsyncIterator[str]:
    async with standins_server(behaviour, ledger) as url:
        yield url


async def test_a_real_read_timeout_is_504(
    settings: Settings,
    slow_standins: str,
    behaviour: Behaviour,
    token_for: TokenFactory,
    clean_database: str,
) -> None:
    behaviour.delay_seconds = 1.0
    real = settings.model_copy(
        update={
            "payments_url": slow_standins,
            "kitchen_url": slow_standins,
            "http_read_timeout": 0.2,
        }
    )
    async with serving(real, token_for("alice")) as client:
        order_id = await place(client)
        response = await client.post(f"/orders/{order_id}/pay")

    assert response.status_code == 504
    assert (await row(clean_database, order_id))["status"] == "created"


async def test_a_refused_connection_is_503(
    settings: Settings, token_for: TokenFactory, clean_database: str
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    real = settings.model_copy(
        update={"payments_url": nowhere, "kitchen_url": nowhere, "http_connect_retries": 1}
    )
    async with serving(real, token_for("alice")) as client:
        order_id = await place(client)
        response = await client.post(f"/orders/{order_id}/pay")

    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert (await row(clean_database, order_id))["status"] == "created"


async def test_pay_sends_the_kitchen_the_items_of_a_put_it_waited_for(
    client: httpx.AsyncClient, ledger: Ledger, clean_database: str
) -> None:
    order_id = await place(client)
    # A PUT in flight elsewhere: its transaction holds the order's row and has new items.
    put = await asyncpg.connect(asyncpg_dsn(make_url(clean_database)))
    transaction = put.transaction()
    await transaction.start()
    try:
        await put.execute("UPDATE orders SET updated = now() WHERE id = $1", uuid.UUID(order_id))
        await put.execute("DELETE FROM order_items WHERE order_id = $1", uuid.UUID(order_id))
        await put.execute(
            "INSERT INTO order_items (order_id, position, product, size, quantity)"
            " VALUES ($1, 0, 'mocha', 'small', 3)",
            uuid.UUID(order_id),
        )
        paying = asyncio.create_task(client.post(f"/orders/{order_id}/pay"))
        await asyncio.sleep(0.3)
        assert not paying.done(), "pay should wait for the PUT's row lock"
        await transaction.commit()
    finally:
        await put.close()

    response = await paying

    new_items = [{"product": "mocha", "size": "small", "quantity": 3}]
    assert response.status_code == 200
    assert response.json()["order"] == new_items
    [schedule] = ledger.schedules.values()
    assert schedule["order"] == new_items
