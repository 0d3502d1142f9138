"""Prometheus metrics: calls, latency and cards per service and topic, on their own listener.

The process test runs `serve --workers 2` (replay cache in the real Redis) with metrics on and
JSON logs: one scrape must count the calls whichever worker answered them.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from service.api.metrics import HookMetrics
from service.config import load_settings
from service.security.dev_client import ensure_dev_client, sign_dev_token
from service.storage.store import AuditCard, AuditRecord
from tests.api.test_invoke_smoke import ORDER_SIGN_URL, REQUEST
from tests.security.conftest import REDIS_URL
from tests.storage.conftest import unused_loopback_port
from tests.support.serve import STARTUP_LIMIT_SECONDS, dev_client_config, serve_process

SERVICE = "cardiac-ct-order-sign"
WORKERS = ("--workers", "2")


def PORT_AND_WORKERS(port: int) -> tuple[str, ...]:
    return ("--port", str(port), "--workers", "2")


def _record(service_id: str, status: int, *topics: str) -> AuditRecord:
    cards = tuple(
        AuditCard(str(uuid.uuid4()), t, "warning", ("ServiceRequest/1",), None) for t in topics
    )
    return AuditRecord(
        id=str(uuid.uuid4()),
        received_at=datetime.now(UTC),
        service_id=service_id,
        status=status,
        latency_ms=3.5,
        hook="order-sign",
        hook_instance=None,
        client_iss=None,
        patient_id=None,
        order_ids=(),
        data_sources={},
        coverage_assertion_ids=(),
        payer_profile=None,
        cards=cards,
    )


def test_calls_latency_and_cards_are_counted_per_service_and_topic() -> None:
    registry = CollectorRegistry()
    metrics = HookMetrics({SERVICE}, registry)
    metrics.observe(_record(SERVICE, 200, "cac-bundling-conflict"))
    metrics.observe(_record(SERVICE, 401))
    metrics.observe(_record("../../etc/passwd", 404))  # a caller-made path: one label value
    value = registry.get_sample_value
    assert value("cardiac_cds_hook_calls_total", {"service": SERVICE, "status": "200"}) == 1
    assert value("cardiac_cds_hook_calls_total", {"service": SERVICE, "status": "401"}) == 1
    assert value("cardiac_cds_hook_calls_total", {"service": "unknown", "status": "404"}) == 1
    assert value("cardiac_cds_hook_duration_seconds_count", {"service": SERVICE}) == 2
    cards = {"service": SERVICE, "topic": "cac-bundling-conflict", "indicator": "warning"}
    assert value("cardiac_cds_cards_total", cards) == 1


def _config(tmp_path: Path, port: int, metrics_port: int) -> Path:
    return dev_client_config(
        tmp_path,
        f"http://127.0.0.1:{port}",
        *("[storage]", f'url = "sqlite:///{tmp_path / "var" / "audit.db"}"'),
        *("[cache]", f'redis_url = "{REDIS_URL}"', f'key_prefix = "metrics-{uuid.uuid4().hex}"'),
        *("[metrics]", "enabled = true", f"port = {metrics_port}"),
        top=['log_format = "json"'],
        name="metrics",
    )


def _scrape(url: str, wanted: str) -> str:
    """The exposition once `wanted` appears (calls are counted after they are answered)."""
    deadline = time.monotonic() + STARTUP_LIMIT_SECONDS
    while True:
        text = httpx.get(url, timeout=5).text
        if wanted in text or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def test_one_listener_reports_every_workers_calls_and_logs_are_json(tmp_path: Path) -> None:
    port, metrics_port = unused_loopback_port(), unused_loopback_port()
    config = _config(tmp_path, port, metrics_port)
    settings = load_settings(config)
    keys = ensure_dev_client(settings.state_dir)
    base = f"http://127.0.0.1:{port}"
    with serve_process(tmp_path, config, port, *WORKERS) as (_, log_path):
        for _ in range(4):  # a new connection each: the two workers share the listener
            token = sign_dev_token(keys, settings.service_url(ORDER_SIGN_URL))
            body = dict(REQUEST, hookInstance=str(uuid.uuid4()))
            answered = httpx.post(
                base + ORDER_SIGN_URL, json=body, headers={"Authorization": f"Bearer {token}"}
            )
            assert answered.status_code == 200, answered.text
        calls = f'cardiac_cds_hook_calls_total{{service="{SERVICE}",status="200"}} 4.0'
        text = _scrape(f"http://127.0.0.1:{metrics_port}/metrics", calls)
        assert calls in text, text
        assert 'cardiac_cds_cards_total{indicator="warning",service="' in text
        assert 'topic="cac-bundling-conflict"' in text
        assert "cardiac_cds_hook_duration_seconds_bucket" in text
        assert httpx.get(base + "/metrics").status_code == 404  # never on the EHR-facing port
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    # Every log line is JSON, the workers' too; typer's two start-up lines are plain text.
    assert len(records) >= len(lines) - 2, [line for line in lines if not line.startswith("{")]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert any(r["logger"] == "service.api" and "hook=order-sign" in r["message"] for r in records)
