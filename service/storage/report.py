"""Override analytics: of the cards issued in a period, how many were accepted or overridden,
per topic, per payer profile and per override reason.

Each card counts once, with its latest feedback outcome (a client may report a card again).
Feedback for cards the service has no record of is counted apart, never in the rates.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from service.storage.models import CardFeedback, HookCall, IssuedCardRow
from service.storage.store import Storage

NO_PAYER = "(none)"
DEFAULT_PERIOD = timedelta(days=30)


@dataclass
class Tally:
    issued: int = 0
    accepted: int = 0
    overridden: int = 0
    silent: int = 0  # cards of silent topics: would have been shown, never were

    @property
    def override_rate(self) -> float | None:
        """Overridden / (accepted + overridden): of the cards acted on, how many were refused."""
        answered = self.accepted + self.overridden
        return self.overridden / answered if answered else None

    @property
    def override_rate_of_issued(self) -> float | None:
        return self.overridden / self.issued if self.issued else None

    @property
    def fires(self) -> int:
        """Cards the topic produced: shown plus silent."""
        return self.issued + self.silent

    @property
    def ignored(self) -> int:
        """Shown, and no feedback came back."""
        return self.issued - self.accepted - self.overridden

    def add(self, outcome: str | None, mode: str = "active") -> None:
        if mode == "silent":
            self.silent += 1  # never shown: no outcome, not in the rates
            return
        self.issued += 1
        if outcome == "accepted":
            self.accepted += 1
        elif outcome == "overridden":
            self.overridden += 1

    def wire(self) -> dict[str, Any]:
        return {
            "issued": self.issued,
            "accepted": self.accepted,
            "overridden": self.overridden,
            "overrideRate": _rounded(self.override_rate),
            "overrideRateOfIssued": _rounded(self.override_rate_of_issued),
            "silent": self.silent,
        }


@dataclass(frozen=True)
class ReasonKey:
    system: str | None
    code: str | None
    display: str | None

    @property
    def label(self) -> str:
        if self.code is None:
            return "(no reason given)"
        return f"{self.display} [{self.code}]" if self.display else self.code


@dataclass
class OverrideReport:
    since: datetime
    until: datetime
    total: Tally = field(default_factory=Tally)
    by_topic: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    by_payer_profile: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    by_reason: Counter[ReasonKey] = field(default_factory=Counter)
    unknown_cards: Counter[str] = field(default_factory=Counter)  # outcome -> count

    def wire(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "total": self.total.wire(),
            "byTopic": [{"topic": k, **t.wire()} for k, t in sorted(self.by_topic.items())],
            "byPayerProfile": [
                {"payerProfile": k, **t.wire()} for k, t in sorted(self.by_payer_profile.items())
            ],
            "byOverrideReason": [
                {"system": k.system, "code": k.code, "display": k.display, "overridden": n}
                for k, n in self.by_reason.most_common()
            ],
            "unknownCardFeedback": {
                "accepted": self.unknown_cards["accepted"],
                "overridden": self.unknown_cards["overridden"],
            },
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def parse_bound(value: str, *, end: bool) -> datetime:
    """A date (a whole UTC day; `until` includes it) or an ISO 8601 date-time (UTC if naive)."""
    if len(value) == 10:
        day = date.fromisoformat(value)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return start + timedelta(days=1) if end else start
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def period(since: str | None, until: str | None, now: datetime) -> tuple[datetime, datetime]:
    """[since, until): defaults are the last 30 days. Raises ValueError on bad input."""
    end = parse_bound(until, end=True) if until else now
    start = parse_bound(since, end=False) if since else end - DEFAULT_PERIOD
    if start >= end:
        raise ValueError("since must be before until")
    return start, end


@dataclass(frozen=True)
class CardOutcome:
    """An issued card with its latest feedback outcome (None: no feedback)."""

    card_uuid: str
    topic: str
    payer_profile: str | None
    mode: str  # "active" | "silent"
    received_at: datetime
    outcome: str | None
    override_reason: ReasonKey | None  # when the latest outcome is "overridden"


def card_outcomes(session: Session, *conditions: ColumnElement[bool]) -> list[CardOutcome]:
    """The issued cards of the hook calls matching `conditions`, each with its latest feedback
    (a client may report a card again: the last one by outcome time wins). The one reading of
    outcomes behind the override report and the dashboard."""
    cards = session.execute(
        select(
            IssuedCardRow.card_uuid,
            IssuedCardRow.topic,
            IssuedCardRow.payer_profile,
            IssuedCardRow.mode,
            HookCall.received_at,
        )
        .join(HookCall)
        .where(*conditions)
    ).all()
    issued = select(IssuedCardRow.card_uuid).join(HookCall).where(*conditions)
    feedback = session.execute(
        select(
            CardFeedback.card_uuid,
            CardFeedback.outcome,
            CardFeedback.override_system,
            CardFeedback.override_code,
            CardFeedback.override_display,
        )
        .where(CardFeedback.card_uuid.in_(issued))
        .order_by(CardFeedback.outcome_at, CardFeedback.id)
    ).all()
    latest = {f.card_uuid: f for f in feedback}  # ordered by time: the last one wins
    found = []
    for card_uuid, topic, payer_profile, mode, received_at in cards:
        answer = latest.get(card_uuid)
        outcome = answer.outcome if answer else None
        reason = (
            ReasonKey(answer.override_system, answer.override_code, answer.override_display)
            if answer is not None and outcome == "overridden"
            else None
        )
        found.append(
            CardOutcome(card_uuid, topic, payer_profile, mode, received_at, outcome, reason)
        )
    return found


def build_report(storage: Storage, since: datetime, until: datetime) -> OverrideReport:
    """Read the period's issued cards and their feedback (blocking: run in a worker thread)."""
    storage.ensure_schema()
    report = OverrideReport(since, until)
    in_period = (HookCall.received_at >= since) & (HookCall.received_at < until)
    with storage.session() as session:
        cards = card_outcomes(session, in_period)
        unknown = session.execute(
            select(CardFeedback.card_uuid, CardFeedback.outcome)
            .where(~CardFeedback.card_uuid.in_(select(IssuedCardRow.card_uuid)))
            .where((CardFeedback.outcome_at >= since) & (CardFeedback.outcome_at < until))
            .order_by(CardFeedback.outcome_at, CardFeedback.id)
        ).all()
    for card in cards:
        for tally in (
            report.total,
            report.by_topic[card.topic],
            report.by_payer_profile[card.payer_profile or NO_PAYER],
        ):
            tally.add(card.outcome, card.mode)
        if card.override_reason is not None:
            report.by_reason[card.override_reason] += 1
    report.unknown_cards.update(dict(unknown).values())
    return report


