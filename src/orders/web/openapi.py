"""The OpenAPI 3.0 document of the API, generated from the table of operations and the
pydantic models the endpoints validate and render with, and the offline Swagger UI page
that shows it."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any, Final

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from pydantic_core import to_json
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from orders.settings import Settings
from orders.web.errors import ERROR_STATUSES
from orders.web.idempotency import MAX_KEY_LENGTH
from orders.web.operations import HEALTH, OPERATIONS, ORDERS, Answer, Operation
from orders.web.schemas import (
    Error,
    Health,
    InvalidRequest,
    ListQuery,
    NewOrder,
    Order,
    OrderList,
    list_query_schema,
    new_order_schema,
)

OPENAPI_PATH: Final = "/openapi/orders.json"
DOCS_PATH: Final = "/docs/orders"
DOCS_ASSETS_PATH: Final = "/docs/orders/assets"

_REF: Final = "#/components/schemas/{model}"
_STRING: Final = {"type": "string"}

# Response headers, by name (they are components, referred to where they are sent).
_HEADERS: Final = {
    "ETag": {
        "description": "Strong entity tag of the order; it changes whenever the order does."
        " Send it back in `If-Match` or `If-None-Match`.",
        "schema": {**_STRING, "example": '"v1-3fa85f64"'},
    },
    "Location": {"description": "The path of the new order.", "schema": _STRING},
    "Link": {
        "description": '`<...>; rel="next"` (RFC 8288) when more orders follow this page;'
        " follow it as it is.",
        "schema": _STRING,
    },
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored answer to an earlier request with the"
        " same `Idempotency-Key`.",
        "schema": {**_STRING, "enum": ["true"]},
    },
    "Retry-After": {
        "description": "Seconds to wait before retrying (with the same `Idempotency-Key`).",
        "schema": {"type": "integer", "minimum": 0},
    },
    "WWW-Authenticate": {
        "description": "The bearer challenge (RFC 6750): `Bearer`, or"
        ' `Bearer error="invalid_token"` when a token was sent.',
        "schema": _STRING,
    },
}

# Request headers the operations honour (parameter components, by header name).
_PARAMETERS: Final = {
    "Idempotency-Key": {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "Makes the request safe to retry: a repeat with the same key answers"
        " the first answer again and does nothing else. 1 to 255 printable ASCII characters,"
        ' bare or as an sf-string (`"..."`). Keys belong to the caller and expire after a'
        " configured time.",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
        "example": "5f0c7bfa-9d3e-4a51-8e0b-2d6f1f3c9a10",
    },
    "If-Match": {
        "name": "If-Match",
        "in": "header",
        "required": False,
        "description": "Change the order only if it is still at one of these entity tags"
        " (412 otherwise); `*` needs only that it exists.",
        "schema": _STRING,
    },
    "If-None-Match": {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "description": "Answer 304 without a body while the order is still at one of these"
        " entity tags.",
        "schema": _STRING,
    },
}
_ORDER_ID: Final = {
    "name": "order_id",
    "in": "path",
    "required": True,
    "description": "The order's id.",
    "schema": {"type": "string", "format": "uuid"},
}
_TAGS: Final = {
    ORDERS: "The caller's coffee orders: place, read, change, pay for, cancel, delete.",
    HEALTH: "Probes for orchestrators; no token needed.",
}

_LATTE: Final = {"product": "latte", "size": "big", "quantity": 2}
_EXAMPLES: Final[dict[type[BaseModel], dict[str, Any]]] = {
    Order: {
        "id": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
        "created": "2026-01-05T09:30:00.123456Z",
        "status": "created",
        "order": [_LATTE],
    },
    Health: {"status": "ok"},
}
_EXAMPLES[OrderList] = {"orders": [_EXAMPLES[Order]]}
_NEW_ORDER_EXAMPLES: Final = {
    "latte": {"summary": "Two big lattes", "value": {"order": [_LATTE]}},
    "two": {
        "summary": "Two items, one with the default quantity (1)",
        "value": {"order": [{"product": "cappuccino", "size": "small"}, _LATTE]},
    },
}


def _content(schema: dict[str, Any], example: Any) -> dict[str, Any]:
    return {"application/json": {"schema": schema, "example": example}}


def _header_refs(names: tuple[str, ...]) -> dict[str, Any]:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


def _success(answer: Answer, refs: dict[type[BaseModel], dict[str, str]]) -> dict[str, Any]:
    response: dict[str, Any] = {"description": answer.description}
    if answer.body is not None:
        response["content"] = _content(refs[answer.body], _EXAMPLES[answer.body])
    if answer.headers:
        response["headers"] = _header_refs(answer.headers)
    return response


def _error(code: int, refs: dict[type[BaseModel], dict[str, str]]) -> dict[str, Any]:
    status = ERROR_STATUSES[code]
    response: dict[str, Any] = {
        "description": status.description,
        "content": _content(refs[status.body], {"detail": status.example}),
    }
    if status.headers:
        response["headers"] = _header_refs(status.headers)
    return response


def _query_parameters(list_query: type[ListQuery], page_size: int) -> list[dict[str, Any]]:
    """The list query's fields as OpenAPI 3.0 parameters (`null` is no 3.0 type: an absent
    parameter says the same)."""
    parameters = []
    for name, schema in list_query.model_json_schema()["properties"].items():
        [given] = [choice for choice in schema["anyOf"] if choice.get("type") != "null"]
        given = dict(given)
        description = given.pop("description", None) or schema["description"]
        if name == "limit":
            given["default"] = page_size
        parameters.append(
            {
                "name": name,
                "in": "query",
                "required": False,
                "description": description,
                "schema": given,
            }
        )
    return parameters


def _operation(
    operation: Operation,
    refs: dict[type[BaseModel], dict[str, str]],
    body: dict[str, Any],
    query: list[dict[str, Any]],
) -> dict[str, Any]:
    responses = {str(answer.status): _success(answer, refs) for answer in operation.answers}
    responses.update({str(code): _error(code, refs) for code in sorted(operation.errors)})
    document: dict[str, Any] = {
        "tags": [operation.tag],
        "operationId": operation.operation_id,
        "summary": operation.summary,
    }
    parameters = [{"$ref": f"#/components/parameters/{name}"} for name in operation.headers]
    if operation.query:
        parameters.extend(query)
    if parameters:
        document["parameters"] = parameters
    if operation.body:
        document["requestBody"] = body
    document["responses"] = responses
    if operation.public:
        document["security"] = []
    return document


def build_openapi(
    new_order: type[NewOrder], list_query: type[ListQuery], page_size: int
) -> dict[str, Any]:
    """The whole document; `new_order` carries this deployment's item limit, `list_query`
    its largest page, `page_size` its default page."""
    answers: list[type[BaseModel]] = [Order, OrderList, Health, Error, InvalidRequest]
    keys, defs = models_json_schema(
        [(new_order, "validation"), *((model, "serialization") for model in answers)],
        ref_template=_REF,
    )
    # pydantic names the components; refer to them by the names it chose, never by guesses.
    refs: dict[type[BaseModel], dict[str, str]] = {
        model: keys[model, "serialization"] for model in answers
    }
    body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": keys[new_order, "validation"],
                "examples": _NEW_ORDER_EXAMPLES,
            }
        },
    }
    query = _query_parameters(list_query, page_size)
    paths: dict[str, dict[str, Any]] = {}
    for operation in OPERATIONS:
        item = paths.setdefault(operation.path, {})
        if "{order_id}" in operation.path:
            item["parameters"] = [{"$ref": "#/components/parameters/order_id"}]
        item[operation.method.lower()] = _operation(operation, refs, body, query)
    # What a client can do next with a new order (tools follow these, too).
    paths["/orders"]["post"]["responses"]["201"]["links"] = {
        operation.operation_id[0].upper() + operation.operation_id[1:]: {
            "operationId": operation.operation_id,
            "parameters": {"order_id": "$response.body#/id"},
        }
        for operation in OPERATIONS
        if operation.path.startswith("/orders/{order_id}")
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "CoffeeMesh orders API",
            "version": version("orders"),
            "description": "Place, change, pay for and cancel coffee orders.",
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": name, "description": text} for name, text in _TAGS.items()],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "schemas": defs["$defs"],
            "parameters": {**_PARAMETERS, "order_id": _ORDER_ID},
            "headers": _HEADERS,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


def default_document() -> dict[str, Any]:
    """The document a deployment with the default limits serves (what clients are generated
    from when no running service is at hand)."""
    fields = Settings.model_fields
    return build_openapi(
        new_order_schema(fields["max_items_per_order"].default),
        list_query_schema(fields["page_size_max"].default),
        fields["page_size"].default,
    )


_DOCS_PAGE: Final = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>CoffeeMesh orders API</title>
  <link rel="stylesheet" href="{assets}/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{assets}/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{url: "{spec}", dom_id: "#swagger-ui"}});
  </script>
</body>
</html>
"""


def openapi_endpoint(document: bytes) -> Any:
    """An endpoint serving the pre-rendered document."""

    async def openapi(request: Request) -> Response:
        return Response(document, media_type="application/json")

    return openapi


async def docs(request: Request) -> Response:
    root = request.scope.get("root_path", "")
    return HTMLResponse(_DOCS_PAGE.format(assets=root + DOCS_ASSETS_PATH, spec=root + OPENAPI_PATH))


if __name__ == "__main__":
    # `python -m orders.web.openapi`: the default document on standard output.
    import sys

    sys.stdout.write(to_json(default_document(), indent=2).decode() + "\n")
