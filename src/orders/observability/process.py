"""Process metrics (CPU, memory, open files, start time) for one process or for every worker.

prometheus-client's process collector describes the process that serves the scrape. With
several workers that is whichever one the scrape reached, so in multiprocess mode each live
worker is described instead, told apart by a `pid` label (one series per worker, replaced
when a worker is replaced).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, ProcessCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector


def default_collectors() -> list[Collector]:
    """The collectors of a single process: its own process, platform and GC metrics."""
    return [ProcessCollector(registry=None), PLATFORM_COLLECTOR, GC_COLLECTOR]


class WorkerProcessCollector(Collector):
    """The process metrics of each process `pids()` names, labelled by pid."""

    def __init__(self, pids: Callable[[], Iterable[int]]) -> None:
        self._pids = pids
        self._collectors: dict[int, ProcessCollector] = {}

    def _collector(self, pid: int) -> ProcessCollector:
        collector = self._collectors.get(pid)
        if collector is None:
            collector = ProcessCollector(pid=lambda: pid, registry=None)
            self._collectors[pid] = collector
        return collector

    def collect(self) -> Iterable[Metric]:
        pids = list(self._pids())
        for gone in set(self._collectors) - set(pids):
            del self._collectors[gone]
        families: dict[str, Metric] = {}
        for pid in pids:
            for family in self._collector(pid).collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = Metric(family.name, family.documentation, family.type)
                    families[family.name] = merged
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        return list(families.values())
