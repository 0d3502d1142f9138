"""Synchronous storage operations. Callers run them in a worker thread (asyncio.to_thread)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Insert, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload, sessionmaker

from service.storage.database import make_engine, migrate
from service.storage.models import CardFeedback, HookCall, IssuedCardRow

SUPPORTED_BACKENDS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class AuditCard:
    uuid: str
    topic: str
    indicator: str
    order_refs: tuple[str, ...] = ()
    payer_profile: str | None = None
    mode: str = "active"  # "silent": rendered for the audit trail only, never returned


@dataclass(frozen=True)
class AuditRecord:
    """What is kept about one hook call: ids, codes and data sources, no resources."""

    id: str
    received_at: datetime
    service_id: str
    status: int
    latency_ms: float
    hook: str | None = None
    hook_instance: str | None = None
    client_iss: str | None = None
    patient_id: str | None = None
    order_ids: tuple[str, ...] = ()
    data_sources: Mapping[str, str] = field(default_factory=dict)
    coverage_assertion_ids: tuple[str, ...] = ()
    payer_profile: str | None = None
    cards: tuple[AuditCard, ...] = ()


@dataclass(frozen=True)
class FeedbackEntry:
    """One feedback item, already checked and normalised by the API layer."""

    card_uuid: str
    outcome: str  # "accepted" | "overridden"
    outcome_at: datetime
    outcome_timestamp: str
    accepted_suggestions: tuple[str, ...] = ()
    override_system: str | None = None
    override_code: str | None = None
    override_display: str | None = None
    override_comment: str | None = None


@dataclass(frozen=True)
class FeedbackResult:
    stored: int
    duplicates: int
    unknown_cards: int


@dataclass(frozen=True)
class PurgeResult:
    hook_calls: int
    feedback: int


class Storage:
    """One database: schema on first use, audit batches, feedback, retention purge."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = make_engine(url)
        if self.engine.dialect.name not in SUPPORTED_BACKENDS:
            raise ValueError(f"unsupported database {self.engine.dialect.name!r}")
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._schema_ready = False
        self._schema_lock = threading.Lock()

    @property
    def display_url(self) -> str:
        """The URL without its password, for logs."""
        return self.engine.url.render_as_string(hide_password=True)

    def ensure_schema(self) -> None:
        """Apply migrations once per process; retried on the next call if the DB was down."""
        with self._schema_lock:
            if not self._schema_ready:
                migrate(self.engine)
                self._schema_ready = True

    def write_audit(self, records: Sequence[AuditRecord]) -> None:
        """Write a batch in one transaction; rewriting a batch after a lost commit is harmless."""
        if not records:
            return
        self.ensure_schema()
        calls = [_call_row(r) for r in records]
        cards = [_card_row(r.id, c) for r in records for c in r.cards]
        with self._sessions.begin() as session:
            session.execute(self._insert_new(HookCall), calls)
            if cards:
                session.execute(self._insert_new(IssuedCardRow), cards)

    def record_feedback(
        self,
        entries: Sequence[FeedbackEntry],
        *,
        service_id: str,
        client_iss: str | None,
        received_at: datetime,
        cards_pending: Iterable[str] = (),
    ) -> FeedbackResult:
        """Store new items and commit before returning: the caller acknowledges only then.

        `cards_pending` are uuids of issued cards still queued for the audit writer.
        """
        self.ensure_schema()
        uuids = {e.card_uuid for e in entries}
        with self._sessions.begin() as session:
            known = set(cards_pending) & uuids
            known |= set(
                session.scalars(
                    select(IssuedCardRow.card_uuid).where(IssuedCardRow.card_uuid.in_(uuids))
                )
            )
            stored = 0
            for entry in entries:
                row = _feedback_row(entry, service_id, client_iss, received_at, known)
                # RETURNING, not rowcount: psycopg reports -1 for this statement.
                inserted = session.execute(
                    self._insert_new(CardFeedback).values(row).returning(CardFeedback.id)
                )
                stored += inserted.first() is not None
        return FeedbackResult(stored, len(entries) - stored, len(uuids - known))

    def purge(self, older_than: datetime) -> PurgeResult:
        """Delete hook calls (with their cards) and feedback received before `older_than`."""
        self.ensure_schema()
        with self._sessions.begin() as session:
            cards = delete(IssuedCardRow).where(
                IssuedCardRow.call_id.in_(
                    select(HookCall.id).where(HookCall.received_at < older_than)
                )
            )
            session.execute(cards)
            calls = session.execute(delete(HookCall).where(HookCall.received_at < older_than))
            feedback = session.execute(
                delete(CardFeedback).where(CardFeedback.received_at < older_than)
            )
        return PurgeResult(_count(calls), _count(feedback))

    def find_calls(self, hook_instance: str) -> list[dict[str, Any]]:
        """The audit records of the calls with this hookInstance, oldest first, each with its
        cards and the feedback on them: what a compliance lead needs to answer a dispute."""
        self.ensure_schema()
        with self._sessions() as session:
            calls = session.scalars(
                select(HookCall)
                .where(HookCall.hook_instance == hook_instance)
                .order_by(HookCall.received_at)
                .options(selectinload(HookCall.cards))
            ).all()
            uuids = [card.card_uuid for call in calls for card in call.cards]
            feedback = session.scalars(
                select(CardFeedback)
                .where(CardFeedback.card_uuid.in_(uuids))
                .order_by(CardFeedback.outcome_at)
            ).all()
        by_card: dict[str, list[dict[str, Any]]] = {}
        for item in feedback:
            by_card.setdefault(item.card_uuid, []).append(
                {
                    "outcome": item.outcome,
                    "outcomeTimestamp": item.outcome_timestamp,
                    "acceptedSuggestions": list(item.accepted_suggestions),
                    "overrideReason": item.override_code,
                    "overrideDisplay": item.override_display,
                    "comment": item.override_comment,
                    "clientIss": item.client_iss,
                }
            )
        return [
            {
                "id": call.id,
                "receivedAt": call.received_at.isoformat(),
                "serviceId": call.service_id,
                "hook": call.hook,
                "hookInstance": call.hook_instance,
                "status": call.status,
                "latencyMs": call.latency_ms,
                "clientIss": call.client_iss,
                "patientId": call.patient_id,
                "orderIds": list(call.order_ids),
                "dataSources": dict(call.data_sources),
                "payerProfile": call.payer_profile,
                "coverageAssertionIds": list(call.coverage_assertion_ids),
                "cards": [
                    {
                        "uuid": card.card_uuid,
                        "topic": card.topic,
                        "indicator": card.indicator,
                        "mode": card.mode,
                        "orderRefs": list(card.order_refs),
                        "feedback": by_card.get(card.card_uuid, []),
                    }
                    for card in call.cards
                ],
            }
            for call in calls
        ]

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self.engine.connect() as connection:
            connection.execute(select(1))

    def session(self) -> Session:
        return self._sessions()

    def dispose(self) -> None:
        self.engine.dispose()

    def _insert_new(self, model: type[Any]) -> Insert:
        """INSERT that silently skips rows whose key exists (idempotent writes)."""
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        statement: Insert = dialect.insert(model).on_conflict_do_nothing()
        return statement


