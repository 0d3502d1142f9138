"""The stored tables. Minimum PHI: ids and codes, never whole FHIR resources."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on SQLite (which has no time zones) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UtcDateTime, dict[str, Any]: JSON, list[str]: JSON}


class HookCall(Base):
    """One CDS Hooks service call, answered or rejected (CRD: log every hook call)."""

    __tablename__ = "hook_call"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # generated at enqueue
    received_at: Mapped[datetime] = mapped_column(index=True)
    service_id: Mapped[str] = mapped_column(String(200))
    status: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    hook: Mapped[str | None] = mapped_column(String(100))
    hook_instance: Mapped[str | None] = mapped_column(String(200), index=True)
    client_iss: Mapped[str | None] = mapped_column(String(500))
    patient_id: Mapped[str | None] = mapped_column(String(200))
    order_ids: Mapped[list[str]] = mapped_column(default=list)
    # prefetch key -> "prefetch" | "fetched" | "null" | "unavailable"
    data_sources: Mapped[dict[str, Any]] = mapped_column(default=dict)
    coverage_assertion_ids: Mapped[list[str]] = mapped_column(default=list)
    payer_profile: Mapped[str | None] = mapped_column(String(200))

    cards: Mapped[list[IssuedCardRow]] = relationship(
        back_populates="call", cascade="all, delete-orphan", passive_deletes=True
    )


class IssuedCardRow(Base):
    """A card the service returned; feedback links to it by uuid."""

    __tablename__ = "issued_card"

    call_id: Mapped[str] = mapped_column(
        ForeignKey("hook_call.id", ondelete="CASCADE"), primary_key=True
    )
    card_uuid: Mapped[str] = mapped_column(String(200), primary_key=True)
    topic: Mapped[str] = mapped_column(String(100))
    indicator: Mapped[str] = mapped_column(String(20))
    order_refs: Mapped[list[str]] = mapped_column(default=list)
    payer_profile: Mapped[str | None] = mapped_column(String(200))
    # "active": returned to the EHR; "silent": rendered for the audit trail only (rule owners
    # see what it would have said before switching it on).
    mode: Mapped[str] = mapped_column(String(10), default="active", server_default="active")

    call: Mapped[HookCall] = relationship(back_populates="cards")

    __table_args__ = (Index("ix_issued_card_card_uuid", "card_uuid"),)


class CardFeedback(Base):
    """One feedback item; the same card + outcome + timestamp is stored once."""

    __tablename__ = "card_feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    card_uuid: Mapped[str] = mapped_column(String(200), index=True)
    outcome: Mapped[str] = mapped_column(String(20))
    outcome_at: Mapped[datetime] = mapped_column(index=True)
    outcome_timestamp: Mapped[str] = mapped_column(String(100))  # as sent
    accepted_suggestions: Mapped[list[str]] = mapped_column(default=list)
    override_system: Mapped[str | None] = mapped_column(String(500))
    override_code: Mapped[str | None] = mapped_column(String(200))
    override_display: Mapped[str | None] = mapped_column(String(500))
    override_comment: Mapped[str | None] = mapped_column(Text)
    service_id: Mapped[str] = mapped_column(String(200))
    client_iss: Mapped[str | None] = mapped_column(String(500))
    received_at: Mapped[datetime] = mapped_column(index=True)
    # False: no card with this uuid was issued (or it was purged); kept for the analysis anyway.
    card_known: Mapped[bool]

    __table_args__ = (
        UniqueConstraint("card_uuid", "outcome", "outcome_at", name="uq_card_feedback_item"),
    )
