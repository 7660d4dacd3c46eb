"""The metrics endpoint: `GET /metrics` on a port of its own (METRICS_PORT), never on the API's.

A port of its own rather than a path on the API: an ingress or load balancer that publishes
the API cannot publish the metrics by accident, network policies can open it to Prometheus
alone, and no token is needed to scrape it.

Each worker process listens on the port with SO_REUSEPORT when the workers share their
metrics (multiprocess mode): the kernel hands each scrape to one of them, and any one of them
answers for all. It is plain HTTP/1.1, one request per connection, in the worker's own event
loop; reading the values runs in a thread so that a scrape never stalls requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from orders.observability.metrics import MULTIPROCESS_ENV, Metrics

logger = logging.getLogger(__name__)

PATH: Final = "/metrics"
_HEAD_LIMIT: Final = 16 * 1024
_READ_TIMEOUT_SECONDS: Final = 10.0

Exposition = Callable[[str | None], tuple[bytes, str]]


class MetricsServer:
    """Serves `exposition(accept)` at `GET /metrics` on `host:port` while running."""

    def __init__(self, exposition: Exposition, host: str, port: int, *, shared: bool) -> None:
        self._exposition = exposition
        self._host = host
        self._port = port
        self._shared = shared
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The port listened on (the one chosen by the system when configured as 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Listen; raises OSError when the port cannot be had."""
        self._server = await asyncio.start_server(
            self._handle,
            self._host,
            self._port,
            reuse_port=self._shared,
            limit=_HEAD_LIMIT,
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = b""
        try:
            async with asyncio.timeout(_READ_TIMEOUT_SECONDS):
                head = await reader.readuntil(b"\r\n\r\n")
            status, headers, body = await self._answer(head)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            status, headers, body = "400 Bad Request", {}, b"bad request\n"
        except ConnectionError:
            writer.close()
            return
        except Exception:
            logger.exception("the metrics endpoint failed")
            status, headers, body = "500 Internal Server Error", {}, b"internal error\n"
        headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        try:
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            if not head.startswith(b"HEAD "):
                writer.write(body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _answer(self, head: bytes) -> tuple[str, dict[str, str], bytes]:
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return "400 Bad Request", {}, b"bad request\n"
        method, target, _ = parts
        if target.split("?", 1)[0] != PATH:
            return "404 Not Found", {}, b"not found: the metrics are at /metrics\n"
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", {"Allow": "GET, HEAD"}, b"method not allowed\n"
        accept = None
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "accept":
                accept = value.strip()
        body, content_type = await asyncio.to_thread(self._exposition, accept)
        return "200 OK", {"Content-Type": content_type}, body


async def start_metrics_server(metrics: Metrics, host: str, port: int) -> MetricsServer:
    """Serve `metrics` on `host:port`, shared by the workers in multiprocess mode.

    Raises RuntimeError in one line when the port cannot be had.
    """
    shared = metrics.directory is not None
    server = MetricsServer(metrics.exposition, host, port, shared=shared)
    try:
        await server.start()
    except OSError as error:
        hint = (
            "" if shared else f" (several workers share one port only with {MULTIPROCESS_ENV} set)"
        )
        raise RuntimeError(
            f"cannot serve metrics on {host}:{port}: {error.strerror}{hint}"
        ) from None
    return server
