"""Load from wrk, driven by bench/orders.lua, with the server's CPU time measured around it."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from servers import CLOCK_TICKS, cpu_ticks

SCRIPT = Path(__file__).resolve().parent / "orders.lua"
RESULT_PREFIX = "BENCH_RESULT "


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit(
            "bench: wrk is not installed. On Debian/Ubuntu: `sudo apt-get install -y wrk` "
            "(or build it from https://github.com/wg/wrk and put it on PATH)."
        )
    return path


@dataclass(frozen=True)
class Measurement:
    """One wrk run against one server."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    server_cpu_ms_per_request: float
    postgres_cpu_ms_per_request: float

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "requests_per_second": self.requests_per_second}


def combine(runs: Sequence[Measurement]) -> Measurement:
    """Several runs of one server as one: totals summed, latency percentiles averaged."""
    requests = sum(run.requests for run in runs)

    def per_request(field: str) -> float:
        if not requests:
            return 0.0
        total: float = sum(getattr(run, field) * run.requests for run in runs)
        return total / requests

    return Measurement(
        requests=requests,
        seconds=sum(run.seconds for run in runs),
        p50_ms=sum(run.p50_ms for run in runs) / len(runs),
        p99_ms=sum(run.p99_ms for run in runs) / len(runs),
        non_2xx=sum(run.non_2xx for run in runs),
        socket_errors=sum(run.socket_errors for run in runs),
        server_cpu_ms_per_request=per_request("server_cpu_ms_per_request"),
        postgres_cpu_ms_per_request=per_request("postgres_cpu_ms_per_request"),
    )


def _ticks_to_ms_per_request(ticks: int, requests: int) -> float:
    return ticks * 1000 / CLOCK_TICKS / requests if requests else 0.0


def run_wrk(
    url: str,
    mode: str,
    *,
    connections: int,
    seconds: float,
    threads: int,
    data_file: Path,
    server_pids: Callable[[], list[int]],
    postgres_pids: Callable[[], list[int]],
) -> Measurement:
    """Drive `url` with `connections` for `seconds` and measure what it cost the servers."""
    command = [
        "wrk",
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout", "5s",
        "-s", str(SCRIPT),
        url,
        "--", mode, str(data_file),
    ]  # fmt: skip
    servers = server_pids()
    server_before = cpu_ticks(servers)
    pg_before = {pid: cpu_ticks([pid]) for pid in postgres_pids()}
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    server_ticks = cpu_ticks(servers) - server_before
    # A backend started during the run counts from zero; one that ended is not counted.
    pg_ticks = sum(cpu_ticks([pid]) - pg_before.get(pid, 0) for pid in postgres_pids())
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"bench: wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    result = json.loads(lines[-1].removeprefix(RESULT_PREFIX))
    requests = int(result["requests"])
    return Measurement(
        requests=requests,
        seconds=result["duration_us"] / 1e6,
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        non_2xx=int(result["status_errors"]),
        socket_errors=sum(
            int(result[key])
            for key in ("connect_errors", "read_errors", "write_errors", "timeouts")
        ),
        server_cpu_ms_per_request=_ticks_to_ms_per_request(server_ticks, requests),
        postgres_cpu_ms_per_request=_ticks_to_ms_per_request(pg_ticks, requests),
    )
