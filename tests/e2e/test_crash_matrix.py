"""The service process killed (SIGKILL) at each step of pay and of cancel, and a concurrent
mix of everything across two workers with faults at random: afterwards a fresh process's
reconciler completes what was left, and the stand-ins' ledger and the database agree.

The invariants: nothing is left pending or claimed; no order is charged twice; every charge
belongs to an order that is paid or further on, or cancelled (or deleted after cancelling)
and refunded exactly once; no cancelled or deleted order has a live schedule.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from pathlib import Path
from typing import Literal

import httpx
import pytest

from orders_dev.standins import Behaviour, Gate, Ledger, Operation
from tests.conftest import TokenFactory
from tests.support import LATTE, customer, fetch, orders_process, standins_server

# Short leases so that a dead process's claims run out soon; calls end well inside them.
RECOVERY = {
    "ACTION_LEASE_SECONDS": "2",
    "HTTP_CALL_DEADLINE": "0.5",
    "RECONCILE_INTERVAL_SECONDS": "0.1",
    "RECONCILE_RETRY_MAX_SECONDS": "1",
}
# The process that gets killed is killed as soon as a held call arrives, well inside its
# deadline; its claims run out soon after.
DOOMED = {**RECOVERY, "HTTP_CALL_DEADLINE": "1", "ACTION_LEASE_SECONDS": "4"}


async def settled(database_url: str, seconds: float = 60) -> None:
    """Wait until no order has anything pending or claimed."""
    deadline = time.monotonic() + seconds
    while True:
        [left] = await fetch(database_url, "SELECT count(*) FROM orders WHERE due IS NOT NULL")
        if left[0] == 0:
            return
        assert time.monotonic() < deadline, f"{left[0]} orders still unresolved"
        await asyncio.sleep(0.1)


async def check_invariants(database_url: str, ledger: Ledger) -> dict[str, int]:
    """Assert that the ledger and the database agree; count the orders by status."""
    rows = {
        str(row["id"]): row
        for row in await fetch(
            database_url,
            "SELECT id, status, payment_id, schedule_id, charge_pending, schedule_pending,"
            " refund, action FROM orders",
        )
    }
    for row in rows.values():
        assert not row["charge_pending"]
        assert not row["schedule_pending"]
        assert row["refund"] in (None, "refunded")
        assert row["action"] is None
    charged = {payment["order_id"] for payment in ledger.payments.values()}
    for order_id in charged:
        payments = ledger.paid_payments(order_id)
        if not payments:
            continue
        assert len(payments) == 1, f"order {order_id} was charged twice"
        refunds = ledger.refunds_of(payments[0]["payment_id"])
        row = rows.get(order_id)
        if row is None or row["status"] == "cancelled":
            assert len(refunds) == 1, f"order {order_id} was not refunded exactly once"
        else:
            assert row["status"] in ("paid", "progress"), (order_id, row["status"])
            assert str(row["payment_id"]) == payments[0]["payment_id"]
            assert refunds == []
    for order_id, schedule_id in ledger.schedule_keys.items():
        schedule = ledger.schedules[schedule_id]
        row = rows.get(order_id)
        if row is None or row["status"] == "cancelled":
            assert schedule["status"] == "cancelled", f"order {order_id} has a live schedule"
        elif row["status"] == "progress":
            assert row["schedule_id"] == schedule_id
    statuses: dict[str, int] = {}
    for row in rows.values():
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    return statuses


Step = tuple[Literal["pay", "cancel"], Operation, Literal["before", "after"]]
STEPS: dict[str, Step] = {
    "pay-after-the-claim": ("pay", "charge", "before"),
    "pay-with-the-charge-sent": ("pay", "charge", "after"),
    "pay-after-the-charge-is-recorded": ("pay", "schedule", "before"),
    "pay-with-the-schedule-sent": ("pay", "schedule", "after"),
    "cancel-before-the-kitchen-cancel": ("cancel", "cancel", "before"),
    "cancel-with-the-kitchen-cancel-sent": ("cancel", "cancel", "after"),
    "cancel-with-the-refund-sent": ("cancel", "refund", "after"),
}


@pytest.mark.slow
@pytest.mark.parametrize("step", list(STEPS))
async def test_a_process_killed_mid_step_is_completed_by_a_fresh_one(
    tmp_path: Path,
    clean_database: str,
    key_pair: tuple[bytes, bytes],
    token_for: TokenFactory,
    step: str,
) -> None:
    action, operation, phase = STEPS[step]
    behaviour, ledger = Behaviour(), Ledger()
    token = token_for("alice")
    async with standins_server(behaviour, ledger) as standins:
        with orders_process(
            tmp_path, clean_database, key_pair[1], standins, "doomed", **DOOMED
        ) as (doomed, url):
            async with customer(url, token) as client:
                order_id = (await client.post("/orders", json={"order": [LATTE]})).json()["id"]
                if action == "cancel":
                    assert (await client.post(f"/orders/{order_id}/pay")).status_code == 200
                gate = behaviour.gate = Gate(operation, phase)
                request = asyncio.create_task(client.post(f"/orders/{order_id}/{action}"))
                await gate.arrived.wait()
                doomed.send_signal(signal.SIGKILL)
                doomed.wait()
                with pytest.raises(httpx.TransportError):
                    await request
        behaviour.gate = None
        gate.open.set()

        with orders_process(tmp_path, clean_database, key_pair[1], standins, "fresh", **RECOVERY):
            await settled(clean_database)

    statuses = await check_invariants(clean_database, ledger)
    # What the customer asked for is done.
    assert statuses == {"progress" if action == "pay" else "cancelled": 1}
    if action == "cancel":
        [payment] = ledger.paid_payments(order_id)
        assert len(ledger.refunds_of(payment["payment_id"])) == 1


@pytest.mark.slow
async def test_a_concurrent_mix_with_faults_keeps_money_and_kitchen_consistent(
    tmp_path: Path,
    clean_database: str,
    key_pair: tuple[bytes, bytes],
    token_for: TokenFactory,
) -> None:
    behaviour = Behaviour(fault_rate=0.3, random=random.Random(7))
    ledger = Ledger()
    outcomes: dict[int, int] = {}
    async with standins_server(behaviour, ledger) as standins:
        with orders_process(
            tmp_path, clean_database, key_pair[1], standins, "mix", workers=2, **RECOVERY
        ) as (_, url):

            async def shopper(seed: int) -> None:
                draw = random.Random(seed)
                async with customer(url, token_for(f"shopper-{seed}")) as client:
                    orders: list[str] = []
                    for _ in range(25):
                        if not orders or draw.random() < 0.25:
                            placed = await client.post("/orders", json={"order": [LATTE]})
                            orders.append(placed.json()["id"])
                            continue
                        order_id = draw.choice(orders)
                        method, path, body = draw.choice(
                            [
                                ("POST", f"/orders/{order_id}/pay", None),
                                ("POST", f"/orders/{order_id}/pay", None),
                                ("POST", f"/orders/{order_id}/cancel", None),
                                ("PUT", f"/orders/{order_id}", {"order": [LATTE]}),
                                ("DELETE", f"/orders/{order_id}", None),
                            ]
                        )
                        answer = await client.request(method, path, json=body)
                        outcomes[answer.status_code] = outcomes.get(answer.status_code, 0) + 1
                        assert answer.status_code < 500 or answer.status_code in (502, 503, 504)

            await asyncio.gather(*(shopper(seed) for seed in range(8)))
            behaviour.fault_rate = 0.0
            await settled(clean_database)

    statuses = await check_invariants(clean_database, ledger)
    # The mix did reach every corner: faults, refusals and successes of each kind.
    assert outcomes.get(200, 0) > 0
    assert outcomes.get(409, 0) > 0
    assert sum(outcomes.get(code, 0) for code in (502, 503, 504)) > 0
    assert statuses.get("cancelled", 0) > 0
    assert statuses.get("progress", 0) > 0
    assert any(ledger.refunds.values())
