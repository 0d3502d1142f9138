"""Prometheus metrics of the CDS service calls, taken from the audit records: calls by service
and HTTP status, latency by service, cards by service, topic and indicator.

With `serve`, metrics are kept in prometheus_client's multiprocess mode (files under
state_dir/metrics), so one listener reports every worker's calls (`serve_metrics`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram

from service.storage.store import AuditRecord

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Hook latency buckets (seconds): most answers take milliseconds, the fetch path up to the
# FHIR deadline (2.5 s by default).
_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class HookMetrics:
    """Counts and latencies per known service; any other path segment is `unknown` (label
    values must not come from callers: a client could otherwise grow the series at will)."""

    def __init__(self, services: Collection[str], registry: CollectorRegistry | None) -> None:
        self.services = frozenset(services)
        self.calls = Counter(
            "cardiac_cds_hook_calls",
            "CDS service calls answered, by service and HTTP status",
            ["service", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "cardiac_cds_hook_duration_seconds",
            "Time to answer a CDS service call, by service",
            ["service"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.cards = Counter(
            "cardiac_cds_cards",
            "Cards returned, by service, topic and indicator",
            ["service", "topic", "indicator"],
            registry=registry,
        )

    def observe(self, record: AuditRecord) -> None:
        service = record.service_id if record.service_id in self.services else "unknown"
        self.calls.labels(service, str(record.status)).inc()
        self.latency.labels(service).observe(record.latency_ms / 1000)
        for card in record.cards:
            self.cards.labels(service, card.topic, card.indicator).inc()


def hook_metrics(services: Collection[str]) -> HookMetrics:
    """Metrics on the process-wide registry under `serve` (multiprocess mode), else on a private
    registry (tests and the offline evaluator build many apps in one process)."""
    if os.environ.get(MULTIPROCESS_ENV):
        return HookMetrics(services, registry=None)  # the default registry, shared files
    return HookMetrics(services, registry=CollectorRegistry())


def prepare_multiprocess(state_dir: Path) -> Path:
    """An empty directory for this run's metric files; set before any metric exists (the
    workers inherit the environment)."""
    directory = state_dir / "metrics"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[MULTIPROCESS_ENV] = str(directory)
    return directory


def serve_metrics(host: str, port: int) -> None:
    """Start the /metrics listener (a daemon thread) reporting every worker's files."""
    from prometheus_client import multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(port, addr=host, registry=registry)
