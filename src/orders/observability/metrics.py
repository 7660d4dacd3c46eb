"""The service's Prometheus metrics, and the typed calls the rest of the code records them by.

One `Metrics` object is made per app in `create_app` and handed to whatever records (the
request middleware, the pool, the order service). The metric objects belong to it, not to
the module: the tests build many apps in one process, and module-level metrics would add up
across them and refuse to be registered twice.

Several worker processes (`WEB_CONCURRENCY > 1`) share one view through prometheus-client's
multiprocess mode: with `PROMETHEUS_MULTIPROC_DIR` set, every process writes its values to
memory-mapped files there, and whichever process serves a scrape adds them all up. Each
gauge says how its per-process values combine (`multiprocess_mode`):

- pool capacity and connections in use are per process: `livesum` (the sum over live ones);
- pending outcomes are one fact about the database, whoever counted it: `livemostrecent`,
  the value the latest live writer set (summing would count it once per process);
- build info is the same everywhere: `livemax`.

"live" modes drop a process's values when it dies. Counters and histograms keep a dead
worker's counts (so sums never go backwards while the server runs).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Final, Literal, get_args

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
)
from prometheus_client.exposition import choose_encoder

from orders.observability.process import WorkerProcessCollector, default_collectors

MULTIPROCESS_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

CallOutcome = Literal["ok", "refused", "unknown", "failed"]
PendingKind = Literal["charge", "schedule", "refund"]
CALL_OUTCOMES: Final = frozenset(get_args(CallOutcome))
PENDING_KINDS: Final = frozenset(get_args(PendingKind))

# Methods a client can send are any token; only these become label values.
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The route label of a request no route matched: one series for every unknown path.
UNMATCHED_ROUTE: Final = "(unmatched)"
_EVENT_TYPE: Final = re.compile(r"^order\.[a-z_]{1,32}$")
_SQLSTATE_CLASS: Final = re.compile(r"^[0-9A-Z]{2}$")

# Seconds; the API answers in milliseconds, collaborators and waits can take seconds.
_LATENCY_BUCKETS: Final = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_CALL_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def multiprocess_directory() -> Path | None:
    """The directory shared by the worker processes, when multiprocess mode is on."""
    value = os.environ.get(MULTIPROCESS_ENV)
    return Path(value) if value else None


def _version() -> str:
    try:
        return metadata.version("orders")
    except metadata.PackageNotFoundError:
        return "unknown"


def _pid_of(filename: str) -> int | None:
    # prometheus-client names its files `<kind>_<pid>.db`.
    stem = filename.removesuffix(".db")
    _, _, pid = stem.rpartition("_")
    return int(pid) if pid.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pids(directory: Path) -> set[int]:
    pids = (_pid_of(name) for name in os.listdir(directory) if name.endswith(".db"))
    return {pid for pid in pids if pid is not None}


def live_pids(directory: Path) -> list[int]:
    """The processes with files in `directory` that are still running."""
    return sorted(pid for pid in _pids(directory) if _alive(pid))


class Metrics:
    """Every metric of the service, and the calls that record them.

    `commit` names the source the running code was built from (`BUILD_COMMIT`).
    """

    def __init__(self, *, commit: str = "unknown", directory: Path | None = None) -> None:
        self.directory = directory if directory is not None else multiprocess_directory()
        # Values read rather than counted (see `sample`).
        self._samplers: list[Callable[[], None]] = []
        self.registry = CollectorRegistry(auto_describe=True)
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            # A process that had this pid before (a restarted container keeps the directory)
            # left gauge files behind; they must not become this process's starting values.
            multiprocess.mark_process_dead(os.getpid(), str(self.directory))  # type: ignore[no-untyped-call]
            multiprocess.MultiProcessCollector(self.registry, path=str(self.directory))  # type: ignore[no-untyped-call]
            directory = self.directory
            self.registry.register(WorkerProcessCollector(lambda: live_pids(directory)))
            owner: CollectorRegistry | None = None
        else:
            for collector in default_collectors():
                self.registry.register(collector)
            owner = self.registry

        self.requests = Counter(
            "orders_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=owner,
        )
        self.request_duration = Histogram(
            "orders_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by route template.",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=owner,
        )
        self.collaborator_calls = Counter(
            "orders_collaborator_calls",
            "Calls to payments and kitchen, by operation and outcome "
            "(ok, refused, unknown: may have taken effect, failed: surely did not).",
            ["service", "operation", "outcome"],
            registry=owner,
        )
        self.collaborator_duration = Histogram(
            "orders_collaborator_call_duration_seconds",
            "Time a call to payments or kitchen took, whatever its outcome.",
            ["service", "operation"],
            buckets=_CALL_BUCKETS,
            registry=owner,
        )
        self.transitions = Counter(
            "orders_order_events",
            "Orders by transition: events recorded, by type (order.placed, order.paid, ...).",
            ["type"],
            registry=owner,
        )
        self.pending = Gauge(
            "orders_pending_outcomes",
            "Charges, schedules and refunds whose outcome is not known yet.",
            ["kind"],
            multiprocess_mode="livemostrecent",
            registry=owner,
        )
        self.pending_oldest_age = Gauge(
            "orders_pending_outcome_oldest_age_seconds",
            "Age of the oldest pending outcome of each kind when last counted (0: none).",
            ["kind"],
            multiprocess_mode="livemostrecent",
            registry=owner,
        )
        # By kind, so that the series exists only once something has counted.
        self.pending_counted = Gauge(
            "orders_pending_outcomes_counted_timestamp_seconds",
            "When the pending outcomes of each kind were last counted (Unix time).",
            ["kind"],
            multiprocess_mode="livemostrecent",
            registry=owner,
        )
        self.events_published = Counter(
            "orders_events_published",
            "Order events the broker confirmed (at least once: a repeat counts again).",
            registry=owner,
        )
        self.status_messages = Counter(
            "orders_status_messages",
            "Kitchen's and delivery's messages, by what became of them (applied, duplicate, "
            "retried, dead_lettered).",
            ["outcome"],
            registry=owner,
        )
        self.outbox_waiting = Gauge(
            "orders_outbox_waiting",
            "Order events written and not yet published, as last counted.",
            registry=owner,
            multiprocess_mode="livemostrecent",
        )
        self.outbox_lag = Gauge(
            "orders_outbox_lag_seconds",
            "Age of the oldest order event not yet published (0 when none waits).",
            registry=owner,
            multiprocess_mode="livemostrecent",
        )
        self.pool_capacity = Gauge(
            "orders_db_pool_capacity",
            "Database connections the pools may hold (pool size plus overflow).",
            multiprocess_mode="livesum",
            registry=owner,
        )
        self.pool_in_use = Gauge(
            "orders_db_pool_connections_in_use",
            "Database connections checked out of the pools right now.",
            multiprocess_mode="livesum",
            registry=owner,
        )
        self.pool_waits = Histogram(
            "orders_db_pool_wait_seconds",
            "Checkouts that found every connection in use, by the time they waited.",
            buckets=_LATENCY_BUCKETS,
            registry=owner,
        )
        self.pool_timeouts = Counter(
            "orders_db_pool_timeouts",
            "Checkouts that gave up after DB_POOL_TIMEOUT seconds.",
            registry=owner,
        )
        self.statement_errors = Counter(
            "orders_db_statement_errors",
            "Statements that failed, by SQLSTATE class (23 integrity, 40 rollback, 57 "
            "operator intervention, ...), `connection` when the connection was lost, `driver` "
            "when the driver refused it before sending.",
            ["sqlstate_class"],
            registry=owner,
        )
        self.build_info = Gauge(
            "orders_build_info",
            "Always 1; the labels say which version and commit are running.",
            ["version", "commit"],
            multiprocess_mode="livemax",
            registry=owner,
        )
        self.build_info.labels(_version(), commit).set(1)
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    # -- recording -------------------------------------------------------------------------

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request; `route` is its template (never the raw path)."""
        if method not in _METHODS:
            method = "OTHER"
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(route, method, str(status)),
                self.request_duration.labels(route, method),
            )
            self._request_children[key] = children
        counter, histogram = children
        counter.inc()
        histogram.observe(seconds)

    def collaborator_call(self, service: str, operation: str, outcome: str, seconds: float) -> None:
        """One call to payments or kitchen (`operation`: charge, refund, schedule, cancel).

        `outcome` (a `CallOutcome`): ok; refused (the collaborator said no, e.g. an invalid
        payment); unknown (it may have taken effect: a timeout after sending, a 5xx); failed
        (it surely did not). Plain `str`, checked here, so that the method can be handed
        where any `(service, operation, outcome, seconds)` callback is taken.
        """
        if outcome not in CALL_OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(CALL_OUTCOMES)}, not {outcome!r}")
        self.collaborator_calls.labels(service, operation, outcome).inc()
        self.collaborator_duration.labels(service, operation).observe(seconds)

    def order_event(self, event_type: str) -> None:
        """One order transition, by the type of the event it recorded (`order.paid`)."""
        if not _EVENT_TYPE.match(event_type):
            raise ValueError(f"not an order event type: {event_type!r}")
        self.transitions.labels(event_type).inc()

    def order_events(self, event_types: Iterable[str]) -> None:
        """Several transitions at once: the types of the events one transaction committed."""
        for event_type in event_types:
            self.order_event(event_type)

    def pending_outcomes(self, kind: str, count: int, oldest_age_seconds: float) -> None:
        """How many outcomes of `kind` (a `PendingKind`) are pending and how old the oldest
        is, as just counted (in the database: every process and replica sees the same
        number)."""
        if kind not in PENDING_KINDS:
            raise ValueError(f"kind must be one of {sorted(PENDING_KINDS)}, not {kind!r}")
        self.pending.labels(kind).set(count)
        self.pending_oldest_age.labels(kind).set(oldest_age_seconds if count else 0.0)
        self.pending_counted.labels(kind).set(time.time())

    def event_counts(
        self, *, published: int, applied: int, duplicate: int, retried: int, dead_lettered: int
    ) -> None:
        """What the outbox relay and the status consumer did since the last call."""
        self.events_published.inc(published)
        for outcome, count in (
            ("applied", applied),
            ("duplicate", duplicate),
            ("retried", retried),
            ("dead_lettered", dead_lettered),
        ):
            if count:
                self.status_messages.labels(outcome).inc(count)

    def outbox(self, waiting: int, oldest_age_seconds: float) -> None:
        """The outbox as just counted: events waiting, and the age of the oldest."""
        self.outbox_waiting.set(waiting)
        self.outbox_lag.set(oldest_age_seconds)

    def statement_error(self, sqlstate: str | None, *, disconnect: bool = False) -> None:
        """One failed statement: by the class of the server's SQLSTATE; without one,
        `connection` when the connection was lost, else `driver` (refused before sending)."""
        if sqlstate is not None:
            label = sqlstate[:2] if _SQLSTATE_CLASS.match(sqlstate[:2]) else "other"
        else:
            label = "connection" if disconnect else "driver"
        self.statement_errors.labels(label).inc()

    # -- sampled values ----------------------------------------------------------------------

    def sample_with(self, sampler: Callable[[], None]) -> Callable[[], None]:
        """Have `sampler` set its gauges on every `sample()`; returns what stops it.

        For a value the process can read at any time (connections in use): reading it when
        asked costs nothing per request, where counting every change costs two writes to the
        multiprocess files per request.
        """
        self._samplers.append(sampler)
        return lambda: self._samplers.remove(sampler)

    def sample(self) -> None:
        """Set the sampled gauges of this process: before each scrape it answers, and every
        few seconds for the scrapes its sibling workers answer."""
        for sampler in tuple(self._samplers):
            sampler()

    # -- exposition ------------------------------------------------------------------------

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The current values in the format `accept` asks for, and its content type."""
        self.sample()
        if self.directory is not None:
            # Gauges of workers that died are dropped here rather than by the dead worker.
            for pid in _pids(self.directory):
                if not _alive(pid):
                    multiprocess.mark_process_dead(pid, str(self.directory))  # type: ignore[no-untyped-call]
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
