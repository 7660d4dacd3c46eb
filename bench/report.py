"""The benchmark's tables (Markdown, so they paste into issues and docs) and its JSON."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loadgen import Measurement

MIN_THROUGHPUT_RATIO = 0.8
MAX_P99_RATIO = 1.25


@dataclass(frozen=True)
class Cell:
    """Service and reference measured under the same conditions, one after the other."""

    workers: int
    operation: str
    connections: int
    service: Measurement
    reference: Measurement

    @property
    def throughput_ratio(self) -> float:
        ref = self.reference.requests_per_second
        return self.service.requests_per_second / ref if ref else 0.0

    @property
    def p99_ratio(self) -> float:
        return self.service.p99_ms / self.reference.p99_ms if self.reference.p99_ms else 0.0

    @property
    def cpu_ratio(self) -> float | None:
        ref = self.reference.server_cpu_ms_per_request
        return self.service.server_cpu_ms_per_request / ref if ref else None

    @property
    def failures(self) -> int:
        return self.service.non_2xx + self.service.socket_errors

    @property
    def meets_targets(self) -> bool:
        return (
            self.throughput_ratio >= MIN_THROUGHPUT_RATIO
            and self.p99_ratio <= MAX_P99_RATIO
            and self.failures == 0
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "operation": self.operation,
            "connections": self.connections,
            "service": self.service.as_dict(),
            "reference": self.reference.as_dict(),
            "throughput_ratio": self.throughput_ratio,
            "p99_ratio": self.p99_ratio,
            "cpu_ratio": self.cpu_ratio,
            "meets_targets": self.meets_targets,
        }


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            str(cell).ljust(width) if i < 2 else str(cell).rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            "-" * (width + 1) + ":" if i >= 2 else "-" * (width + 2)
            for i, width in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def results_table(cells: Sequence[Cell]) -> str:
    """Every measurement, service and reference side by side, with the ratios."""
    header = [
        "workers / op",
        "impl",
        "conns",
        "req/s",
        "p50 ms",
        "p99 ms",
        "non-2xx",
        "sock err",
        "CPU ms/req",
        "PG ms/req",
    ]
    rows: list[list[str]] = []
    for cell in cells:
        for impl, m in (("service", cell.service), ("reference", cell.reference)):
            rows.append(
                [
                    f"{cell.workers}w {cell.operation}",
                    impl,
                    str(cell.connections),
                    f"{m.requests_per_second:,.0f}",
                    f"{m.p50_ms:.1f}",
                    f"{m.p99_ms:.1f}",
                    str(m.non_2xx),
                    str(m.socket_errors),
                    f"{m.server_cpu_ms_per_request:.2f}",
                    f"{m.postgres_cpu_ms_per_request:.2f}",
                ]
            )
    return _table(header, rows)


def ratios_table(cells: Sequence[Cell]) -> str:
    """Service / reference per cell, against the targets."""
    header = [
        "workers / op",
        "target",
        "conns",
        f"req/s ratio (>= {MIN_THROUGHPUT_RATIO})",
        f"p99 ratio (<= {MAX_P99_RATIO})",
        "CPU/req ratio",
        "service non-2xx + errors",
    ]
    rows = [
        [
            f"{cell.workers}w {cell.operation}",
            "met" if cell.meets_targets else "MISSED",
            str(cell.connections),
            f"{cell.throughput_ratio:.2f}",
            f"{cell.p99_ratio:.2f}",
            f"{cell.cpu_ratio:.2f}" if cell.cpu_ratio is not None else "-",
            str(cell.failures),
        ]
        for cell in cells
    ]
    return _table(header, rows)


def memory_table(rss: Sequence[tuple[int, str, list[float]]]) -> str:
    """RSS of each worker process after its runs."""
    header = ["workers", "impl", "RSS per worker (MiB)"]
    rows = [
        [str(workers), impl, ", ".join(f"{value:.1f}" for value in values)]
        for workers, impl, values in rss
    ]
    return _table(header, rows)
