"""Graceful shutdown of a real uvicorn process, with one worker and with WEB_CONCURRENCY=2:
SIGTERM while pays are in flight lets every accepted request finish, takes no new
connection, closes the pool and the HTTP client, and exits within the graceful timeout."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import TokenFactory
from tests.support import ROOT, asyncpg_dsn, free_port, start_server, stop, wait_until_up

IN_FLIGHT = 10
# Each stand-in call takes this long, so a pay (charge, then schedule) takes twice as long.
STANDIN_DELAY = 1.0
GRACEFUL_TIMEOUT = 10
LATTE = {"product": "latte", "size": "big", "quantity": 1}


@pytest.fixture(scope="module")
def standins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Payments and kitchen in a process of their own, answering slowly."""
    port = free_port()
    log = tmp_path_factory.mktemp("standins") / "standins.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "orders_dev.standins", "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, "STANDIN_DELAY_SECONDS": str(STANDIN_DELAY)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/health", process, log)
        yield url
    finally:
        stop(process)


async def orders_being_paid(database_url: str) -> int:
    connection = await asyncpg.connect(asyncpg_dsn(make_url(database_url)))
    try:
        count: int = await connection.fetchval("SELECT count(*) FROM orders WHERE action = 'pay'")
    finally:
        await connection.close()
    return count


async def pays_in_flight(
    client: httpx.AsyncClient, database_url: str
) -> list[asyncio.Task[httpx.Response]]:
    """IN_FLIGHT pays, each accepted and waiting on payments (its claim is in the database)."""
    placed = [
        (await client.post("/orders", json={"order": [LATTE]})).json()["id"]
        for _ in range(IN_FLIGHT)
    ]
    pays = [asyncio.create_task(client.post(f"/orders/{i}/pay")) for i in placed]
    deadline = time.monotonic() + 10
    while await orders_being_paid(database_url) < IN_FLIGHT:
        assert time.monotonic() < deadline, "the pays did not all start"
        await asyncio.sleep(0.01)
    return pays


async def newcomer(url: str) -> str:
    """What happens to a new connection: `served`, or the error the client saw."""
    try:
        async with httpx.AsyncClient(base_url=url, timeout=1) as client:
            await client.get("/health/live")
    except httpx.TransportError as error:
        return type(error).__name__
    return "served"


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2], ids=["one-worker", "two-workers"])
async def test_sigterm_lets_accepted_requests_finish_and_takes_no_new_ones(
    tmp_path: Path,
    clean_database: str,
    key_pair: tuple[bytes, bytes],
    token_for: TokenFactory,
    standins: str,
    workers: int,
) -> None:
    process, url, log = start_server(
        tmp_path, clean_database, key_pair[1], standins, workers=workers
    )
    try:
        await asyncio.to_thread(wait_until_up, f"{url}/health/ready", process, log)
        async with httpx.AsyncClient(
            base_url=url,
            headers={"Authorization": f"Bearer {token_for('alice')}"},
            timeout=GRACEFUL_TIMEOUT + 10,
            limits=httpx.Limits(max_connections=IN_FLIGHT + 5),
        ) as client:
            pays = await pays_in_flight(client, clean_database)

            process.send_signal(signal.SIGTERM)
            signalled = time.perf_counter()
            # Each worker logs this as it stops accepting (on its next tick, every 0.1 s).
            while log.read_text().count("Shutting down") < workers:
                assert time.perf_counter() - signalled < 5, log.read_text()
                await asyncio.sleep(0.01)
            newcomers = await asyncio.gather(*(newcomer(url) for _ in range(5)))
            answers = await asyncio.gather(*pays)
            finished = time.perf_counter() - signalled

        returncode = await asyncio.to_thread(process.wait, GRACEFUL_TIMEOUT + 5)
        exited = time.perf_counter() - signalled
    finally:
        stop(process)

    output = log.read_text()
    statuses = [answer.status_code for answer in answers]
    assert statuses == [200] * IN_FLIGHT, output
    assert {answer.json()["status"] for answer in answers} == {"progress"}
    assert "served" not in newcomers
    # With LOG_FORMAT=json uvicorn's own lines are JSON too, and its access line is gone.
    assert "HTTP/1.1" not in output
    if workers == 1:
        assert all(line.startswith("{") for line in output.splitlines()), output
        # The worker closes its listener: new connections are refused at once. uvicorn then
        # re-raises SIGTERM after its clean shutdown: "terminated by SIGTERM" (143 in a shell).
        assert newcomers == ["ConnectError"] * 5
        assert returncode == -signal.SIGTERM, output
    else:
        # WEB_CONCURRENCY honoured. The supervisor keeps the shared listening socket open
        # until its workers have exited: new connections wait unanswered, then are reset.
        assert output.count("Started server process") == workers
        assert returncode == 0, output
    assert exited < GRACEFUL_TIMEOUT
    # A worker that holds no connection at the signal has nothing to wait for.
    assert 1 <= output.count("Waiting for connections to close") <= workers
    assert "Cancel" not in output  # nothing was cut off at the graceful timeout
    assert output.count("Finished server process") == workers
    logged = json_lines(output)
    closed = [line for line in logged if line["message"].endswith("connections closed")]
    assert len(closed) == workers
    pays_logged = [
        line
        for line in logged
        if line["logger"] == "orders.access" and line.get("path") == "/orders/{order_id}/pay"
    ]
    assert [line["status"] for line in pays_logged] == [200] * IN_FLIGHT
    assert not [line for line in logged if line["level"] == "ERROR"]
    print(
        f"\nshutdown ({workers} worker(s)): {IN_FLIGHT} pays in flight at SIGTERM, "
        f"{statuses.count(200)} completed 200 (last {finished:.2f} s after the signal); "
        f"new connections: {', '.join(sorted(set(newcomers)))}; exit {returncode} "
        f"{exited:.2f} s after the signal (graceful timeout {GRACEFUL_TIMEOUT} s)"
    )


