"""The OpenAPI 3.0 document of the v1 API, generated from the pydantic models the endpoints
validate and render with, and the offline Swagger UI page that shows it."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any, Final

from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from orders.web.idempotency import MAX_KEY_LENGTH
from orders.web.schemas import (
    MAX_CURSOR_LENGTH,
    CreateOrder,
    ErrorSchema,
    ListQuery,
    OrderListSchema,
    OrderSchema,
)

OPENAPI_PATH: Final = "/openapi/orders.json"
DOCS_PATH: Final = "/docs/orders"
DOCS_ASSETS_PATH: Final = "/docs/orders/assets"

_ERRORS: Final = {
    400: "Malformed JSON body (or a key repeated within one JSON object), or a malformed"
    " `Idempotency-Key`.",
    401: "Missing or invalid bearer token.",
    402: "The payment was refused; nothing was charged.",
    404: "No such order for the caller (another user's order answers the same).",
    409: "Not allowed in the order's current status, another payment/cancellation runs, or"
    " the first request with this `Idempotency-Key` is still running (see `Retry-After`).",
    412: "The order has changed: `If-Match` names none of its current entity tags.",
    413: "Request body too large.",
    415: "The body is not application/json.",
    422: "The body, path or query failed validation, the `after` cursor is not one this list"
    " issued, or the `Idempotency-Key` was used before for a different request.",
    502: "Payments or kitchen answered with an error.",
    503: "The database, payments or kitchen is unavailable; retry after `Retry-After`.",
    504: "Payments or kitchen did not answer in time.",
}
_READS: Final = (401, 404, 422, 503)
_NEXT_STEPS: Final = {
    "GetOrder": "getOrder",
    "UpdateOrder": "updateOrder",
    "DeleteOrder": "deleteOrder",
    "PayOrder": "payOrder",
    "CancelOrder": "cancelOrder",
}
_COLLABORATORS: Final = (502, 503, 504)


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _responses(
    error: dict[str, Any], success: dict[int, dict[str, Any]], *errors: int
) -> dict[str, Any]:
    responses: dict[str, Any] = {str(code): body for code, body in success.items()}
    for code in sorted(set(errors)):
        responses[str(code)] = _json(error, _ERRORS[code])
        if code == 401:
            responses["401"]["headers"] = {
                "WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}
            }
        if code in (409, 503):
            responses[str(code)]["headers"] = {
                "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}
            }
    return responses


# Headers of pages, idempotency keys and versions (docs/api.md).
_ETAG: Final = {
    "ETag": {
        "schema": {"type": "string"},
        "description": "Strong entity tag of the order; it changes whenever the order does.",
    }
}
_REPLAYED: Final = {
    "Idempotent-Replayed": {
        "schema": {"type": "string", "enum": ["true"]},
        "description": "Present when this is the stored answer to an earlier request with the"
        " same `Idempotency-Key`.",
    }
}
_IDEMPOTENCY_KEY: Final = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Makes the request safe to retry: a repeat with the same key answers the"
    ' first answer again and does nothing else. Printable ASCII; an sf-string (`"..."`)'
    " or bare. Keys belong to the caller and expire after a configured time.",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
}
_IF_MATCH: Final = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": "Change the order only if it is still at one of these entity tags (412"
    " otherwise).",
    "schema": {"type": "string"},
}
_IF_NONE_MATCH: Final = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "description": "Answer 304 without a body if the order is still at one of these tags.",
    "schema": {"type": "string"},
}


def _with_headers(response: dict[str, Any], *headers: dict[str, Any]) -> dict[str, Any]:
    merged = dict(response.get("headers", {}))
    for header in headers:
        merged.update(header)
    return {**response, "headers": merged}


def build_openapi(
    create_order: type[CreateOrder], list_query: type[ListQuery], page_size: int
) -> dict[str, Any]:
    """The whole document; `create_order` carries this deployment's item limit, `list_query`
    its largest page, `page_size` its default page."""
    refs, defs = models_json_schema(
        [
            (create_order, "validation"),
            (OrderSchema, "serialization"),
            (OrderListSchema, "serialization"),
            (ErrorSchema, "serialization"),
        ],
        ref_template="#/components/schemas/{model}",
    )
    # pydantic names the components; refer to them by the names it chose, never by guesses.
    order_ref = refs[OrderSchema, "serialization"]
    error_ref = refs[ErrorSchema, "serialization"]
    order = _with_headers(_json(order_ref, "The order."), _ETAG)
    answer = _with_headers(order, _REPLAYED)
    limit_schema = list_query.model_json_schema()["properties"]["limit"]["anyOf"][0]
    order_id = {
        "name": "order_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
    }
    body = {
        "required": True,
        "content": {"application/json": {"schema": refs[create_order, "validation"]}},
    }
    created = {
        **_json(order_ref, "The order was placed."),
        "headers": {
            "Location": {"schema": {"type": "string"}, "description": "The new order."},
            **_ETAG,
            **_REPLAYED,
        },
        # What a client can do next with the new order (tools follow these, too).
        "links": {
            name: {"operationId": operation_id, "parameters": {"order_id": "$response.body#/id"}}
            for name, operation_id in _NEXT_STEPS.items()
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "CoffeeMesh orders API",
            "version": version("orders"),
            "description": "Place, change, pay for and cancel coffee orders.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": {
            "/orders": {
                "get": {
                    "operationId": "listOrders",
                    "summary": "The caller's orders, newest first",
                    "parameters": [
                        {
                            "name": "cancelled",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "boolean"},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "description": "Orders in the page.",
                            "schema": {**limit_schema, "default": page_size},
                        },
                        {
                            "name": "after",
                            "in": "query",
                            "required": False,
                            "description": "Cursor of the page to read, as found in the"
                            ' `Link: rel="next"` of the page before (opaque).',
                            "schema": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": MAX_CURSOR_LENGTH,
                            },
                        },
                    ],
                    "responses": _responses(
                        error_ref,
                        {
                            200: _with_headers(
                                _json(refs[OrderListSchema, "serialization"], "One page."),
                                {
                                    "Link": {
                                        "schema": {"type": "string"},
                                        "description": '`<...>; rel="next"` (RFC 8288)'
                                        " when more orders follow this page.",
                                    }
                                },
                            )
                        },
                        401,
                        422,
                        503,
                    ),
                },
                "post": {
                    "operationId": "placeOrder",
                    "summary": "Place an order",
                    "parameters": [_IDEMPOTENCY_KEY],
                    "requestBody": body,
                    "responses": _responses(
                        error_ref, {201: created}, 400, 401, 409, 413, 415, 422, 503
                    ),
                },
            },
            "/orders/{order_id}": {
                "parameters": [order_id],
                "get": {
                    "operationId": "getOrder",
                    "summary": "One order",
                    "parameters": [_IF_NONE_MATCH],
                    "responses": _responses(
                        error_ref,
                        {
                            200: order,
                            304: {"description": "Not modified.", "headers": _ETAG},
                        },
                        *_READS,
                    ),
                },
                "put": {
                    "operationId": "updateOrder",
                    "summary": "Replace the items of an order that is not paid yet",
                    "parameters": [_IF_MATCH],
                    "requestBody": body,
                    "responses": _responses(
                        error_ref, {200: order}, *_READS, 400, 409, 412, 413, 415
                    ),
                },
                "delete": {
                    "operationId": "deleteOrder",
                    "summary": "Delete an order that is not paid, or is cancelled",
                    "parameters": [_IF_MATCH],
                    "responses": _responses(
                        error_ref, {204: {"description": "Deleted."}}, *_READS, 409, 412
                    ),
                },
            },
            "/orders/{order_id}/pay": {
                "parameters": [order_id],
                "post": {
                    "operationId": "payOrder",
                    "summary": "Charge the order and schedule it in the kitchen",
                    "parameters": [_IDEMPOTENCY_KEY, _IF_MATCH],
                    "responses": _responses(
                        error_ref, {200: answer}, *_READS, 400, 402, 409, 412, *_COLLABORATORS
                    ),
                },
            },
            "/orders/{order_id}/cancel": {
                "parameters": [order_id],
                "post": {
                    "operationId": "cancelOrder",
                    "summary": "Cancel the order (taking it off the kitchen's schedule)",
                    "parameters": [_IDEMPOTENCY_KEY, _IF_MATCH],
                    "responses": _responses(
                        error_ref, {200: answer}, *_READS, 400, 409, 412, *_COLLABORATORS
                    ),
                },
            },
            "/health/live": {
                "get": {
                    "operationId": "live",
                    "summary": "The process is up",
                    "security": [],
                    "responses": {"200": _json(_HEALTH, "Up.")},
                },
            },
            "/health/ready": {
                "get": {
                    "operationId": "ready",
                    "summary": "The database answers",
                    "security": [],
                    "responses": _responses(error_ref, {200: _json(_HEALTH, "Ready.")}, 503),
                },
            },
        },
        "components": {
            "schemas": defs["$defs"],
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


_HEALTH: Final = {
    "type": "object",
    "properties": {"status": {"type": "string", "enum": ["ok"]}},
    "required": ["status"],
    "additionalProperties": False,
}

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
