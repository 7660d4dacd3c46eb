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

from orders.domain import OrderItem, OrderView
from orders.service.idempotency import Idempotent
from orders.service.orders import OrderService
from orders.service.ports import StoredAnswer
from orders.web.auth import caller
from orders.web.errors import RETRY_AFTER_SECONDS, RequestInvalid, error_response
from orders.web.idempotency import request_key
from orders.web.pages import CursorInvalid, Pages, next_link
from orders.web.schemas import CreateOrder, render_order, render_orders
from orders.web.versions import etag, matching_versions, none_match

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


def _pages(request: Request) -> Pages:
    return cast(Pages, request.state.pages)


def _one(order: OrderView, status_code: int = 200, location: str | None = None) -> Response:
    """A single-order answer, with its entity tag."""
    headers = {"ETag": etag(order)}
    if location is not None:
        headers["Location"] = location
    return _json(render_order(order), status_code, headers)


async def list_orders(request: Request) -> Response:
    pages = _pages(request)
    try:
        query = pages.query.model_validate(dict(request.query_params))
    except ValidationError as error:
        raise RequestInvalid.from_validation(error, "query") from None
    owner = caller(request)
    after = None
    if query.after is not None:
        try:
            after = pages.cursors.read(query.after, owner, query.cancelled)
        except CursorInvalid as error:
            raise RequestInvalid(
                [{"loc": ["query", "after"], "msg": str(error), "type": "cursor_invalid"}]
            ) from None
    page = await _service(request).list_orders(
        owner, cancelled=query.cancelled, limit=query.limit or pages.size, after=after
    )
    headers = None
    if page.more:
        cursor = pages.cursors.after(page.orders[-1], owner, query.cancelled)
        path = f"{request.scope.get('root_path', '')}/orders"
        headers = {"Link": next_link(path, cursor, limit=query.limit, cancelled=query.cancelled)}
    return _json(render_orders(page.orders), headers=headers)


def _location(request: Request, order: OrderView) -> str:
    # The path of GET /orders/{order_id}, written out: url_for() walks the route table.
    return f"{request.scope.get('root_path', '')}/orders/{order.id}"


async def place_order(request: Request) -> Response:
    items = await _items(request)
    key = await request_key(request)

    def answer(order: OrderView) -> StoredAnswer:
        return StoredAnswer(201, render_order(order), _location(request, order), etag(order))

    order = await _service(request).place_order(
        caller(request), items, key=None if key is None else Idempotent(key, answer)
    )
    return _one(order, 201, _location(request, order))


async def get_order(request: Request) -> Response:
    order = await _service(request).get_order(_order_id(request), caller(request))
    tag = etag(order)
    if not none_match(request.headers.get("if-none-match"), tag):
        return Response(status_code=304, headers={"ETag": tag})
    return _json(render_order(order), headers={"ETag": tag})


def _if_match(request: Request, order_id: UUID) -> frozenset[int] | None:
    return matching_versions(request.headers.get("if-match"), order_id)


async def update_order(request: Request) -> Response:
    order_id = _order_id(request)
    items = await _items(request)
    order = await _service(request).update_order(
        order_id, caller(request), items, if_match=_if_match(request, order_id)
    )
    return _one(order)


async def delete_order(request: Request) -> Response:
    order_id = _order_id(request)
    await _service(request).delete_order(
        order_id, caller(request), if_match=_if_match(request, order_id)
    )
    return Response(status_code=204)


async def pay_order(request: Request) -> Response:
    order_id = _order_id(request)
    order = await _service(request).pay(
        order_id, caller(request), if_match=_if_match(request, order_id)
    )
    return _one(order)


async def cancel_order(request: Request) -> Response:
    order_id = _order_id(request)
    order = await _service(request).cancel(
        order_id, caller(request), if_match=_if_match(request, order_id)
    )
    return _one(order)


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
        return error_response(503, "Database unavailable", {"Retry-After": RETRY_AFTER_SECONDS})
    if lag is not None:
        logger.warning("not ready: %s", lag)
        return error_response(
            503, "Database schema not up to date", {"Retry-After": RETRY_AFTER_SECONDS}
        )
    return JSONResponse({"status": "ok"})
