"""CDS Hooks feedback items -> what the store keeps.

Spec: https://cds-hooks.hl7.org/2.0/#feedback . Lenient where real clients differ: the sandbox
sends override reasons without `display`, and an early build sent `{code, system}` without the
`reason` wrapper. A timestamp that is not RFC 3339 is refused: it is part of the idempotency key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request

from service.api.errors import ProblemError
from service.cdshooks.models import FeedbackItem, FeedbackRequest, OverrideReason
from service.storage.service import Persistence, StorageUnavailable
from service.storage.store import FeedbackEntry

log = logging.getLogger("service.api")

_MAX_CODE = 200


def feedback_entries(parsed: FeedbackRequest) -> list[FeedbackEntry]:
    entries: list[FeedbackEntry] = []
    for index, item in enumerate(parsed.feedback):
        if item.outcome == "accepted" and not item.acceptedSuggestions:
            raise ProblemError(400, "feedback.acceptedSuggestions is required when accepted")
        entries.append(_entry(index, item))
    return entries


def _entry(index: int, item: FeedbackItem) -> FeedbackEntry:
    reason = _reason_coding(item.overrideReason) if item.outcome == "overridden" else {}
    return FeedbackEntry(
        card_uuid=item.card[:_MAX_CODE],
        outcome=item.outcome,
        outcome_at=_timestamp(index, item.outcomeTimestamp),
        outcome_timestamp=item.outcomeTimestamp[:100],
        accepted_suggestions=tuple(s.id[:_MAX_CODE] for s in item.acceptedSuggestions or []),
        override_system=_text(reason.get("system"), 500),
        override_code=_text(reason.get("code"), _MAX_CODE),
        override_display=_text(reason.get("display"), 500),
        override_comment=item.overrideReason.userComment if item.overrideReason else None,
    )


def _reason_coding(reason: OverrideReason | None) -> Mapping[str, Any]:
    if reason is None:
        return {}
    if reason.reason is not None:
        return reason.reason
    return reason.model_extra or {}  # pre-2.0 sandbox shape: the Coding itself


def _text(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _timestamp(index: int, value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ProblemError(
            400, f"feedback.{index}.outcomeTimestamp: not an RFC 3339 date-time"
        ) from None
    # RFC 3339 requires an offset; a client that omits it means UTC in practice.
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def persistence(request: Request) -> Persistence:
    store: Persistence = request.app.state.persistence
    return store


async def store_feedback(
    request: Request, service_id: str, client_iss: str | None, parsed: FeedbackRequest
) -> dict[str, int]:
    """Commit the items, then say how many were new; 503 when the database is unavailable
    (nothing was accepted, so the client may safely send the same feedback again)."""
    entries = feedback_entries(parsed)
    try:
        result = await persistence(request).record_feedback(
            entries, service_id=service_id, client_iss=client_iss
        )
    except StorageUnavailable:
        raise ProblemError(503, "feedback storage is unavailable; retry later") from None
    if result.unknown_cards:
        log.info("feedback for %d card(s) this service has no record of", result.unknown_cards)
    return {"stored": result.stored, "duplicates": result.duplicates}
