"""The event contract: asyncapi.yaml is a valid AsyncAPI 3.0.0 document (checked against the
specification's own JSON Schema, tests/contract/asyncapi-3.0.0.schema.json, from the
@asyncapi/specs package, Apache-2.0), its message schemas are valid JSON Schemas, and it
describes every event the domain records, as the service writes them."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import jsonschema
import pytest
from pydantic_core import to_json

from orders.domain import EventType, OrderEvent, OrderItem, OrderStatus, OrderView, Size
from orders.service.documents import event_document
from tests.broker import ROOT, asyncapi, check_event, message_schema

SPEC = json.loads((ROOT / "tests/contract/asyncapi-3.0.0.schema.json").read_text())


def test_the_document_is_valid_asyncapi_3() -> None:
    jsonschema.Draft7Validator(SPEC).validate(asyncapi())


def test_the_specification_schema_bites() -> None:
    broken = copy.deepcopy(asyncapi())
    del next(iter(broken["operations"].values()))["action"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(SPEC).validate(broken)


def test_every_message_schema_is_a_json_schema() -> None:
    for message in asyncapi()["components"]["messages"].values():
        assert message["payload"]["schemaFormat"] == "application/schema+json;version=draft-07"
        jsonschema.Draft7Validator.check_schema(message["payload"]["schema"])


def test_every_event_type_is_published_on_its_routing_key() -> None:
    document = asyncapi()
    published = {
        document["channels"][operation["channel"]["$ref"].rsplit("/", 1)[1]]["address"]
        for operation in document["operations"].values()
        if operation["action"] == "send"
    }
    assert published == {kind.value for kind in EventType}


def _event(kind: EventType, order: OrderView | None) -> dict[str, Any]:
    event = OrderEvent(uuid4(), kind, uuid4(), 3, datetime.now(UTC), order)
    # Through JSON, as the outbox stores and the relay publishes it.
    document: dict[str, Any] = json.loads(to_json(event_document(event)))
    return document


@pytest.mark.parametrize("kind", list(EventType))
def test_what_the_service_writes_matches_the_schemas(kind: EventType) -> None:
    view = OrderView(
        uuid4(), datetime.now(UTC), OrderStatus.PAID, (OrderItem("latte", Size.BIG, 2),), 3
    )
    check_event(_event(kind, None if kind is EventType.DELETED else view))


def test_the_schemas_refuse_what_is_not_an_event() -> None:
    view = OrderView(uuid4(), datetime.now(UTC), OrderStatus.PAID, (), 3)
    document = _event(EventType.PAID, view)
    with pytest.raises(jsonschema.ValidationError):
        check_event(document)  # an order without items
    document = _event(EventType.DELETED, None)
    document["sequence"] = 0
    with pytest.raises(jsonschema.ValidationError):
        check_event(document)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {**_event(EventType.DELETED, None), "type": "order.paid"},
            message_schema("order.deleted"),
        )
