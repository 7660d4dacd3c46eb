"""Benchmark the orders service against a raw-asyncpg reference, in one run.

    .venv/bin/python bench/run.py            # full run, about 7 minutes
    .venv/bin/python bench/run.py --quick    # the same matrix with short runs, about 3 minutes

Creates a scratch database (on DATABASE_URL's server, else 127.0.0.1:5432, else an embedded
PostgreSQL), migrates and seeds it, starts the service and bench/reference.py with uvicorn (1
worker, then 2), and drives both with wrk: each operation at each concurrency, after a
warm-up, service and reference measured in turns (service, reference, reference, service,
...) so that machine noise and drift hit both alike. Prints the measurements, the
service/reference ratios against the targets and the memory per worker; writes the same as
JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import loadgen
import report
import scratchdb
import sqlcheck
from servers import TraceSink, Uvicorn, free_port, postgres_backends, rss_mib

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"

OPERATIONS = {
    "get": "GET /orders/{id}",
    "list": "GET /orders?limit=10",
    "post": "POST /orders",
    "post-key": "POST /orders + Idempotency-Key",
}
AUDIENCE = "orders-bench"
ISSUER = "orders-bench"
TOKEN_TTL_SECONDS = 6 * 3600
# Never called by the measured routes; a closed port makes any call fail fast.
UNUSED_COLLABORATOR = "http://127.0.0.1:9"


def _shipped_http_options() -> list[str]:
    from orders.entrypoint import server_limit_options
    from orders.settings import ServerLimits

    return server_limit_options(ServerLimits())


def _h11_options() -> list[str]:
    # uvicorn's h11 protocol with the same limits where uvicorn has them: h11 bounds the
    # request head itself (no header-read deadline, though).
    from orders.settings import ServerLimits

    limits = ServerLimits()
    options = _shipped_http_options()
    options[options.index("--http") + 1] = "h11"
    return [*options, "--h11-max-incomplete-event-size", str(limits.http_max_header_bytes)]


SERVICE_HTTP = {
    "shipped": _shipped_http_options,
    "httptools": lambda: ["--http", "httptools"],
    "h11": _h11_options,
}


@dataclass(frozen=True)
class Plan:
    seconds: float
    rounds: int
    warmup_seconds: float
    connections: list[int]
    workers: list[int]
    operations: list[str]
    threads: int
    pool_size: int
    max_overflow: int
    service_http: str
    baseline: str
    baseline_src: Path | None
    metrics: bool
    tracing: bool


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--quick", action="store_true", help="2 s runs, 1 s warm-ups")
    parser.add_argument("--duration", type=float, help="seconds per measured run (default 6)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per cell (default 3)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="measured runs of each server per cell, in turns ABBA... (default 2)",
    )
    parser.add_argument("--connections", default="16,64", help="comma-separated (16,64)")
    parser.add_argument("--workers", default="1,2", help="uvicorn worker counts (1,2)")
    parser.add_argument(
        "--ops", default=",".join(OPERATIONS), help=f"subset of {','.join(OPERATIONS)}"
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument(
        "--pool-size",
        type=int,
        default=15,
        help="DB_POOL_SIZE of both servers (15: each worker keeps up to 15 connections)",
    )
    parser.add_argument(
        "--max-overflow",
        type=int,
        default=0,
        help="DB_MAX_OVERFLOW of both servers (0; SQLAlchemy closes overflow connections as "
        "soon as they are returned, so under bursts the service keeps reconnecting)",
    )
    parser.add_argument(
        "--service-http",
        choices=sorted(SERVICE_HTTP),
        default="shipped",
        help="the service's HTTP protocol: as the image runs it (httptools guarded by "
        "orders.httpguard), plain httptools with no limits, or h11 with uvicorn's limits "
        "(the reference always runs plain httptools)",
    )
    parser.add_argument(
        "--baseline",
        choices=["reference", *sorted(SERVICE_HTTP)],
        default="reference",
        help="what the service is measured against: bench/reference.py (default), or the "
        "service itself on that HTTP protocol: `httptools` measures the cost of "
        "--service-http alone, `shipped` (with --metrics or --tracing) the cost of those",
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="the service serves Prometheus metrics as the image does (METRICS_PORT, "
        "PROMETHEUS_MULTIPROC_DIR); the baseline does not",
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="the service traces every request and exports the spans over OTLP to a sink the "
        "bench runs; the baseline does not",
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        metavar="CHECKOUT",
        help="measure the service against the service of another checkout of this repository "
        "(its src/ on this environment, plain httptools), e.g. a `git worktree` of an earlier "
        "commit: before/after in one run. Its schema must be readable by the earlier code",
    )
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--orders-per-user", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated data")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="server to create the scratch database on (default: DATABASE_URL, else local)",
    )
    parser.add_argument(
        "--embedded",
        action="store_true",
        help="run on a throwaway embedded PostgreSQL even when a server is reachable",
    )
    parser.add_argument("--keep-db", action="store_true", help="keep the scratch database")
    parser.add_argument("--no-json", action="store_true", help="do not write bench/results/")
    return parser.parse_args()


def _plan(args: argparse.Namespace) -> Plan:
    operations = [op.strip() for op in args.ops.split(",") if op.strip()]
    unknown = [op for op in operations if op not in OPERATIONS]
    if unknown:
        raise SystemExit(f"bench: unknown operation(s) {unknown}; choose from {list(OPERATIONS)}")
    return Plan(
        seconds=args.duration or (2.0 if args.quick else 6.0),
        rounds=max(1, args.rounds),
        warmup_seconds=args.warmup if args.warmup is not None else (1.0 if args.quick else 3.0),
        connections=[int(c) for c in args.connections.split(",")],
        workers=[int(w) for w in args.workers.split(",")],
        operations=operations,
        threads=args.threads,
        pool_size=args.pool_size,
        max_overflow=args.max_overflow,
        service_http=args.service_http,
        baseline=args.baseline,
        baseline_src=args.baseline_src.resolve() if args.baseline_src else None,
        metrics=args.metrics,
        tracing=args.tracing,
    )


def _write_users_lua(path: Path, users: list[tuple[str, str, list[str]]]) -> None:
    """The per-user tokens and order ids, as a Lua table for bench/orders.lua."""
    lines = ["return {"]
    for owner, token, ids in users:
        id_list = ", ".join(f'"{order_id}"' for order_id in ids)
        lines.append(f'  {{ owner = "{owner}", token = "{token}", ids = {{ {id_list} }} }},')
    lines.append("}")
    path.write_text("\n".join(lines) + "\n")


def _server_env(database_url: str, public_pem: str, scratch: Path, plan: Plan) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("JWT_") and key not in ("DATABASE_URL", "LOG_LEVEL", "LOG_FORMAT")
    }
    env.update(
        DATABASE_URL=database_url,
        JWT_PUBLIC_KEY=public_pem,
        JWT_AUDIENCE=AUDIENCE,
        JWT_ISSUER=ISSUER,
        PAYMENTS_URL=UNUSED_COLLABORATOR,
        KITCHEN_URL=UNUSED_COLLABORATOR,
        LOG_LEVEL="WARNING",
        # The reference sizes its asyncpg pool from the same two (min, max = size + overflow).
        DB_POOL_SIZE=str(plan.pool_size),
        DB_MAX_OVERFLOW=str(plan.max_overflow),
        # Keep secret files of this machine out of the benchmark's configuration.
        SECRETS_DIR=str(scratch / "no-secrets"),
    )
    return env


def _baseline(workers: int, env: dict[str, str], scratch: Path, plan: Plan) -> Uvicorn:
    """The server in the "reference" slot, so that the tables and ratios read the same."""
    app_dir: Path | None
    if plan.baseline == "reference" and plan.baseline_src is None:
        app, app_dir, http = "reference:create_app", BENCH, ["--http", "httptools"]
        log = f"reference-{workers}w.log"
    else:
        app, log = "orders.app:create_app", f"baseline-{workers}w.log"
        app_dir = plan.baseline_src / "src" if plan.baseline_src is not None else None
        http = SERVICE_HTTP["httptools" if plan.baseline_src is not None else plan.baseline]()
    return Uvicorn(
        "reference",
        app,
        workers=workers,
        env=env,
        log_path=scratch / log,
        app_dir=app_dir,
        http_options=http,
    )


def _service_env(
    env: dict[str, str], scratch: Path, plan: Plan, workers: int, trace_sink: str | None
) -> dict[str, str]:
    """The service's environment: the baseline's, with metrics or tracing turned on."""
    env = dict(env)
    if plan.metrics:
        directory = scratch / f"metrics-{workers}w"
        directory.mkdir()
        env.update(METRICS_PORT=str(free_port()), PROMETHEUS_MULTIPROC_DIR=str(directory))
    if plan.tracing and trace_sink is not None:
        env.update(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=trace_sink)
    return env


@contextlib.contextmanager
def _servers(
    workers: int, env: dict[str, str], scratch: Path, plan: Plan, trace_sink: str | None
) -> Iterator[tuple[Uvicorn, Uvicorn]]:
    started: list[Uvicorn] = []
    try:
        service = Uvicorn(
            "service",
            "orders.app:create_app",
            workers=workers,
            env=_service_env(env, scratch, plan, workers, trace_sink),
            log_path=scratch / f"service-{workers}w.log",
            http_options=SERVICE_HTTP[plan.service_http](),
        )
        started.append(service)
        ref = _baseline(workers, env, scratch, plan)
        started.append(ref)
        service.wait_ready()
        ref.wait_ready()
        yield service, ref
    finally:
        for server in started:
            server.stop()


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _versions() -> dict[str, str]:
    names = ("sqlalchemy", "asyncpg", "starlette", "uvicorn", "pydantic", "python-jose")
    versions = {"python": platform.python_version()}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


@dataclass(frozen=True)
class Workload:
    """What every wrk run shares: the plan, the users file and the database's backends."""

    plan: Plan
    data_file: Path
    database: str

    def run(
        self, target: Uvicorn, op: str, connections: int, seconds: float
    ) -> loadgen.Measurement:
        return loadgen.run_wrk(
            target.url,
            op,
            connections=connections,
            seconds=seconds,
            threads=self.plan.threads,
            data_file=self.data_file,
            server_pids=target.processes,
            postgres_pids=lambda: postgres_backends(self.database),
        )


