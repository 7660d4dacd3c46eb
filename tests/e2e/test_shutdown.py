"""Graceful shutdown of a real uvicorn process: SIGTERM while pays are in flight lets every
accepted request finish, refuses new connections, closes the pool and the HTTP client, and
exits within the graceful timeout."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import AUDIENCE, ISSUER, ROOT, TokenFactory
from tests.support import asyncpg_dsn

IN_FLIGHT = 10
# Each stand-in call takes this long, so a pay (charge, then schedule) takes twice as long.
STANDIN_DELAY = 1.0
GRACEFUL_TIMEOUT = 10
LATTE = {"product": "latte", "size": "big", "quantity": 1}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not come up:\n{log.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def standins(tmp_path: Path) -> Iterator[str]:
    """Payments and kitchen in a process of their own, answering slowly."""
    port = free_port()
    log = tmp_path / "standins.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "orders.standins", "--port", str(port)],
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


def start_server(
    tmp_path: Path, database_url: str, public_key: bytes, standins: str
) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    log = tmp_path / "orders.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "JWT_PUBLIC_KEY": public_key.decode(),
        "JWT_AUDIENCE": AUDIENCE,
        "JWT_ISSUER": ISSUER,
        "PAYMENTS_URL": standins,
        "KITCHEN_URL": standins,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "SECRETS_DIR": str(tmp_path / "no-secrets"),
    }
    output: IO[bytes]
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "orders.app:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--timeout-graceful-shutdown",
                str(GRACEFUL_TIMEOUT),
            ],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return process, f"http://127.0.0.1:{port}", log


async def orders_being_paid(database_url: str) -> int:
    connection = await asyncpg.connect(asyncpg_dsn(make_url(database_url)))
    try:
        count: int = await connection.fetchval("SELECT count(*) FROM orders WHERE action = 'pay'")
    finally:
        await connection.close()
    return count


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


@pytest.mark.slow
async def test_sigterm_lets_accepted_requests_finish_and_refuses_new_ones(
    tmp_path: Path,
    clean_database: str,
    key_pair: tuple[bytes, bytes],
    token_for: TokenFactory,
    standins: str,
) -> None:
    process, url, log = start_server(tmp_path, clean_database, key_pair[1], standins)
    try:
        await asyncio.to_thread(wait_until_up, f"{url}/health/ready", process, log)
        async with httpx.AsyncClient(
            base_url=url,
            headers={"Authorization": f"Bearer {token_for('alice')}"},
            timeout=GRACEFUL_TIMEOUT + 10,
            limits=httpx.Limits(max_connections=IN_FLIGHT + 5),
        ) as client:
            placed = [
                (await client.post("/orders", json={"order": [LATTE]})).json()["id"]
                for _ in range(IN_FLIGHT)
            ]
            pays = [asyncio.create_task(client.post(f"/orders/{i}/pay")) for i in placed]
            # Accepted and in flight: each has claimed its order and is waiting on payments.
            for _ in range(200):
                if await orders_being_paid(clean_database) == IN_FLIGHT:
                    break
                await asyncio.sleep(0.02)
            assert await orders_being_paid(clean_database) == IN_FLIGHT

            process.send_signal(signal.SIGTERM)
            signalled = time.perf_counter()
            # The listener closes on the server's next tick (every 0.1 s).
            await asyncio.sleep(0.5)
            refused = 0
            for _ in range(5):
                try:
                    async with httpx.AsyncClient(base_url=url, timeout=2) as newcomer:
                        await newcomer.get("/health/live")
                except httpx.ConnectError:
                    refused += 1
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
    assert refused == 5
    # uvicorn re-raises the signal once it has shut down cleanly, so the exit status is the
    # conventional "terminated by SIGTERM" (143 in a shell), not a crash.
    assert returncode == -signal.SIGTERM, output
    assert exited < GRACEFUL_TIMEOUT
    assert "Waiting for connections to close" in output
    assert "Cancel" not in output  # nothing was cut off at the graceful timeout
    assert "Finished server process" in output
    logged = json_lines(output)
    assert any(line["message"] == "orders service stopped: connections closed" for line in logged)
    pays_logged = [
        line
        for line in logged
        if line["logger"] == "orders.access" and line.get("path") == "/orders/{order_id}/pay"
    ]
    assert [line["status"] for line in pays_logged] == [200] * IN_FLIGHT
    assert not [line for line in logged if line["level"] == "ERROR"]
    print(
        f"\nshutdown: {IN_FLIGHT} pays in flight at SIGTERM, {statuses.count(200)} completed "
        f"200 (last {finished:.2f} s after the signal), {refused}/5 new connections refused, "
        f"exit {returncode} {exited:.2f} s after the signal (graceful timeout "
        f"{GRACEFUL_TIMEOUT} s)"
    )
