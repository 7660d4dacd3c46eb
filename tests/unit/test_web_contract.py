"""The web layer keeps to its schemas: the fast JSON of orders is byte for byte what the
schemas render, every error handler answers a documented status with that status's body
schema, and the routes are the table of operations."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request
from starlette.routing import Route

from orders.domain import (
    ActionInProgress,
    InvalidTransition,
    OrderItem,
    OrderNotFound,
    OrderStatus,
    OrderView,
    OutcomePending,
    Size,
    VersionMismatch,
)
from orders.domain.model import MAX_QUANTITY, Action, Pending
from orders.service.idempotency import KeyInFlight, KeyReused
from orders.service.ports import (
    CollaboratorBadAnswer,
    CollaboratorTimeout,
    CollaboratorUnavailable,
    PaymentRefused,
    StorageUnavailable,
)
from orders.web.errors import ERROR_STATUSES, EXCEPTION_HANDLERS, RequestInvalid
from orders.web.operations import OPERATIONS
from orders.web.routes import api_routes
from orders.web.schemas import MAX_PRODUCT_LENGTH, Order, OrderList, render_order, render_orders
from orders.web.tokens import KeysUnavailable

items = st.builds(
    OrderItem,
    # What a JSON body can carry: no NUL (refused) and no lone surrogates (not UTF-8).
    st.text(
        st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
        min_size=1,
        max_size=MAX_PRODUCT_LENGTH,
    ),
    st.sampled_from(Size),
    st.integers(1, MAX_QUANTITY),
)
orders = st.builds(
    OrderView,
    st.uuids(),
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    st.sampled_from(OrderStatus),
    st.lists(items, min_size=1, max_size=5).map(tuple),
    st.integers(1, 2**31 - 1),
)


@settings(max_examples=200, deadline=None)
@given(order=orders)
def test_an_order_is_rendered_exactly_as_its_schema_renders_it(order: OrderView) -> None:
    rendered = render_order(order)

    assert Order.model_validate_json(rendered).model_dump_json().encode() == rendered


@settings(max_examples=50, deadline=None)
@given(page=st.lists(orders, max_size=4))
def test_a_page_is_rendered_exactly_as_its_schema_renders_it(page: list[OrderView]) -> None:
    rendered = render_orders(page)

    assert OrderList.model_validate_json(rendered).model_dump_json().encode() == rendered


ORDER_ID = uuid.uuid4()
ERRORS = [
    RequestInvalid([{"loc": ["path", "order_id"], "msg": "bad", "type": "uuid_parsing"}]),
    OrderNotFound(ORDER_ID),
    InvalidTransition(ORDER_ID, OrderStatus.PAID, Action.UPDATE),
    ActionInProgress(ORDER_ID, Action.PAY),
    OutcomePending(ORDER_ID, Action.CANCEL, Pending.CHARGE),
    PaymentRefused(ORDER_ID),
    CollaboratorBadAnswer("payments", "answered 500"),
    CollaboratorUnavailable("kitchen", "refused the connection"),
    CollaboratorTimeout("kitchen", "did not answer in time"),
    StorageUnavailable("the database is down"),
    KeysUnavailable(),
    VersionMismatch(ORDER_ID, 3),
    KeyReused("k"),
    KeyInFlight("k"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda error: type(error).__name__)
def test_every_error_answers_a_documented_status_in_its_schema(error: Exception) -> None:
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    handler = next(
        EXCEPTION_HANDLERS[kind] for kind in type(error).__mro__ if kind in EXCEPTION_HANDLERS
    )

    response = handler(request, error)

    documented = ERROR_STATUSES[response.status_code]
    documented.body.model_validate_json(bytes(response.body))
    for header in documented.headers:
        if header != "Retry-After" or response.status_code == 503:
            assert header in response.headers, (type(error).__name__, header)


def test_every_handled_error_is_tried_above() -> None:
    tried = {kind for error in ERRORS for kind in type(error).__mro__}
    # HTTPException comes from Starlette and the middleware; a replay answers what was stored.
    untried = set(EXCEPTION_HANDLERS) - tried
    assert {kind.__name__ for kind in untried} == {"HTTPException", "AlreadyAnswered"}


def test_the_routes_are_the_table_of_operations() -> None:
    served = {
        (route.path, method)
        for route in api_routes()
        if isinstance(route, Route)
        for method in route.methods or ()
    }
    table = {(operation.path, operation.method) for operation in OPERATIONS}
    heads = {(path, "HEAD") for path, method in table if method == "GET"}

    assert served == table | heads