def _cell(
    workload: Workload,
    workers: int,
    op: str,
    connections: int,
    order: tuple[Uvicorn, Uvicorn],
) -> report.Cell:
    """Warm both servers up, then measure them in turns: A B B A A B ... for `rounds`."""
    if workload.plan.warmup_seconds > 0:
        for target in order:
            workload.run(target, op, connections, workload.plan.warmup_seconds)
    runs: dict[str, list[loadgen.Measurement]] = {target.name: [] for target in order}
    for round_number in range(workload.plan.rounds):
        for target in order if round_number % 2 == 0 else reversed(order):
            runs[target.name].append(workload.run(target, op, connections, workload.plan.seconds))
    measured = {name: loadgen.combine(found) for name, found in runs.items()}
    cell = report.Cell(
        workers, OPERATIONS[op], connections, measured["service"], measured["reference"]
    )
    _say(
        f"bench: {workers}w {cell.operation:<22} c={connections:<3} "
        f"service {cell.service.requests_per_second:6.0f} req/s "
        f"p99 {cell.service.p99_ms:6.1f} ms | "
        f"reference {cell.reference.requests_per_second:6.0f} req/s "
        f"p99 {cell.reference.p99_ms:6.1f} ms | "
        f"ratios {cell.throughput_ratio:.2f} / {cell.p99_ratio:.2f}"
    )
    return cell