def as_csv(report: OverrideReport) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "section",
            "group",
            "issued",
            "accepted",
            "overridden",
            "override_rate",
            "override_rate_of_issued",
            "silent",
        ]
    )
    sections: Iterable[tuple[str, dict[str, Tally]]] = (
        ("total", {"all": report.total}),
        ("topic", dict(sorted(report.by_topic.items()))),
        ("payer_profile", dict(sorted(report.by_payer_profile.items()))),
    )
    for section, groups in sections:
        for name, tally in groups.items():
            writer.writerow(
                [
                    section,
                    name,
                    tally.issued,
                    tally.accepted,
                    tally.overridden,
                    _csv_rate(tally.override_rate),
                    _csv_rate(tally.override_rate_of_issued),
                    tally.silent,
                ]
            )
    for reason, count in report.by_reason.most_common():
        writer.writerow(["override_reason", reason.label, "", "", count, "", "", ""])
    for outcome in ("accepted", "overridden"):
        count = report.unknown_cards[outcome]
        writer.writerow(["unknown_card", outcome, "", "", count, "", "", ""])
    return buffer.getvalue()


def _csv_rate(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def print_table(report: OverrideReport, console: Console) -> None:
    console.print(
        f"Cards issued from {report.since:%Y-%m-%d %H:%M} up to {report.until:%Y-%m-%d %H:%M} UTC",
        style="bold",
    )
    for title, groups in (
        ("By topic", report.by_topic),
        ("By payer profile", report.by_payer_profile),
    ):
        table = Table(title=title, title_justify="left")
        # Topic codes are what rule owners search for: never truncate them.
        table.add_column("group", no_wrap=True, min_width=max(map(len, groups), default=5))
        for column in ("issued", "accepted", "overridden", "override\nrate", "of\nissued"):
            table.add_column(column, justify="right")
        for name, tally in sorted(groups.items()):
            table.add_row(escape(name), *_cells(tally))
        table.add_section()
        table.add_row("all", *_cells(report.total), style="bold")
        console.print(table)
    reasons = Table(title="Override reasons", title_justify="left")
    reasons.add_column("reason")
    reasons.add_column("overridden", justify="right")
    reasons.add_column("share", justify="right")
    for reason, count in report.by_reason.most_common():
        share = _percent(count / report.total.overridden)
        reasons.add_row(escape(reason.label), str(count), share)
    console.print(reasons)
    if report.unknown_cards:
        console.print(
            f"Feedback for unknown cards (not in the rates): "
            f"{report.unknown_cards['accepted']} accepted, "
            f"{report.unknown_cards['overridden']} overridden"
        )


def _cells(tally: Tally) -> list[str]:
    return [
        str(tally.issued),
        str(tally.accepted),
        str(tally.overridden),
        _percent(tally.override_rate),
        _percent(tally.override_rate_of_issued),
    ]
