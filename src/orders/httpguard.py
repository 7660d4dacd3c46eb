"""The HTTP protocol the server runs with: uvicorn's httptools protocol, plus the limits it lacks.

uvicorn bounds the idle time between two requests on a connection (`--timeout-keep-alive`)
and the connections and requests in progress (`--limit-concurrency`). With httptools it
bounds neither the size of a request head nor the time a client may take to send one, so a
client could hold memory with a header that never ends, or hold its connection for ever by
sending a head one byte at a time (or nothing at all after connecting). This protocol adds:

- a deadline for each request head, from the connection's start or from the first byte of
  the head: a head still incomplete then closes the connection (408 if anything was sent);
- a bound on the head's size and on its number of header lines, answered 431.

uvicorn's h11 protocol bounds the head's size itself, but costs more CPU per request and
still lacks the deadline: the README's "HTTP limits" section has the measurements.
`uvicorn --http orders.httpguard:GuardedHttpToolsProtocol` selects this protocol;
`orders.entrypoint` does that, with the limits from `ServerLimits` (read once per process
from the environment).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import Any, Final

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from orders.settings import ServerLimits

logger = logging.getLogger("orders.http")


@functools.cache
def limits() -> ServerLimits:
    """The limits of this process, read from the environment the first time they are needed."""
    return ServerLimits.load()


def _response(status: int, reason: str, detail: str) -> bytes:
    body = json.dumps({"detail": detail}, separators=(",", ":")).encode()
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


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and size/line bounds on every request head.

    httptools reports a head through callbacks (message begin, each header, headers
    complete), but it buffers a header line until its end: the bytes of every chunk that
    arrives while a head is open count against the size bound, so that a header that never
    ends cannot grow without limit.
    """

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
        self._max_headers = bounds.http_max_headers
        self._head_deadline: asyncio.TimerHandle | None = None
        self._head_open = False
        # Bytes of the chunks read while the head is open (a bound on what httptools buffers),
        # and of the head's parts parsed so far (exact, for heads that come in one chunk).
        self._head_bytes = 0
        self._head_parsed = 0
        self._head_lines = 0
        self._started = False
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self._head_open and not self._refused:
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head_bytes:
                self._refuse(_TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._started = self._head_open = True
        self._head_bytes = self._head_parsed = self._head_lines = 0
        if self._head_deadline is None:
            self._arm()

    def on_url(self, url: bytes) -> None:
        self._head_parsed += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refused:
            return
        self._head_lines += 1
        self._head_parsed += len(name) + len(value) + 4  # ": " and CRLF
        if self._head_lines > self._max_headers or self._head_parsed > self._max_head_bytes:
            self._refuse(_TOO_LARGE)
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._disarm()
        if not self._refused:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def _arm(self) -> None:
        self._disarm()
        self._head_deadline = self.loop.call_later(self._head_timeout, self._expire)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _expire(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing():
            return
        if self._head_open:
            self._refuse(_TIMEOUT)
        elif not self._started:
            # Connected and silent: close it, as uvicorn closes an idle keep-alive connection.
            self.transport.close()

    def _refuse(self, response: bytes) -> None:
        self._refused = True
        self._disarm()
        client = "%s:%d" % self.client if self.client else "a client"  # noqa: UP031
        if response is _TIMEOUT:
            logger.info(
                "closing the connection of %s: request head not complete within %.0f s",
                client,
                self._head_timeout,
            )
        else:
            logger.info(
                "closing the connection of %s: request head over %d bytes or %d headers",
                client,
                self._max_head_bytes,
                self._max_headers,
            )
        self.transport.write(response)
        self.transport.close()
