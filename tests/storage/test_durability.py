"""A feedback 200 means committed: SIGKILL a real `cardiac-ct-cds serve` right after the answer,
and the item is in the database and in the report of the restarted service."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from service.storage.models import CardFeedback
from service.storage.store import Storage
from tests.api.test_invoke_smoke import ORDER_SIGN_URL, REQUEST
from tests.storage.conftest import unused_loopback_port
from tests.storage.test_feedback import FEEDBACK_URL, overridden
from tests.support.conformance import assert_conformant_response, topics
from tests.support.serve import STARTUP_LIMIT_SECONDS, serve_process


@contextmanager
def running_service(tmp_path: Path, database_url: str, name: str) -> Iterator[Any]:
    port = unused_loopback_port()
    config = tmp_path / f"{name}.toml"
    config.write_text(
        f'public_base_url = "http://127.0.0.1:{port}"\nenvironment = "test"\n'
        f'state_dir = "{tmp_path / "var"}"\n[auth]\nenabled = false\n'
        f'[storage]\nurl = "{database_url}"\n',
        encoding="utf-8",
    )
    with (
        serve_process(tmp_path, config, port, name=name) as (process, _),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
    ):
        yield process, client


def test_feedback_acknowledged_survives_sigkill(tmp_path: Path, database_url: str) -> None:
    with running_service(tmp_path, database_url, "first") as (process, client):
        issued = client.post(ORDER_SIGN_URL, json=REQUEST)
        assert issued.status_code == 200, issued.text
        assert_conformant_response(issued.json())
        card = issued.json()["cards"][topics(issued.json()).index("cac-bundling-conflict")]["uuid"]
        deadline = time.monotonic() + STARTUP_LIMIT_SECONDS
        while client.get("/health").json()["storage"]["auditWritten"] < 1:  # audit is async
            assert time.monotonic() < deadline, "audit record never written"
            time.sleep(0.05)

        acknowledged = client.post(FEEDBACK_URL, json={"feedback": [overridden(card)]})
        process.kill()  # SIGKILL: no shutdown hooks, no flush
        process.wait(timeout=30)
    assert acknowledged.status_code == 200, acknowledged.text
    assert process.returncode == -signal.SIGKILL

    storage = Storage(database_url)
    try:
        with storage.session() as session:
            rows = list(session.scalars(select(CardFeedback)))
    finally:
        storage.dispose()
    assert [(r.card_uuid, r.outcome, r.card_known) for r in rows] == [(card, "overridden", True)]

    with running_service(tmp_path, database_url, "restarted") as (_, client):
        report = client.get("/analytics/overrides").json()
    bundling = next(t for t in report["byTopic"] if t["topic"] == "cac-bundling-conflict")
    assert (bundling["issued"], bundling["overridden"]) == (1, 1)
