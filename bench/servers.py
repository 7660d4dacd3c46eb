"""Servers under test: uvicorn processes started, watched through /proc and stopped."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (which may hold spaces)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rsplit(")", 1)[1].split()


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            parent = int(_stat_fields(int(entry.name))[1])
            children.setdefault(parent, []).append(int(entry.name))
    return children


def _tree(pid: int) -> list[int]:
    children = _children()
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def cpu_ticks(pids: Iterable[int]) -> int:
    """utime + stime of these processes, in clock ticks (gone processes count 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            fields = _stat_fields(pid)
            total += int(fields[11]) + int(fields[12])
    return total


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def rss_mib(pid: int) -> float:
    """Resident set size of one process, MiB."""
    fields = Path(f"/proc/{pid}/statm").read_text().split()
    return int(fields[1]) * PAGE_KIB / 1024


def postgres_backends(database: str) -> list[int]:
    """The server processes serving connections to `database` (by their process title)."""
    marker = f" {database} "
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
        and _cmdline(int(entry.name)).startswith("postgres:")
        and marker in _cmdline(int(entry.name))
    ]


class Uvicorn:
    """One `uvicorn --factory` server, with `workers` processes, logging to `log_path`."""

    def __init__(
        self,
        name: str,
        app: str,
        *,
        workers: int,
        env: Mapping[str, str],
        log_path: Path,
        app_dir: Path | None = None,
        http_options: Sequence[str] = ("--http", "httptools"),
    ) -> None:
        self.name = name
        self.workers = workers
        self.port = free_port()
        self.log_path = log_path
        command = [
            sys.executable, "-m", "uvicorn", app,
            "--factory",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--loop", "uvloop",
            *http_options,
            "--no-access-log",
        ]  # fmt: skip
        if app_dir is not None:
            command += ["--app-dir", str(app_dir)]
        with log_path.open("w") as log:
            self.process = subprocess.Popen(
                command,
                env={**env, "WEB_CONCURRENCY": str(workers)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the server answers /health/live and every worker has started and gone idle
        (which worker answers cannot be chosen, and server logs may be silenced)."""
        deadline = time.monotonic() + timeout
        previous: dict[int, int] = {}
        quiet = 0
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(
                    f"bench: {self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            workers = self.worker_pids()
            if len(workers) == self.workers and self._answers():
                # A worker still importing burns CPU; a started one waits for connections.
                ticks = {pid: cpu_ticks([pid]) for pid in workers}
                quiet = quiet + 1 if ticks == previous else 0
                previous = ticks
                if quiet >= 2:
                    return
            time.sleep(0.25)
        raise SystemExit(f"bench: {self.name} did not start in {timeout:.0f}s:\n{self.log_tail()}")

    def _answers(self) -> bool:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            connection.request("GET", "/health/live")
            return connection.getresponse().status == 200
        except (http.client.HTTPException, OSError):
            return False
        finally:
            connection.close()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])

    def processes(self) -> list[int]:
        """The server process and everything it started."""
        return _tree(self.process.pid)

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: the server itself, or its spawned workers."""
        if self.workers == 1:
            return [self.process.pid]
        return sorted(
            pid
            for pid in self.processes()
            if pid != self.process.pid and "spawn_main" in _cmdline(pid)
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        # An empty ExportTraceServiceResponse: everything was accepted.
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


class TraceSink:
    """An OTLP/HTTP traces endpoint that accepts and drops every export, in a thread."""

    def __enter__(self) -> TraceSink:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
