"""Audit records and feedback older than audit_retention_days are purged; newer ones stay."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from service.config import Settings
from service.storage.models import CardFeedback, HookCall, IssuedCardRow
from service.storage.service import Persistence
from service.storage.store import AuditCard, AuditRecord, FeedbackEntry

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


async def test_purge_removes_only_what_is_past_retention(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_settings(storage={"url": database_url, "audit_retention_days": 30})
    persistence = Persistence(settings.storage, now=lambda: NOW)
    storage = persistence.storage
    try:
        ages = {"old": timedelta(days=31), "edge": timedelta(days=29, hours=23), "new": timedelta()}
        storage.write_audit(
            [
                AuditRecord(
                    name,
                    NOW - age,
                    "svc",
                    200,
                    1.0,
                    cards=(AuditCard(f"card-{name}", "topic", "info"),),
                )
                for name, age in ages.items()
            ]
        )
        for name, age in ages.items():
            entry = FeedbackEntry(f"card-{name}", "overridden", NOW - age, "t")
            storage.record_feedback(
                [entry], service_id="svc", client_iss=None, received_at=NOW - age
            )

        result = await persistence.purge()

        with storage.session() as session:
            calls = set(session.scalars(select(HookCall.id)))
            cards = set(session.scalars(select(IssuedCardRow.card_uuid)))
            feedback = set(session.scalars(select(CardFeedback.card_uuid)))
    finally:
        storage.dispose()
    assert (result.hook_calls, result.feedback) == (1, 1)
    assert calls == {"edge", "new"}
    assert cards == {"card-edge", "card-new"}
    assert feedback == {"card-edge", "card-new"}


async def test_purge_runs_at_startup(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    settings = make_settings(storage={"url": database_url, "audit_retention_days": 1})
    seed = Persistence(settings.storage)
    seed.storage.write_audit([AuditRecord("ancient", NOW - timedelta(days=400), "svc", 200, 1.0)])
    seed.storage.dispose()

    persistence = Persistence(settings.storage)
    await persistence.start()
    try:
        async with asyncio.timeout(30):  # the purge runs in the background: wait for it
            while _call_ids(persistence):  # noqa: ASYNC110 - another task's state
                await asyncio.sleep(0.05)
    finally:
        await persistence.stop()


def _call_ids(persistence: Persistence) -> list[str]:
    with persistence.storage.session() as session:
        return list(session.scalars(select(HookCall.id)))
