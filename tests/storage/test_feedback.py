"""Feedback is stored once per card + outcome + time, linked to the issued card, committed
before the 200; malformed items are refused with an OperationOutcome."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from service.config import Settings
from service.storage.models import CardFeedback
from service.storage.store import AuditCard, AuditRecord, FeedbackEntry, Storage
from tests.api.test_invoke_smoke import ORDER_SIGN_URL, REQUEST
from tests.storage.conftest import ServedApp
from tests.support.conformance import conformant_body, topics

FEEDBACK_URL = f"{ORDER_SIGN_URL}/feedback"


def overridden(card: str, when: str = "2026-11-23T10:00:00Z", **extra: Any) -> dict[str, Any]:
    return {
        "card": card,
        "outcome": "overridden",
        "overrideReason": {
            "reason": {"system": "http://example.org/override", "code": "already-done"},
            "userComment": "done last week",
        },
        "outcomeTimestamp": when,
        **extra,
    }


def stored_feedback(storage: Storage) -> list[CardFeedback]:
    with storage.session() as session:
        return list(session.scalars(select(CardFeedback).order_by(CardFeedback.id)))


async def issue_card(client: Any) -> str:
    response = await client.post(ORDER_SIGN_URL, json=REQUEST)
    body = conformant_body(response)
    assert "cac-bundling-conflict" in topics(body)
    uuid: str = body["cards"][topics(body).index("cac-bundling-conflict")]["uuid"]
    return uuid


async def test_feedback_is_stored_once_and_linked_to_the_issued_card(settings: Settings) -> None:
    served = ServedApp(settings)
    async with served as client:
        card = await issue_card(client)
        await served.drain_audit()
        body = {"feedback": [overridden(card)]}
        first = await client.post(FEEDBACK_URL, json=body)
        again = await client.post(FEEDBACK_URL, json=copy.deepcopy(body))
        rows = stored_feedback(served.persistence.storage)
    assert first.status_code == 200, first.text
    assert first.json() == {"received": 1, "stored": 1, "duplicates": 0}
    assert again.status_code == 200
    assert again.json() == {"received": 1, "stored": 0, "duplicates": 1}
    assert len(rows) == 1
    row = rows[0]
    assert (row.card_uuid, row.outcome, row.card_known) == (card, "overridden", True)
    assert (row.override_system, row.override_code) == (
        "http://example.org/override",
        "already-done",
    )
    assert row.override_comment == "done last week"
    assert row.outcome_at == datetime(2026, 11, 23, 10, tzinfo=UTC)
    assert row.service_id == "cardiac-ct-order-sign"


async def test_same_instant_in_another_spelling_is_the_same_item(settings: Settings) -> None:
    served = ServedApp(settings)
    async with served as client:
        one = await client.post(FEEDBACK_URL, json={"feedback": [overridden("c-1")]})
        same = await client.post(
            FEEDBACK_URL, json={"feedback": [overridden("c-1", "2026-11-23T11:00:00.000+01:00")]}
        )
        later = await client.post(
            FEEDBACK_URL, json={"feedback": [overridden("c-1", "2026-11-23T10:05:00Z")]}
        )
        rows = stored_feedback(served.persistence.storage)
    assert [r.json()["stored"] for r in (one, same, later)] == [1, 0, 1]
    assert len(rows) == 2


async def test_unknown_card_is_kept_but_flagged(settings: Settings) -> None:
    served = ServedApp(settings)
    async with served as client:
        card = await issue_card(client)
        await served.drain_audit()
        response = await client.post(
            FEEDBACK_URL,
            json={
                "feedback": [
                    {
                        "card": card,
                        "outcome": "accepted",
                        "acceptedSuggestions": [{"id": "sugg-1"}],
                        "outcomeTimestamp": "2026-11-23T10:00:00Z",
                    },
                    overridden("never-issued-card"),
                ]
            },
        )
        rows = stored_feedback(served.persistence.storage)
    assert response.status_code == 200, response.text
    assert {(r.card_uuid, r.card_known) for r in rows} == {
        (card, True),
        ("never-issued-card", False),
    }
    accepted = next(r for r in rows if r.outcome == "accepted")
    assert accepted.accepted_suggestions == ["sugg-1"]
    assert accepted.override_code is None


def test_card_still_queued_for_the_audit_writer_counts_as_issued(storage: Storage) -> None:
    entry = FeedbackEntry("queued-card", "overridden", datetime.now(UTC), "now")
    result = storage.record_feedback(
        [entry],
        service_id="svc",
        client_iss=None,
        received_at=datetime.now(UTC),
        cards_pending={"queued-card"},
    )
    assert result.unknown_cards == 0
    assert stored_feedback(storage)[0].card_known is True


def test_card_already_written_counts_as_issued(storage: Storage) -> None:
    now = datetime.now(UTC)
    storage.write_audit(
        [AuditRecord("call-1", now, "svc", 200, 1.0, cards=(AuditCard("c-9", "t", "info"),))]
    )
    entries = [FeedbackEntry("c-9", "overridden", now, "now")]
    result = storage.record_feedback(entries, service_id="svc", client_iss=None, received_at=now)
    assert (result.stored, result.unknown_cards) == (1, 0)


async def test_pre_2_0_sandbox_reason_without_wrapper_is_understood(settings: Settings) -> None:
    item = {
        "card": "c-2",
        "outcome": "overridden",
        "overrideReason": {"code": "d7ecf885", "system": "https://example.com/reasons"},
        "outcomeTimestamp": "2026-11-23T10:00:00Z",
    }
    served = ServedApp(settings)
    async with served as client:
        response = await client.post(FEEDBACK_URL, json={"feedback": [item]})
        rows = stored_feedback(served.persistence.storage)
    assert response.status_code == 200
    assert (rows[0].override_system, rows[0].override_code) == (
        "https://example.com/reasons",
        "d7ecf885",
    )


async def test_malformed_feedback_is_refused_and_nothing_is_stored(settings: Settings) -> None:
    bad_items = [
        overridden("c-3", "yesterday"),
        {"card": "c-4", "outcome": "accepted", "outcomeTimestamp": "2026-11-23T10:00:00Z"},
        {"card": "c-5", "outcome": "ignored", "outcomeTimestamp": "2026-11-23T10:00:00Z"},
    ]
    served = ServedApp(settings)
    async with served as client:
        responses = [
            await client.post(FEEDBACK_URL, json={"feedback": [overridden("ok-card"), item]})
            for item in bad_items
        ]
        rows = stored_feedback(served.persistence.storage)
    for response in responses:
        assert response.status_code == 400, response.text
        assert response.json()["resourceType"] == "OperationOutcome"
    assert "outcomeTimestamp" in responses[0].json()["issue"][0]["diagnostics"]
    assert rows == []
