"""The `Idempotency-Key` request header (IETF httpapi draft) on the routes that change things.

`POST /orders` hands the key to the use case, which stores it with the order. Pay and cancel
are wrapped by `idempotent`: the key is held while the action runs, then its answer stored,
whether a success or a final refusal. Answers a retry could change (409 while something else
runs, 5xx) are not kept: the key is let go, so that retrying with it runs the action again.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final
from uuid import UUID

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from orders.service.idempotency import IdempotentRequests
from orders.service.ports import RequestKey, StoredAnswer
from orders.web.auth import caller
from orders.web.context import context
from orders.web.errors import EXCEPTION_HANDLERS

Endpoint = Callable[[Request], Awaitable[Response]]

HEADER: Final = "idempotency-key"
MAX_KEY_LENGTH: Final = 255
logger = logging.getLogger(__name__)


def _key(value: str) -> str:
    """The key from the header: an sf-string (`"..."`, as the draft writes it) or the bare
    text; 1-255 printable ASCII characters either way, else 400."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if not 1 <= len(value) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in value):
        raise HTTPException(400, "Idempotency-Key must be 1 to 255 printable ASCII characters")
    return value


def fingerprint(method: str, path: str, body: bytes) -> bytes:
    """What identifies a request for its key: SHA-256 of its method, path and body."""
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), body):
        # Length-prefixed, so that no two different requests run together into one text.
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


async def request_key(request: Request) -> RequestKey | None:
    """The caller's key for this request with its fingerprint; None when none was sent."""
    given = request.headers.get(HEADER)
    if given is None:
        return None
    key = _key(given)
    body = await request.body()
    return RequestKey(caller(request), key, fingerprint(request.method, request.url.path, body))


def _kept(status_code: int) -> bool:
    return status_code < 500 and status_code != 409


def _error_response(request: Request, error: Exception) -> Response | None:
    for kind in type(error).__mro__:
        handler = EXCEPTION_HANDLERS.get(kind)
        if handler is not None:
            return handler(request, error)
    return None


def idempotent(endpoint: Endpoint) -> Endpoint:
    """`endpoint`, honouring an Idempotency-Key when one is sent."""

    async def keyed(request: Request) -> Response:
        key = await request_key(request)
        if key is None:
            return await endpoint(request)
        requests = context(request).idempotent_requests
        token = await requests.begin(key)
        try:
            response = await endpoint(request)
        except Exception as error:
            response_or_none = _error_response(request, error)
            if response_or_none is None:
                await _finish(requests, key, token, None)
                raise
            response = response_or_none
        answer = None
        if _kept(response.status_code):
            answer = StoredAnswer(
                response.status_code,
                bytes(response.body),
                response.headers.get("location"),
                response.headers.get("etag"),
            )
        await _finish(requests, key, token, answer)
        return response

    return keyed


async def _finish(
    requests: IdempotentRequests, key: RequestKey, token: UUID, answer: StoredAnswer | None
) -> None:
    try:
        await requests.finish(key, token, answer)
    except Exception:
        # The client still gets its answer; the key's lease runs out and a retry with it
        # runs the action again, which the order keeps from taking effect twice.
        logger.warning("could not store the answer to an idempotency key", exc_info=True)
