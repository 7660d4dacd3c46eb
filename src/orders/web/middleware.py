"""Pure ASGI middleware: request ids with one log line per request, and the body size limit."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from typing import Final

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orders.logs import request_id
from orders.web.errors import RETRY_AFTER_SECONDS, error_response

access_log = logging.getLogger("orders.access")
error_log = logging.getLogger("orders.errors")

_REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _request_id(scope: Scope) -> str:
    given = Headers(scope=scope).get("x-request-id")
    if given is not None and _REQUEST_ID.match(given):
        return given
    # 128 random bits as 32 hex digits, like a uuid4's hex without building a UUID.
    return os.urandom(16).hex()


class RequestContextMiddleware:
    """Gives each request an id (`X-Request-ID`, honoured when sane), logs one line when it
    ends, and is the last line of defence: an unhandled error is logged once, with the id,
    and answered with a bare 500 JSON body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _request_id(scope)
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            error_log.exception("unhandled error in %s %s", scope["method"], _template(scope))
            if not response_started:
                response = error_response(500, "Internal server error", {"X-Request-ID": rid})
                await response(scope, receive, send)
        except asyncio.CancelledError:
            # Only the server cancels a request: its graceful shutdown ran out of time. The
            # request's work is already unwound; answer 503, which the client may retry,
            # rather than let the server send a bare 500 and log a traceback for it. The
            # request ends here, so the cancellation is consumed (and undone, as asyncio asks).
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            error_log.warning(
                "%s %s cut off: the server is shutting down", scope["method"], _template(scope)
            )
            if not response_started:
                response = error_response(
                    503,
                    "The service is shutting down, try again",
                    {"Retry-After": RETRY_AFTER_SECONDS, "Connection": "close"},
                )
                await response(scope, receive, send_with_id)
        finally:
            if access_log.isEnabledFor(logging.INFO):
                path = _template(scope)
                elapsed_ms = (time.perf_counter() - started) * 1000
                access_log.info(
                    "%s %s %d %.1fms",
                    scope["method"],
                    path,
                    status,
                    elapsed_ms,
                    extra={
                        "method": scope["method"],
                        "path": path,
                        "status": status,
                        "duration_ms": round(elapsed_ms, 2),
                    },
                )
            request_id.reset(token)


def _template(scope: Scope) -> str:
    """The route's path template, so logs group by route and never carry ids or tokens."""
    route = scope.get("route")
    if isinstance(route, Route):
        return route.path
    # Not routed (yet): refused before routing, or no such path. The path is the client's
    # text: escape control characters so that it cannot start a log line of its own.
    return repr(str(scope["path"])[:200])[1:-1]


class BodyLimitMiddleware:
    """413 for bodies over `max_bytes`: at once when Content-Length says so, else as soon as
    the streamed body passes the limit, so an oversized body is never read whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            status = 413 if length.isdigit() else 400
            detail = (
                f"Request body larger than {self.max_bytes} bytes"
                if status == 413
                else "Invalid Content-Length"
            )
            await error_response(status, detail, {"Connection": "close"})(scope, receive, send)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Closing the connection spares the server reading the rest of the body.
                    raise HTTPException(
                        413,
                        f"Request body larger than {self.max_bytes} bytes",
                        {"Connection": "close"},
                    )
            return message

        await self.app(scope, limited_receive, send)