def _users(database_url: str, args: argparse.Namespace) -> tuple[str, list[Any]]:
    """Seed the database; return the public key and (owner, token, order ids) per user."""
    from orders_dev.devtoken import generate_key_pair, mint

    owners = [f"user-{n:03d}" for n in range(args.users)]
    ids = scratchdb.seed(database_url, owners, args.orders_per_user, args.seed)
    private_pem, public_pem = generate_key_pair()
    users = [
        (
            owner,
            mint(
                private_pem,
                sub=owner,
                audience=AUDIENCE,
                issuer=ISSUER,
                ttl_seconds=TOKEN_TTL_SECONDS,
            ),
            ids[owner],
        )
        for owner in owners
    ]
    return public_pem.decode(), users


def _print_report(
    plan: Plan, cells: list[report.Cell], memory: list[tuple[int, str, list[float]]]
) -> None:
    if plan.baseline_src is not None:
        baseline = f"the service of {plan.baseline_src} on httptools"
    elif plan.baseline == "reference":
        baseline = "bench/reference.py"
    else:
        baseline = f"the service on {plan.baseline}"
    extras = [name for name, on in (("metrics", plan.metrics), ("tracing", plan.tracing)) if on]
    if extras:
        baseline += f"; the service with {' and '.join(extras)} on"
    print(
        f"\n{plan.rounds} x {plan.seconds:g} s per server and cell, in turns, after "
        f"{plan.warmup_seconds:g} s of warm-up each; wrk "
        f"-t{plan.threads}; service HTTP: {plan.service_http}; reference: {baseline}; "
        f"both servers DB_POOL_SIZE={plan.pool_size} "
        f"DB_MAX_OVERFLOW={plan.max_overflow}; {os.cpu_count()} CPUs"
    )
    print("\n## Results\n")
    print(report.results_table(cells))
    print("\n## Service / reference\n")
    print(report.ratios_table(cells))
    print("\n## Memory after the runs\n")
    print(report.memory_table(memory))
    missed = [cell for cell in cells if not cell.meets_targets]
    print(
        f"\nTargets: req/s ratio >= {report.MIN_THROUGHPUT_RATIO}, "
        f"p99 ratio <= {report.MAX_P99_RATIO}, no non-2xx or socket errors: "
        + ("all met." if not missed else f"{len(missed)} of {len(cells)} cells missed.")
    )


