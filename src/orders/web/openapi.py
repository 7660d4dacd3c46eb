"""The OpenAPI 3.0 document of the v1 API, generated from the pydantic models the endpoints
validate and render with, and the offline Swagger UI page that shows it."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any, Final

from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from orders.web.schemas import (
    MAX_LIMIT,
    CreateOrder,
    ErrorSchema,
    OrderListSchema,
    OrderSchema,
)

OPENAPI_PATH: Final = "/openapi/orders.json"
DOCS_PATH: Final = "/docs/orders"
DOCS_ASSETS_PATH: Final = "/docs/orders/assets"

_ERRORS: Final = {
    400: "Malformed JSON body, or a key repeated within one JSON object.",
    401: "Missing or invalid bearer token.",
    402: "The payment was refused; nothing was charged.",
    404: "No such order for the caller (another user's order answers the same).",
    409: "Not allowed in the order's current status, or another payment/cancellation runs.",
    413: "Request body too large.",
    415: "The body is not application/json.",
    422: "The body, path or query failed validation.",
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
        if code == 503:
            responses["503"]["headers"] = {
                "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}
            }
    return responses


def build_openapi(create_order: type[CreateOrder]) -> dict[str, Any]:
    """The whole document; `create_order` carries this deployment's item limit."""
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
    order = _json(order_ref, "The order.")
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
        "headers": {"Location": {"schema": {"type": "string"}, "description": "The new order."}},
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
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                        },
                    ],
                    "responses": _responses(
                        error_ref,
                        {200: _json(refs[OrderListSchema, "serialization"], "The orders.")},
                        401,
                        422,
                        503,
                    ),
                },
                "post": {
                    "operationId": "placeOrder",
                    "summary": "Place an order",
                    "requestBody": body,
                    "responses": _responses(
                        error_ref, {201: created}, 400, 401, 413, 415, 422, 503
                    ),
                },
            },
            "/orders/{order_id}": {
                "parameters": [order_id],
                "get": {
                    "operationId": "getOrder",
                    "summary": "One order",
                    "responses": _responses(error_ref, {200: order}, *_READS),
                },
                "put": {
                    "operationId": "updateOrder",
                    "summary": "Replace the items of an order that is not paid yet",
                    "requestBody": body,
                    "responses": _responses(error_ref, {200: order}, *_READS, 400, 409, 413, 415),
                },
                "delete": {
                    "operationId": "deleteOrder",
                    "summary": "Delete an order that is not paid, or is cancelled",
                    "responses": _responses(
                        error_ref, {204: {"description": "Deleted."}}, *_READS, 409
                    ),
                },
            },
            "/orders/{order_id}/pay": {
                "parameters": [order_id],
                "post": {
                    "operationId": "payOrder",
                    "summary": "Charge the order and schedule it in the kitchen",
                    "responses": _responses(
                        error_ref, {200: order}, *_READS, 402, 409, *_COLLABORATORS
                    ),
                },
            },
            "/orders/{order_id}/cancel": {
                "parameters": [order_id],
                "post": {
                    "operationId": "cancelOrder",
                    "summary": "Cancel the order (taking it off the kitchen's schedule)",
                    "responses": _responses(error_ref, {200: order}, *_READS, 409, *_COLLABORATORS),
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
