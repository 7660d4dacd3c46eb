"""The HTTP protocol the server runs with: uvicorn's h11 protocol, plus the limits it lacks.

uvicorn bounds the size of a request head (h11's incomplete-event limit), the idle time
between two requests on a connection (`--timeout-keep-alive`) and the requests in progress
(`--limit-concurrency`). It does not bound the time a client may take to send a request
head, nor the number of header lines in it, so a client that sends a head one byte at a time
(or nothing at all after connecting) would hold its connection for ever. This protocol adds:

- a deadline for each request head, from the connection's start or from the first byte of
  the head: a head still incomplete then closes the connection (408 if anything was sent);
- a bound on the head's size and on its number of lines, answered 431 before h11 parses it.

`uvicorn --http orders.httpguard:GuardedH11Protocol` selects it; `orders.entrypoint` does
that, with the limits from `ServerLimits` (read once per process from the environment).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import Any, Final

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from orders.settings import ServerLimits

logger = logging.getLogger("orders.http")

_HEAD_END: Final = b"\r\n\r\n"


@functools.cache
def limits() -> ServerLimits:
    """The limits of this process, read from the environment the first time they are needed."""
    return ServerLimits.load()


def _response(status: int, reason: str, detail: str) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_TOO_LARGE: Final = _response(
    431, "Request Header Fields Too Large", "Request header fields too large"
)
_TIMEOUT: Final = _response(408, "Request Timeout", "Request head not received in time")


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline and size/line bounds on every request head."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        bounds = limits()
        self._head_timeout = bounds.http_header_timeout_seconds
        self._max_head_bytes = bounds.http_max_header_bytes
        self._max_head_lines = bounds.http_max_headers + 1  # the request line
        self._head_deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._head_lines = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A client that connects and sends nothing gets no longer than one that sends slowly.
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            # This chunk starts (or continues) a request head; count only up to its end.
            end = data.find(_HEAD_END)
            end = len(data) if end < 0 else end + len(_HEAD_END)
            self._head_bytes += end
            self._head_lines += data.count(b"\n", 0, end)
            if self._head_bytes > self._max_head_bytes or self._head_lines > self._max_head_lines:
                self._refuse(_TOO_LARGE, "request head over the limit of %d bytes / %d headers")
                return
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE:
            # Still no complete head: from its first byte, it has the head timeout to arrive.
            if self._head_deadline is None:
                self._arm()
        else:
            self._disarm()
            self._head_bytes = self._head_lines = 0

    def _arm(self) -> None:
        self._disarm()
        self._head_deadline = self.loop.call_later(self._head_timeout, self._expire)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _expire(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self._head_bytes:
            self._refuse(_TIMEOUT, "request head not complete within %.0f s")
        else:
            # Connected and silent: close it, as uvicorn closes an idle keep-alive connection.
            self.transport.close()

    def _refuse(self, response: bytes, why: str) -> None:
        args: tuple[float, ...] = (
            (self._head_timeout,)
            if response is _TIMEOUT
            else (self._max_head_bytes, self._max_head_lines - 1)
        )
        client = "%s:%d" % self.client if self.client else "a client"  # noqa: UP031
        logger.info("closing the connection of %s: " + why, client, *args)
        self._disarm()
        self.transport.write(response)
        self.transport.close()
