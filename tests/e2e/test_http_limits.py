"""The HTTP limits of the server as shipped: a real process started by the entrypoint (so with
the uvicorn options the image runs), spoken to over raw sockets.

No database is needed: /health/live and a refused token never reach it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import AUDIENCE, ISSUER, ROOT
from tests.e2e.test_shutdown import free_port, stop, wait_until_up

HEADER_TIMEOUT = 1.0
KEEP_ALIVE = 1
CONCURRENCY = 8
# Long enough for any limit above to act, with a wide margin for a busy machine.
PATIENCE = 10.0

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, key_pair: tuple[bytes, bytes]
) -> Iterator[tuple[str, int]]:
    """`python -m orders.entrypoint` with no migration, as a container would run it."""
    port = free_port()
    scratch = tmp_path_factory.mktemp("limits")
    log = scratch / "server.log"
    env = {
        **os.environ,
        # The entrypoint execs `uvicorn` from PATH, as in the image.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MIGRATE_ON_START": "false",
        # Never reached by these tests; the engine connects lazily.
        "DATABASE_URL": f"postgresql://nobody@127.0.0.1:{free_port()}/none",
        "JWT_PUBLIC_KEY": key_pair[1].decode(),
        "JWT_AUDIENCE": AUDIENCE,
        "JWT_ISSUER": ISSUER,
        "PAYMENTS_URL": "http://127.0.0.1:9",
        "KITCHEN_URL": "http://127.0.0.1:9",
        "SECRETS_DIR": str(scratch / "no-secrets"),
        "HTTP_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "HTTP_KEEP_ALIVE_SECONDS": str(KEEP_ALIVE),
        "HTTP_LIMIT_CONCURRENCY": str(CONCURRENCY),
    }
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "orders.entrypoint", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health/live", process, log)
        yield "127.0.0.1", port
    finally:
        stop(process)


def connect(server: tuple[str, int]) -> socket.socket:
    return socket.create_connection(server, timeout=PATIENCE)


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return received, time.monotonic() - started


def read_response(sock: socket.socket) -> bytes:
    """One whole response (head and Content-Length body) from a connection kept open."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def request(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: orders.test", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_normal_request_with_a_long_token_passes(server: tuple[str, int]) -> None:
    # 8 KiB is the longest token the verifier reads: the header limit must leave room for it.
    token = "a" * 8000 + ".b.c"
    with connect(server) as sock:
        sock.sendall(request("/orders", f"Authorization: Bearer {token}", "Connection: close"))
        response, _ = read_until_closed(sock)
    assert status_of(response) == 401


def test_an_oversized_header_is_431_and_the_connection_closed(server: tuple[str, int]) -> None:
    with connect(server) as sock:
        head = request("/health/live", "X-Big: " + "a" * (1024 * 1024))
        # Closed before all of it was sent, which is the point.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head)
        response, _ = read_until_closed(sock)
    assert status_of(response) == 431
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body) == {"detail": "Request header fields too large"}


def test_an_unfinished_huge_header_is_cut_off_without_waiting_for_its_end(
    server: tuple[str, int],
) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nX-Big: " + b"a" * (64 * 1024))
        response, _ = read_until_closed(sock)
    assert status_of(response) == 431


def test_a_head_just_over_the_size_limit_is_431(server: tuple[str, int]) -> None:
    # Small enough to arrive in one read: the guard must count what was parsed, too.
    with connect(server) as sock:
        sock.sendall(request("/health/live", "X-Big: " + "a" * (17 * 1024)))
        response, _ = read_until_closed(sock)
    assert status_of(response) == 431


def test_requests_follow_each_other_on_one_connection(server: tuple[str, int]) -> None:
    with connect(server) as sock:
        sock.sendall(request("/health/live"))
        first = read_response(sock)
        # A body the route does not read, then the next request on the same connection.
        sock.sendall(
            b"POST /health/live HTTP/1.1\r\nHost: orders.test\r\nContent-Length: 5\r\n\r\nhello"
        )
        second = read_response(sock)
        sock.sendall(request("/health/live", "Connection: close"))
        third, _ = read_until_closed(sock)
    assert status_of(first) == 200
    assert status_of(second) == 405
    assert status_of(third) == 200


def test_too_many_headers_are_431(server: tuple[str, int]) -> None:
    headers = [f"X-H{n}: {n}" for n in range(150)]
    with connect(server) as sock:
        sock.sendall(request("/health/live", *headers))
        response, _ = read_until_closed(sock)
    assert status_of(response) == 431


def test_a_slowly_sent_head_is_cut_off(server: tuple[str, int]) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: orders.test\r\n")
        started = time.monotonic()
        closed = False
        # One header line at a time, well within any per-read timeout, never the end.
        while time.monotonic() - started < PATIENCE:
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sock.settimeout(0.2)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                closed = True
                break
            assert status_of(data) == 408
            closed = True
            break
    assert closed, f"a head still incomplete after {PATIENCE} s kept its connection"


def test_a_silent_connection_is_closed(server: tuple[str, int]) -> None:
    with connect(server) as sock:
        response, waited = read_until_closed(sock)
    assert response == b""
    assert waited < PATIENCE


def test_an_idle_keep_alive_connection_is_closed(server: tuple[str, int]) -> None:
    with connect(server) as sock:
        sock.sendall(request("/health/live"))
        response, waited = read_until_closed(sock)
    assert status_of(response) == 200
    assert waited < PATIENCE


def test_requests_beyond_the_concurrency_limit_are_503(server: tuple[str, int]) -> None:
    held = [connect(server) for _ in range(CONCURRENCY)]
    try:
        with connect(server) as sock:
            sock.sendall(request("/health/live", "Connection: close"))
            response, _ = read_until_closed(sock)
    finally:
        for sock in held:
            sock.close()
    assert status_of(response) == 503
