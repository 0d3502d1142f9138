"""A database outage never fails hook calls: audit records queue (then are dropped, counted),
/health says degraded, feedback answers 503, and the backlog is written when the DB is back."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable

from sqlalchemy import func, select

from service.config import Settings
from service.storage.models import CardFeedback, HookCall
from service.storage.store import Storage
from tests.api.test_invoke_smoke import ORDER_SIGN_URL, REQUEST
from tests.storage.conftest import ServedApp, unused_loopback_port
from tests.support.conformance import assert_conformant_response

QUEUE_SIZE = 100


async def test_hooks_survive_an_outage_and_the_backlog_is_written_later(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    down = f"postgresql+psycopg://postgres@127.0.0.1:{unused_loopback_port()}/test"
    settings = make_settings(
        storage={"url": down, "audit_queue_size": QUEUE_SIZE, "retry_max_seconds": 0.2}
    )
    served = ServedApp(settings)
    async with served as client:
        statuses = []
        for i in range(QUEUE_SIZE + 7):
            request = copy.deepcopy(REQUEST)
            request["hookInstance"] = f"outage-{i}"
            response = await client.post(ORDER_SIGN_URL, json=request)
            assert_conformant_response(response.json())
            statuses.append(response.status_code)
        async with asyncio.timeout(30):  # until the writer has tried (and failed) once
            while served.persistence.writer.health().last_error is None:  # noqa: ASYNC110 - another task's state
                await asyncio.sleep(0.02)
        health = await client.get("/health")
        feedback = await client.post(
            f"{ORDER_SIGN_URL}/feedback",
            json={
                "feedback": [
                    {"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-11-01T00:00Z"}
                ]
            },
        )

        back = Storage(database_url)  # the database "comes back"
        served.persistence.writer.use_storage(back)
        await served.drain_audit()
        health_after = await client.get("/health")
        with back.session() as session:
            written = session.scalar(select(func.count()).select_from(HookCall))
            instances = set(session.scalars(select(HookCall.hook_instance)))
            feedback_rows = session.scalar(select(func.count()).select_from(CardFeedback))

    assert statuses == [200] * (QUEUE_SIZE + 7)
    assert health.status_code == 200
    assert health.json() == {
        "status": "degraded",
        "storage": {
            "status": "degraded",
            "databaseReachable": False,
            "auditQueueDepth": QUEUE_SIZE,
            "auditQueueSize": QUEUE_SIZE,
            "auditDropped": 7,
            "auditWritten": 0,
            "lastError": "OperationalError",
        },
    }
    assert feedback.status_code == 503
    assert feedback.json()["resourceType"] == "OperationOutcome"
    assert feedback_rows == 0  # a 503 accepted nothing: the client sends it again

    storage_after = health_after.json()["storage"]
    assert health_after.json()["status"] == "ok"
    assert (storage_after["auditQueueDepth"], storage_after["auditWritten"]) == (0, QUEUE_SIZE)
    assert storage_after["auditDropped"] == 7  # the loss stays visible
    assert storage_after["lastError"] is None  # recovered (issue 10 item 8)
    assert written == QUEUE_SIZE
    # The oldest records were kept; the newest, arriving at a full queue, were dropped.
    assert instances == {f"outage-{i}" for i in range(QUEUE_SIZE)}