def _write_json(
    started_at: datetime,
    plan: Plan,
    drift: list[str],
    cells: list[report.Cell],
    memory: list[tuple[int, str, list[float]]],
) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{started_at:%Y%m%dT%H%M%SZ}.json"
    document: dict[str, Any] = {
        "started": started_at.isoformat(),
        "plan": plan.__dict__,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": _versions(),
        "sql_drift": drift,
        "cells": [cell.as_dict() for cell in cells],
        "memory_mib": [
            {"workers": w, "impl": impl, "rss_per_worker": values} for w, impl, values in memory
        ],
        "wall_seconds": round(time.time() - started_at.timestamp(), 1),
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def main() -> int:
    args = _arguments()
    plan = _plan(args)
    loadgen.require_wrk()
    started_at = datetime.now(UTC)
    cells: list[report.Cell] = []
    memory: list[tuple[int, str, list[float]]] = []
    drift: list[str] = []
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="orders-bench-")))
        server = stack.enter_context(
            scratchdb.postgres_server(args.database_url, embedded=args.embedded)
        )
        database = f"orders_bench_{os.getpid()}"
        database_url = stack.enter_context(
            scratchdb.scratch_database(server, database, keep=args.keep_db)
        )
        _say(f"bench: database {database} on the {server.origin}; migrating and seeding")
        scratchdb.migrate(database_url)
        public_pem, users = _users(database_url, args)
        drift = sqlcheck.drift(database_url, users[0][0], users[0][2][0])
        if drift:
            _say(
                f"bench: WARNING: bench/reference.py's {', '.join(drift)} no longer match the "
                "service's SQL; update them, or the ratios compare different queries"
            )
        workload = Workload(plan, scratch / "users.lua", database)
        _write_users_lua(workload.data_file, users)
        env = _server_env(database_url, public_pem, scratch, plan)
        trace_sink = stack.enter_context(TraceSink()).url if plan.tracing else None
        turn = 0
        for workers in plan.workers:
            with _servers(workers, env, scratch, plan, trace_sink) as (
                service,
                ref,
            ):
                _say(f"bench: {workers} worker(s): service {service.url}, reference {ref.url}")
                for op in plan.operations:
                    for connections in plan.connections:
                        # Alternate who goes first, so a drift in the machine favours neither.
                        order = (service, ref) if turn % 2 == 0 else (ref, service)
                        turn += 1
                        cells.append(_cell(workload, workers, op, connections, order))
                for target in (service, ref):
                    rss = [rss_mib(pid) for pid in target.worker_pids()]
                    memory.append((workers, target.name, rss))

    _print_report(plan, cells, memory)
    if drift:
        print(f"WARNING: the reference's SQL differs from the service's: {', '.join(drift)}")
    if not args.no_json:
        print(f"\nJSON: {_write_json(started_at, plan, drift, cells, memory)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
