"""Every operation of the API, described once: its method and path, the endpoint that serves
it, operation id, tag, what it answers on success (status, body schema, headers), the error
statuses it can answer, and the request headers it honours. Both the routes and the OpenAPI
document are generated from this table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pydantic import BaseModel

from orders.web import endpoints
from orders.web.idempotency import Endpoint, idempotent
from orders.web.schemas import Health, Order, OrderList

ORDERS: Final = "orders"
HEALTH: Final = "health"


@dataclass(frozen=True, slots=True)
class Answer:
    """A success answer: status, what it means, the schema of its body (None: no body), and
    the response headers that come with it."""

    status: int
    description: str
    body: type[BaseModel] | None = None
    headers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Operation:
    """One method on one path. `body`: it takes the order body; `query`: the list query;
    `public`: no token needed."""

    method: str
    path: str
    endpoint: Endpoint
    operation_id: str
    tag: str
    summary: str
    answers: tuple[Answer, ...]
    errors: tuple[int, ...]
    headers: tuple[str, ...] = ()
    body: bool = False
    query: bool = False
    public: bool = False


_ORDER: Final = Answer(200, "The order.", Order, ("ETag",))
# Answers to a keyed request may be the stored answer to an earlier one.
_KEYED_ORDER: Final = Answer(200, "The order.", Order, ("ETag", "Idempotent-Replayed"))
# What reading an order can answer besides success; a malformed id in the path is a 422.
_READS: Final = (401, 404, 422, 503)
_COLLABORATORS: Final = (502, 503, 504)

OPERATIONS: Final = (
    Operation(
        "GET",
        "/orders",
        endpoints.list_orders,
        "listOrders",
        ORDERS,
        "The caller's orders, newest first",
        (Answer(200, "One page.", OrderList, ("Link",)),),
        (401, 422, 503),
        query=True,
    ),
    Operation(
        "POST",
        "/orders",
        endpoints.place_order,
        "placeOrder",
        ORDERS,
        "Place an order",
        (
            Answer(
                201,
                "The order was placed.",
                Order,
                ("Location", "ETag", "Idempotent-Replayed"),
            ),
        ),
        (400, 401, 409, 413, 415, 422, 503),
        headers=("Idempotency-Key",),
        body=True,
    ),
    Operation(
        "GET",
        "/orders/{order_id}",
        endpoints.get_order,
        "getOrder",
        ORDERS,
        "One order",
        (
            _ORDER,
            Answer(304, "Not modified: the order is still at that entity tag.", None, ("ETag",)),
        ),
        _READS,
        headers=("If-None-Match",),
    ),
    Operation(
        "PUT",
        "/orders/{order_id}",
        endpoints.update_order,
        "updateOrder",
        ORDERS,
        "Replace the items of an order that is not paid yet",
        (_ORDER,),
        (*_READS, 400, 409, 412, 413, 415),
        headers=("If-Match",),
        body=True,
    ),
    Operation(
        "DELETE",
        "/orders/{order_id}",
        endpoints.delete_order,
        "deleteOrder",
        ORDERS,
        "Delete an order that is not paid, or is cancelled",
        (Answer(204, "Deleted."),),
        (*_READS, 409, 412),
        headers=("If-Match",),
    ),
    Operation(
        "POST",
        "/orders/{order_id}/pay",
        idempotent(endpoints.pay_order),
        "payOrder",
        ORDERS,
        "Charge the order and schedule it in the kitchen",
        (_KEYED_ORDER,),
        (*_READS, 400, 402, 409, 412, *_COLLABORATORS),
        headers=("Idempotency-Key", "If-Match"),
    ),
    Operation(
        "POST",
        "/orders/{order_id}/cancel",
        idempotent(endpoints.cancel_order),
        "cancelOrder",
        ORDERS,
        "Cancel the order (taking it off the kitchen's schedule)",
        (_KEYED_ORDER,),
        (*_READS, 400, 409, 412, *_COLLABORATORS),
        headers=("Idempotency-Key", "If-Match"),
    ),
    Operation(
        "GET",
        "/health/live",
        endpoints.live,
        "live",
        HEALTH,
        "The process is up",
        (Answer(200, "Up.", Health),),
        (),
        public=True,
    ),
    Operation(
        "GET",
        "/health/ready",
        endpoints.ready,
        "ready",
        HEALTH,
        "The database answers and has this build's schema",
        (Answer(200, "Ready.", Health),),
        (503,),
        public=True,
    ),
)
