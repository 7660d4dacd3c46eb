"""Money and kitchen work under faults: each failure a review found in pay and cancel, as a
regression test, plus refunds and the reconciler, against the stand-ins' ledger.

The stand-ins run on a real port where timing matters (trickled answers, requests held while
they take effect), otherwise behind an in-process transport.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from orders.app import create_app
from orders.settings import Settings
from orders_dev.standins import Behaviour, Gate, Ledger, create_standins
from tests.conftest import TokenFactory
from tests.support import LATTE, client_for, fetch, place, standins_server

# Calls end within half a second; claims last the shortest the settings allow.
FAST = {"http_call_deadline": 0.5, "http_read_timeout": 1.0, "action_lease_seconds": 2.0}
RECONCILING = {"reconcile_enabled": True, "reconcile_interval_seconds": 0.05}


@asynccontextmanager
async def serving(
    settings: Settings,
    token: str,
    transport: httpx.AsyncBaseTransport | None = None,
    **overrides: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with these settings, and the real network unless `transport` is given."""
    app = create_app(settings.model_copy(update=overrides), transport=transport)
    async with LifespanManager(app) as manager, client_for(manager.app, token) as client:
        yield client


async def row(database_url: str, order_id: str) -> dict[str, Any]:
    [found] = await fetch(
        database_url,
        "SELECT status, payment_id, schedule_id, charge_pending, schedule_pending, refund,"
        " action, due FROM orders WHERE id = $1",
        uuid.UUID(order_id),
    )
    return dict(found)


async def reconciled(
    settings: Settings,
    token: str,
    database_url: str,
    order_id: str,
    expected: dict[str, Any],
    transport: httpx.AsyncBaseTransport | None = None,
    **overrides: Any,
) -> None:
    """Run an app whose reconciler is on until the order's row shows `expected`."""
    async with serving(settings, token, transport, **RECONCILING, **overrides):
        deadline = time.monotonic() + 15
        while True:
            stored = await row(database_url, order_id)
            if all(stored[name] == value for name, value in expected.items()):
                return
            assert time.monotonic() < deadline, f"the reconciler did not get there: {stored}"
            await asyncio.sleep(0.05)


