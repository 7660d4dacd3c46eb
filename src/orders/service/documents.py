"""The documents the service shows the world: an order as the API and the events show it.

Plain dicts of JSON types (datetimes stay datetimes for the JSON writer); the web layer's
pydantic schemas describe the same shapes for validation and the OpenAPI document.
"""

from __future__ import annotations

from typing import Any

from orders.domain import OrderEvent, OrderView


def order_document(order: OrderView) -> dict[str, Any]:
    """An order as `{"id", "created", "status", "order": [item, ...]}`."""
    return {
        # The same text pydantic would write, at a fraction of its cost for the driver's UUIDs.
        "id": str(order.id),
        "created": order.created,
        "status": order.status.value,
        "order": [
            {"product": item.product, "size": item.size.value, "quantity": item.quantity}
            for item in order.items
        ],
    }


def event_document(event: OrderEvent) -> dict[str, Any]:
    """The body of an event message (asyncapi.yaml)."""
    return {
        "id": str(event.id),
        "type": event.type.value,
        "occurred": event.occurred,
        "order_id": str(event.order_id),
        "sequence": event.sequence,
        "order": order_document(event.order) if event.order is not None else None,
    }
