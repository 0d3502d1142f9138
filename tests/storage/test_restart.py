"""Feedback given before a restart is in the report after it (nothing lives only in memory)."""

from __future__ import annotations

from service.config import Settings
from tests.storage.conftest import ServedApp
from tests.storage.test_feedback import FEEDBACK_URL, issue_card, overridden


async def test_feedback_is_in_the_report_after_a_restart(settings: Settings) -> None:
    before = ServedApp(settings)
    async with before as client:
        card = await issue_card(client)
        response = await client.post(FEEDBACK_URL, json={"feedback": [overridden(card)]})
        assert response.status_code == 200
    # Shutdown wrote the queued audit record; a new app on the same database reads it all.
    async with ServedApp(settings) as client:
        report = (await client.get("/analytics/overrides")).json()
    bundling = next(t for t in report["byTopic"] if t["topic"] == "cac-bundling-conflict")
    assert (bundling["issued"], bundling["overridden"], bundling["overrideRate"]) == (1, 1, 1.0)
    assert report["byOverrideReason"] == [
        {
            "system": "http://example.org/override",
            "code": "already-done",
            "display": None,
            "overridden": 1,
        }
    ]
    assert report["unknownCardFeedback"] == {"accepted": 0, "overridden": 0}
