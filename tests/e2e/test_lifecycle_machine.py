"""Random sequences of create/put/pay/cancel/delete, with payments and kitchen failing at
random, keep the documented state machine and never charge an order twice."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import httpx
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from orders.standins import Behaviour, Ledger

ITEMS = st.lists(
    st.fixed_dictionaries(
        {
            "product": st.sampled_from(["latte", "mocha", "tea"]),
            "size": st.sampled_from(["small", "medium", "big"]),
            "quantity": st.integers(1, 5),
        }
    ),
    min_size=1,
    max_size=3,
)
DELETED = "deleted"


class OrderLifecycle(RuleBasedStateMachine):
    """The model: what status each order must have, checked against the service."""

    loop: ClassVar[asyncio.AbstractEventLoop]
    client: ClassVar[httpx.AsyncClient]
    behaviour: ClassVar[Behaviour]
    ledger: ClassVar[Ledger]

    orders = Bundle("orders")

    def __init__(self) -> None:
        super().__init__()
        self.status: dict[str, str] = {}
        # Orders whose last charge has an unknown outcome: only paying again is allowed.
        self.pending: set[str] = set()
        self.behaviour.payment_status = "paid"
        self.behaviour.payments_fail_with = None
        self.behaviour.kitchen_fail_with = None
        self.behaviour.cancel_fail_with = None
        self.ledger.charges.clear()

    def call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        # Rules run in a worker thread; the app lives in the test's event loop.
        request = self.client.request(method, path, json=body)
        return asyncio.run_coroutine_threadsafe(request, self.loop).result(timeout=30)

    @rule(target=orders, items=ITEMS)
    def create(self, items: list[dict[str, Any]]) -> str:
        response = self.call("POST", "/orders", {"order": items})
        assert response.status_code == 201
        order_id: str = response.json()["id"]
        self.status[order_id] = "created"
        return order_id

    @rule(order_id=orders, items=ITEMS)
    def put(self, order_id: str, items: list[dict[str, Any]]) -> None:
        response = self.call("PUT", f"/orders/{order_id}", {"order": items})
        expected = {"created": 200, DELETED: 404}.get(self.status[order_id], 409)
        if order_id in self.pending and expected == 200:
            expected = 409
        assert response.status_code == expected, response.text

    @rule(
        order_id=orders,
        payment=st.sampled_from(["paid", "invalid", "fails"]),
        kitchen_ok=st.booleans(),
    )
    def pay(self, order_id: str, payment: str, kitchen_ok: bool) -> None:
        self.behaviour.payment_status = "paid" if payment == "fails" else payment
        self.behaviour.payments_fail_with = 500 if payment == "fails" else None
        self.behaviour.kitchen_fail_with = None if kitchen_ok else 500
        before = self.status[order_id]

        response = self.call("POST", f"/orders/{order_id}/pay")

        if before == DELETED:
            assert response.status_code == 404
        elif before not in ("created", "paid"):
            assert response.status_code == 409
        elif before == "created" and payment == "invalid":
            assert response.status_code == 402
            self.pending.discard(order_id)
        elif before == "created" and payment == "fails":
            assert response.status_code == 502
            self.pending.add(order_id)
        elif not kitchen_ok:
            assert response.status_code == 502
            self.status[order_id] = "paid"
            self.pending.discard(order_id)
        else:
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "progress"
            self.status[order_id] = "progress"
            self.pending.discard(order_id)

    @rule(order_id=orders, kitchen_ok=st.booleans())
    def cancel(self, order_id: str, kitchen_ok: bool) -> None:
        self.behaviour.cancel_fail_with = None if kitchen_ok else 409
        before = self.status[order_id]

        response = self.call("POST", f"/orders/{order_id}/cancel")

        if before == DELETED:
            assert response.status_code == 404
        elif order_id in self.pending:
            assert response.status_code == 409
        elif before in ("created", "paid") or (before == "progress" and kitchen_ok):
            assert response.status_code == 200, response.text
            self.status[order_id] = "cancelled"
        elif before == "progress":
            assert response.status_code == 502
        else:
            assert response.status_code == 409

    @rule(order_id=consumes(orders))
    def delete(self, order_id: str) -> None:
        before = self.status[order_id]

        response = self.call("DELETE", f"/orders/{order_id}")

        if before in ("created", "cancelled") and order_id not in self.pending:
            assert response.status_code == 204
            self.status[order_id] = DELETED
        else:
            assert response.status_code == 409

    @invariant()
    def statuses_match_the_model(self) -> None:
        listed = self.call("GET", "/orders").json()["orders"]
        actual = {order["id"]: order["status"] for order in listed}
        for order_id, status in self.status.items():
            assert actual.get(order_id, DELETED) == status

    @invariant()
    def never_charged_twice(self) -> None:
        paid = [
            order
            for order, status in self.ledger.charges
            if status == "paid" and order in self.status
        ]
        assert len(paid) == len(set(paid))


async def test_random_lifecycles_keep_the_state_machine(
    client: httpx.AsyncClient, behaviour: Behaviour, ledger: Ledger
) -> None:
    OrderLifecycle.loop = asyncio.get_running_loop()
    OrderLifecycle.client = client
    OrderLifecycle.behaviour = behaviour
    OrderLifecycle.ledger = ledger

    await asyncio.to_thread(
        run_state_machine_as_test,
        OrderLifecycle,
        settings=hypothesis_settings(
            max_examples=20,
            stateful_step_count=15,
            deadline=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
