"""The v1 API contract as pydantic models: requests are validated with them, responses are
rendered to their shape, and the OpenAPI document is generated from them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic_core import to_json

from orders.domain import OrderItem, OrderStatus, OrderView, Size
from orders.domain.model import MAX_QUANTITY
from orders.service.documents import order_document

# The longest product name: it bounds an item, hence an order and a page (docs/api.md).
MAX_PRODUCT_LENGTH: Final = 100
# Cursors are 54 characters; anything much longer is not one.
MAX_CURSOR_LENGTH: Final = 128


class OrderItemSchema(BaseModel):
    """One line of an order."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        title="OrderItem",
        json_schema_serialization_defaults_required=True,
    )

    # PostgreSQL text cannot hold NUL: refuse it here (422) rather than fail in the database.
    product: str = Field(
        min_length=1,
        max_length=MAX_PRODUCT_LENGTH,
        pattern=r"^[^\x00]*$",
        description="What to make, e.g. `cappuccino`.",
    )
    size: Size
    quantity: int = Field(default=1, ge=1, le=MAX_QUANTITY)

    def to_domain(self) -> OrderItem:
        return OrderItem(self.product, self.size, self.quantity)


class CreateOrder(BaseModel):
    """Body of `POST /orders` and `PUT /orders/{order_id}`."""

    model_config = ConfigDict(extra="forbid", strict=True, title="CreateOrder")

    order: list[OrderItemSchema] = Field(min_length=1)


def create_order_schema(max_items: int) -> type[CreateOrder]:
    """The request body model with this deployment's item limit, so the docs show it too."""
    return create_model(
        "CreateOrder",
        __base__=CreateOrder,
        order=(Annotated[list[OrderItemSchema], Field(min_length=1, max_length=max_items)], ...),
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


class OrderSchema(BaseModel):
    model_config = ConfigDict(extra="forbid", title="Order")

    id: UUID
    created: datetime
    status: OrderStatus
    order: list[OrderItemSchema]


class OrderListSchema(BaseModel):
    model_config = ConfigDict(extra="forbid", title="OrderList")

    orders: list[OrderSchema]


class ValidationProblem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    loc: list[str | int]
    msg: str
    type: str


class ErrorSchema(BaseModel):
    """Every error body: a message, or the list of problems of a 422."""

    model_config = ConfigDict(extra="forbid", title="Error")

    detail: str | list[ValidationProblem]


def render_order(order: OrderView) -> bytes:
    """JSON of one order, shaped exactly as OrderSchema."""
    return to_json(order_document(order))


def render_orders(orders: list[OrderView]) -> bytes:
    """JSON of a list of orders, shaped exactly as OrderListSchema."""
    return to_json({"orders": [order_document(order) for order in orders]})
