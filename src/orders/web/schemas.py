"""The v1 API contract as pydantic models: requests are validated with them, responses are
rendered to their shape, and the OpenAPI document is generated from them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Final
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic_core import to_json

from orders import domain
from orders.domain import OrderStatus, OrderView, Size
from orders.domain.model import MAX_QUANTITY
from orders.service.documents import order_document

# The longest product name: it bounds an item, hence an order and a page (docs/api.md).
MAX_PRODUCT_LENGTH: Final = 100
# Cursors are 54 characters; anything much longer is not one.
MAX_CURSOR_LENGTH: Final = 128


class NewOrderItem(BaseModel):
    """One line of an order as a client sends it (`quantity` may be left out)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    # PostgreSQL text cannot hold NUL: refuse it here (422) rather than fail in the database.
    product: str = Field(
        min_length=1,
        max_length=MAX_PRODUCT_LENGTH,
        pattern=r"^[^\x00]*$",
        description="What to make, e.g. `cappuccino`.",
    )
    size: Size
    quantity: int = Field(default=1, ge=1, le=MAX_QUANTITY)

    def to_domain(self) -> domain.OrderItem:
        return domain.OrderItem(self.product, self.size, self.quantity)


class NewOrder(BaseModel):
    """Body of `POST /orders` and `PUT /orders/{order_id}`: the items of the order."""

    model_config = ConfigDict(extra="forbid", strict=True)

    order: list[NewOrderItem] = Field(min_length=1)


def new_order_schema(max_items: int) -> type[NewOrder]:
    """The request body model with this deployment's item limit, so the docs show it too."""
    return create_model(
        "NewOrder",
        __base__=NewOrder,
        order=(Annotated[list[NewOrderItem], Field(min_length=1, max_length=max_items)], ...),
    )


class ListQuery(BaseModel):
    """Query parameters of `GET /orders`; unknown parameters are ignored."""

    model_config = ConfigDict(extra="ignore")

    cancelled: bool | None = Field(
        default=None, description="Only cancelled orders (true) or only the others (false)."
    )
    limit: int | None = Field(default=None, ge=1, description="At most this many (a page).")
    after: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_CURSOR_LENGTH,
        description='The cursor of the page to read, from a `Link: rel="next"` header.',
    )


def list_query_schema(max_page_size: int) -> type[ListQuery]:
    """The query model with this deployment's largest page, so the docs show it too."""
    page = Annotated[int, Field(ge=1, le=max_page_size, description="At most this many.")]
    return create_model("ListQuery", __base__=ListQuery, limit=(page | None, None))


class OrderItem(BaseModel):
    """One line of an order as the service shows it (every field present)."""

    model_config = ConfigDict(extra="forbid")

    product: str = Field(min_length=1, max_length=MAX_PRODUCT_LENGTH)
    size: Size
    quantity: int = Field(ge=1, le=MAX_QUANTITY)


class Order(BaseModel):
    """An order."""

    model_config = ConfigDict(extra="forbid")

    id: UUID
    created: datetime = Field(description="When it was placed (RFC 3339, UTC).")
    status: OrderStatus
    order: list[OrderItem]


class OrderList(BaseModel):
    """One page of the caller's orders, newest first."""

    model_config = ConfigDict(extra="forbid")

    orders: list[Order]


class HealthStatus(StrEnum):
    OK = "ok"


class Health(BaseModel):
    """A health probe's answer."""

    model_config = ConfigDict(extra="forbid")

    status: HealthStatus


class ValidationProblem(BaseModel):
    """One thing wrong with a request: where (`["body", "order", 0, "size"]`), what, and its
    machine-readable type."""

    model_config = ConfigDict(extra="forbid")

    loc: list[str | int]
    msg: str
    type: str


class Error(BaseModel):
    """Every error but 422: what went wrong, in words."""

    model_config = ConfigDict(extra="forbid")

    detail: str


class InvalidRequest(BaseModel):
    """422: the body, path, query or a header failed validation; one entry per problem."""

    model_config = ConfigDict(extra="forbid")

    detail: list[ValidationProblem]


def render_order(order: OrderView) -> bytes:
    """JSON of one order, shaped exactly as Order."""
    return to_json(order_document(order))


def render_orders(orders: list[OrderView]) -> bytes:
    """JSON of a list of orders, shaped exactly as OrderList."""
    return to_json({"orders": [order_document(order) for order in orders]})