class LostAnswers(httpx.AsyncBaseTransport):
    """The stand-ins, except that a request to a path ending in one of `suffixes` takes
    effect and then its answer is lost (a read timeout)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.suffixes: set[str] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if any(request.url.path.endswith(suffix) for suffix in self.suffixes):
            await response.aclose()
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


def payment_of(ledger: Ledger, order_id: str) -> dict[str, Any]:
    [payment] = ledger.paid_payments(order_id)
    return payment


async def test_an_orphaned_schedule_is_found_again_and_cancelled(
    settings: Settings,
    behaviour: Behaviour,
    ledger: Ledger,
    token_for: TokenFactory,
    clean_database: str,
) -> None:
    """Regression: a paid order whose schedule was made but never recorded could be
    cancelled while the kitchen kept a live schedule."""
    lossy = LostAnswers(httpx.ASGITransport(app=create_standins(behaviour, ledger)))
    async with serving(settings, token_for("alice"), lossy) as client:
        order_id = (await place(client, LATTE))["id"]
        lossy.suffixes.add("/kitchen/schedules")
        assert (await client.post(f"/orders/{order_id}/pay")).status_code == 504
        stored = await row(clean_database, order_id)
        assert (stored["status"], stored["schedule_pending"]) == ("paid", True)
        assert stored["schedule_id"] is None
        lossy.suffixes.clear()

        cancelled = await client.post(f"/orders/{order_id}/cancel")

    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    schedule = ledger.schedules[ledger.schedule_keys[order_id]]
    assert schedule["status"] == "cancelled"
    assert len(ledger.refunds_of(payment_of(ledger, order_id)["payment_id"])) == 1
    assert (await row(clean_database, order_id))["refund"] == "refunded"


async def test_a_trickling_answer_is_cut_off_at_the_overall_deadline(
    settings: Settings,
    behaviour: Behaviour,
    ledger: Ledger,
    token_for: TokenFactory,
    clean_database: str,
) -> None:
    """Regression: per-read timeouts let a server that sends a few bytes at a time keep a
    charge alive for as long as it liked."""
    # Each piece comes well within the read timeout; the whole answer takes over a second.
    behaviour.trickle_seconds = 0.25
    async with (
        standins_server(behaviour, ledger) as standins,
        serving(
            settings, token_for("alice"), payments_url=standins, kitchen_url=standins, **FAST
        ) as client,
    ):
        order_id = (await place(client, LATTE))["id"]

        response = await client.post(f"/orders/{order_id}/pay")
        trickled_to_the_end = ledger.trickled

    assert response.status_code == 504
    assert "0.5 s" in response.json()["detail"]
    assert trickled_to_the_end == 0
    # The charge took effect before its answer was cut off: it stays pending.
    assert (await row(clean_database, order_id))["charge_pending"] is True


async def test_a_409_for_a_key_in_flight_keeps_the_charge_pending(
    settings: Settings,
    behaviour: Behaviour,
    ledger: Ledger,
    token_for: TokenFactory,
    clean_database: str,
) -> None:
    """Regression: a 409 ("this key is still in flight") was taken as "not charged", so the
    order could be deleted while its first charge went on to complete."""
    gate = behaviour.gate = Gate("charge", "after")
    async with (
        standins_server(behaviour, ledger) as standins,
        serving(
            settings, token_for("alice"), payments_url=standins, kitchen_url=standins, **FAST
        ) as client,
    ):
        order_id = (await place(client, LATTE))["id"]
        # The first charge takes effect and its answer is held past the deadline.
        assert (await client.post(f"/orders/{order_id}/pay")).status_code == 504
        again = await client.post(f"/orders/{order_id}/pay")
        assert again.status_code == 502
        assert "409" in again.json()["detail"]
        assert (await row(clean_database, order_id))["charge_pending"] is True
        assert (await client.delete(f"/orders/{order_id}")).status_code == 409
        assert (await client.post(f"/orders/{order_id}/cancel")).status_code == 409

        gate.open.set()
        paid = await client.post(f"/orders/{order_id}/pay")

    assert paid.status_code == 200
    assert paid.json()["status"] == "progress"
    assert len(ledger.paid_payments(order_id)) == 1


async def test_a_takeover_never_strands_a_paid_order(
    settings: Settings,
    behaviour: Behaviour,
    ledger: Ledger,
    token_for: TokenFactory,
    clean_database: str,
) -> None:
    """Regression: after a lease takeover both pays answered 409 and the order stayed `paid`,
    never scheduled."""
    gate = behaviour.gate = Gate("charge", "after")
    slow = {"http_call_deadline": 2.0, "action_lease_seconds": 8.0}
    async with (
        standins_server(behaviour, ledger) as standins,
        serving(
            settings, token_for("alice"), payments_url=standins, kitchen_url=standins, **slow
        ) as client,
    ):
        order_id = (await place(client, LATTE))["id"]
        first = asyncio.create_task(client.post(f"/orders/{order_id}/pay"))
        await gate.arrived.wait()
        # The first request's lease runs out while payments still holds its answer.
        await fetch(
            clean_database,
            "UPDATE orders SET action_expires = now() - interval '1 second',"
            " due = now() - interval '1 second' WHERE id = $1",
            uuid.UUID(order_id),
        )
        second = await client.post(f"/orders/{order_id}/pay")
        gate.open.set()
        first_answer = await first

        assert second.status_code == 502  # its repeat of the charge met the first in flight
        assert first_answer.status_code == 409  # charged; scheduling is left to others
        stored = await row(clean_database, order_id)
        assert (stored["status"], stored["schedule_pending"], stored["action"]) == (
            "paid",
            True,
            None,
        )

        await reconciled(
            settings,
            token_for("alice"),
            clean_database,
            order_id,
            {"status": "progress"},
            payments_url=standins,
            kitchen_url=standins,
            **slow,
        )

    assert len(ledger.paid_payments(order_id)) == 1
    assert list(ledger.schedule_keys) == [order_id]


@pytest.mark.parametrize("before", ["paid", "progress"])
async def test_cancelling_a_charged_order_refunds_it_once(
    client: httpx.AsyncClient,
    behaviour: Behaviour,
    ledger: Ledger,
    clean_database: str,
    before: str,
) -> None:
    """Regression: cancelling a paid or in-progress order never gave the money back."""
    order_id = (await place(client, LATTE))["id"]
    if before == "paid":
        behaviour.kitchen_fail_with = 422  # turned down outright: the order stays paid
    await client.post(f"/orders/{order_id}/pay")
    assert (await row(clean_database, order_id))["status"] == before
    behaviour.kitchen_fail_with = None

    response = await client.post(f"/orders/{order_id}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    payment = payment_of(ledger, order_id)
    [refund] = ledger.refunds_of(payment["payment_id"])
    assert refund["status"] == "refunded"
    stored = await row(clean_database, order_id)
    assert (stored["refund"], stored["action"], stored["due"]) == ("refunded", None, None)
    assert ledger.cancels == ([] if before == "paid" else [stored["schedule_id"]])
    # Refunded, the order may go.
    assert (await client.delete(f"/orders/{order_id}")).status_code == 204


async def test_an_unconfirmed_refund_is_asked_for_again_until_confirmed(
    settings: Settings,
    behaviour: Behaviour,
    ledger: Ledger,
    token_for: TokenFactory,
    clean_database: str,
) -> None:
    standins = httpx.ASGITransport(app=create_standins(behaviour, ledger))
    async with serving(settings, token_for("alice"), standins) as client:
        order_id = (await place(client, LATTE))["id"]
        await client.post(f"/orders/{order_id}/pay")
        behaviour.refunds_fail_with = 503

        cancelled = await client.post(f"/orders/{order_id}/cancel")

        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled"
        assert (await row(clean_database, order_id))["refund"] == "owed"
        # A refund still owed keeps the order: it cannot be deleted yet.
        deleted = await client.delete(f"/orders/{order_id}")
        assert deleted.status_code == 409
        assert "refund" in deleted.json()["detail"]

    behaviour.refunds_fail_with = None
    await reconciled(
        settings, token_for("alice"), clean_database, order_id, {"refund": "refunded"}, standins
    )

    assert len(ledger.refunds_of(payment_of(ledger, order_id)["payment_id"])) == 1


async def test_a_refused_refund_is_logged_and_the_cancellation_stands(
    client: httpx.AsyncClient,
    behaviour: Behaviour,
    clean_database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    order_id = (await place(client, LATTE))["id"]
    await client.post(f"/orders/{order_id}/pay")
    behaviour.refund_status = "invalid"

    response = await client.post(f"/orders/{order_id}/cancel")

    assert response.status_code == 200
    stored = await row(clean_database, order_id)
    assert (stored["status"], stored["refund"], stored["due"]) == ("cancelled", "refused", None)
    assert any("refused to refund" in record.getMessage() for record in caplog.records)


async def test_the_reconciler_settles_an_unknown_charge_without_the_customer(
    settings: Settings,
    behaviour: Behaviour,
    ledger: Ledger,
    token_for: TokenFactory,
    clean_database: str,
) -> None:
    standins = httpx.ASGITransport(app=create_standins(behaviour, ledger))
    async with serving(settings, token_for("alice"), standins) as client:
        order_id = (await place(client, LATTE))["id"]
        behaviour.payment_status = "pending"
        assert (await client.post(f"/orders/{order_id}/pay")).status_code == 502
    assert (await row(clean_database, order_id))["charge_pending"] is True

    behaviour.payment_status = "paid"
    await reconciled(
        settings, token_for("alice"), clean_database, order_id, {"status": "progress"}, standins
    )

    stored = await row(clean_database, order_id)
    assert (stored["charge_pending"], stored["schedule_pending"], stored["due"]) == (
        False,
        False,
        None,
    )
    assert len(ledger.payments) == 1


async def test_sixteen_concurrent_pays_make_one_charge(
    client: httpx.AsyncClient, behaviour: Behaviour, ledger: Ledger
) -> None:
    order_id = (await place(client, LATTE))["id"]
    behaviour.delay_seconds = 0.05

    answers = await asyncio.gather(*(client.post(f"/orders/{order_id}/pay") for _ in range(16)))

    assert sorted(answer.status_code for answer in answers) == [200] + [409] * 15
    assert ledger.charges == [(order_id, "paid")]
