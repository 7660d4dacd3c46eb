"""The HTTP endpoints: parse and validate the request, call one use case, render the result."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast
from uuid import UUID

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from orders.domain import OrderItem
from orders.service.orders import OrderService
from orders.web.auth import caller
from orders.web.errors import RequestInvalid, error_response
from orders.web.schemas import CreateOrder, ListQuery, render_order, render_orders

_JSON: Final = "application/json"
logger = logging.getLogger(__name__)


def _service(request: Request) -> OrderService:
    return cast(OrderService, request.state.orders)


def _order_id(request: Request) -> UUID:
    try:
        return UUID(request.path_params["order_id"])
    except ValueError:
        raise RequestInvalid(
            [
                {
                    "loc": ["path", "order_id"],
                    "msg": "Input should be a valid UUID",
                    "type": "uuid_parsing",
                }
            ]
        ) from None


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == _JSON or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateKey
    return result


def _has_duplicate_keys(body: bytes) -> bool:
    """Whether a JSON object in `body` repeats a key.

    Parsers disagree on which one wins (the last, for pydantic), so a proxy that checks the
    first would approve a different order than the one stored. Malformed JSON is left to the
    schema's parser, which says what is wrong with it.
    """
    try:
        json.loads(body, object_pairs_hook=_unique_keys)
    except _DuplicateKey:
        return True
    except (ValueError, RecursionError):
        return False
    return False


async def _items(request: Request) -> list[OrderItem]:
    """The validated `{"order": [...]}` body: 415, 400 or 422 when it is not acceptable."""
    if not _is_json(request.headers.get("content-type")):
        raise HTTPException(415, "Content-Type must be application/json")
    body = await request.body()
    if _has_duplicate_keys(body):
        raise HTTPException(400, "Duplicate key in JSON body")
    schema = cast(type[CreateOrder], request.state.create_order_schema)
    try:
        payload = schema.model_validate_json(body)
    except ValidationError as error:
        if any(problem["type"] == "json_invalid" for problem in error.errors()):
            raise HTTPException(400, "Malformed JSON body") from None
        raise RequestInvalid.from_validation(error, "body") from None
    return [item.to_domain() for item in payload.order]


def _json(body: bytes, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status_code, headers=headers, media_type=_JSON)


async def list_orders(request: Request) -> Response:
    try:
        query = ListQuery.model_validate(dict(request.query_params))
    except ValidationError as error:
        raise RequestInvalid.from_validation(error, "query") from None
    orders = await _service(request).list_orders(
        caller(request), cancelled=query.cancelled, limit=query.limit
    )
    return _json(render_orders(orders))


async def place_order(request: Request) -> Response:
    items = await _items(request)
    order = await _service(request).place_order(caller(request), items)
    # The path of GET /orders/{order_id}, written out: url_for() walks the route table.
    location = f"{request.scope.get('root_path', '')}/orders/{order.id}"
    return _json(render_order(order), 201, {"Location": location})


async def get_order(request: Request) -> Response:
    order = await _service(request).get_order(_order_id(request), caller(request))
    return _json(render_order(order))


async def update_order(request: Request) -> Response:
    order_id = _order_id(request)
    items = await _items(request)
    order = await _service(request).update_order(order_id, caller(request), items)
    return _json(render_order(order))


async def delete_order(request: Request) -> Response:
    await _service(request).delete_order(_order_id(request), caller(request))
    return Response(status_code=204)


async def pay_order(request: Request) -> Response:
    order = await _service(request).pay(_order_id(request), caller(request))
    return _json(render_order(order))


async def cancel_order(request: Request) -> Response:
    order = await _service(request).cancel(_order_id(request), caller(request))
    return _json(render_order(order))


async def live(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    """200 when the database answers and has the schema this build needs; 503 otherwise."""
    probe = cast(Callable[[], Awaitable[str | None]], request.state.database_ready)
    try:
        lag = await probe()
    except Exception as error:
        # The reason goes to the log, not to whoever asks: this route needs no token.
        logger.warning(
            "not ready: the database did not answer (%s: %s)", type(error).__name__, error
        )
        return error_response(503, "Database unavailable", {"Retry-After": "5"})
    if lag is not None:
        logger.warning("not ready: %s", lag)
        return error_response(503, "Database schema not up to date", {"Retry-After": "5"})
    return JSONResponse({"status": "ok"})