def _count(result: object) -> int:
    return max(int(getattr(result, "rowcount", 0)), 0)


def _call_row(record: AuditRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "received_at": record.received_at,
        "service_id": record.service_id,
        "status": record.status,
        "latency_ms": record.latency_ms,
        "hook": record.hook,
        "hook_instance": record.hook_instance,
        "client_iss": record.client_iss,
        "patient_id": record.patient_id,
        "order_ids": list(record.order_ids),
        "data_sources": dict(record.data_sources),
        "coverage_assertion_ids": list(record.coverage_assertion_ids),
        "payer_profile": record.payer_profile,
    }


def _card_row(call_id: str, card: AuditCard) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "card_uuid": card.uuid,
        "topic": card.topic,
        "indicator": card.indicator,
        "order_refs": list(card.order_refs),
        "payer_profile": card.payer_profile,
        "mode": card.mode,
    }


def _feedback_row(
    entry: FeedbackEntry,
    service_id: str,
    client_iss: str | None,
    received_at: datetime,
    known: set[str],
) -> dict[str, Any]:
    return {
        "card_uuid": entry.card_uuid,
        "outcome": entry.outcome,
        "outcome_at": entry.outcome_at,
        "outcome_timestamp": entry.outcome_timestamp,
        "accepted_suggestions": list(entry.accepted_suggestions),
        "override_system": entry.override_system,
        "override_code": entry.override_code,
        "override_display": entry.override_display,
        "override_comment": entry.override_comment,
        "service_id": service_id,
        "client_iss": client_iss,
        "received_at": received_at,
        "card_known": entry.card_uuid in known,
    }