@pytest.mark.slow
async def test_requests_longer_than_the_graceful_timeout_are_cut_off_cleanly(
    tmp_path: Path,
    clean_database: str,
    key_pair: tuple[bytes, bytes],
    token_for: TokenFactory,
    standins: str,
) -> None:
    graceful_timeout = 1  # a pay takes twice STANDIN_DELAY
    process, url, log = start_server(
        tmp_path, clean_database, key_pair[1], standins, graceful_timeout=graceful_timeout
    )
    try:
        await asyncio.to_thread(wait_until_up, f"{url}/health/ready", process, log)
        async with httpx.AsyncClient(
            base_url=url,
            headers={"Authorization": f"Bearer {token_for('alice')}"},
            timeout=GRACEFUL_TIMEOUT,
            limits=httpx.Limits(max_connections=IN_FLIGHT + 5),
        ) as client:
            pays = await pays_in_flight(client, clean_database)
            process.send_signal(signal.SIGTERM)
            signalled = time.perf_counter()
            answers = await asyncio.gather(*pays, return_exceptions=True)
        returncode = await asyncio.to_thread(process.wait, GRACEFUL_TIMEOUT)
        exited = time.perf_counter() - signalled
    finally:
        stop(process)

    output = log.read_text()
    # Cut off with an answer the client can act on: retry later (pay is safe to repeat).
    # uvicorn does not wait for the requests it cancels, so on a busy machine the process may
    # be gone before one of them has written its 503: the client then sees the connection
    # close, which it must treat the same way. What never happens is a bare 500.
    answered = [answer for answer in answers if isinstance(answer, httpx.Response)]
    dropped = [answer for answer in answers if not isinstance(answer, httpx.Response)]
    assert all(isinstance(error, httpx.TransportError) for error in dropped), dropped
    for answer in answered:
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert int(answer.headers["retry-after"]) > 0
        assert set(answer.json()) == {"detail"}
    assert returncode == -signal.SIGTERM, output
    assert graceful_timeout <= exited < graceful_timeout + 2
    assert "timeout graceful shutdown exceeded" in output
    # The lifespan still closes the pool and the client after the cut.
    logged = json_lines(output)
    assert any(line["message"].endswith("connections closed") for line in logged)
    cut = [line for line in logged if line["logger"] == "orders.access"]
    assert [line["status"] for line in cut if "pay" in line["path"]] == [503] * IN_FLIGHT
    assert "Exception in ASGI application" not in output
    # Nothing half-done: each order is as before, or charged and still to be scheduled
    # (a retried pay then schedules it without charging again).
    connection = await asyncpg.connect(asyncpg_dsn(make_url(clean_database)))
    try:
        statuses = await connection.fetch("SELECT status FROM orders")
    finally:
        await connection.close()
    assert {row["status"] for row in statuses} <= {"created", "paid"}
    print(
        f"\ncut off: {IN_FLIGHT} pays in flight, graceful timeout {graceful_timeout} s, "
        f"exit {returncode} {exited:.2f} s after the signal"
    )
