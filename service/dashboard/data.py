"""The dashboard's numbers, read from the audit trail and the feedback (blocking: run it in a
worker thread, as `build_report` is).

Counted as `service.storage.report` counts: each card once, with its latest feedback outcome;
silent cards apart (never shown, so never accepted or overridden); the override rate is
overridden / (accepted + overridden). Added here: fires (every card, active or silent),
ignored (shown, no feedback), buckets over time, and filters by service and topic.

Only ids, topics, codes and counts are read: never patient ids, order ids or free-text comments.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import String, cast, func, select
from sqlalchemy.sql.elements import ColumnElement

from service.dashboard.backtests import BacktestListing
from service.storage.models import HookCall, IssuedCardRow
from service.storage.report import NO_PAYER, ReasonKey, Tally, card_outcomes
from service.storage.store import Storage

Bucket = Literal["day", "week"]
DEFAULT_DAYS = 30
MAX_DAYS = 731
_CODE = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")
LIVE = "live"

COUNT_COLUMNS = (
    "fires",
    "issued",
    "accepted",
    "overridden",
    "ignored",
    "overrideRate",
    "overrideRateOfIssued",
    "silent",
)
# Every table of the page, its columns in order: the CSV download and data.json carry the same.
TABLES: dict[str, tuple[str, ...]] = {
    "topics": ("topic", *COUNT_COLUMNS),
    "timeline": ("bucket", "topic", *COUNT_COLUMNS),
    "payerProfiles": ("payerProfile", *COUNT_COLUMNS),
    "overrideReasons": ("system", "code", "display", "overridden", "share"),
    "backtestRuns": (
        "runId",
        "source",
        "since",
        "until",
        "started",
        "finished",
        "orders",
        "dataGapRate",
        "problem",
    ),
    "backtestTopics": ("topic", "run", "orders", "fires", "per100Orders"),
}


class FilterError(ValueError):
    """A query parameter the dashboard cannot use; the message names it."""


@dataclass(frozen=True)
class Filters:
    since: date
    until: date  # included
    service: str | None = None
    topic: str | None = None
    bucket: Bucket = "week"

    @classmethod
    def parse(
        cls,
        *,
        since: str | None,
        until: str | None,
        service: str | None,
        topic: str | None,
        bucket: str | None,
        today: date,
    ) -> Filters:
        last = _day(until, "until") if until else today
        first = _day(since, "since") if since else last - timedelta(days=DEFAULT_DAYS - 1)
        if first > last:
            raise FilterError("since must not be after until")
        if (last - first).days >= MAX_DAYS:
            raise FilterError(f"at most {MAX_DAYS} days at once")
        if bucket not in (None, "", "day", "week"):
            raise FilterError("bucket must be day or week")
        return cls(
            first,
            last,
            _code(service, "service"),
            _code(topic, "topic"),
            "day" if bucket == "day" else "week",
        )

    @property
    def start(self) -> datetime:
        return datetime(self.since.year, self.since.month, self.since.day, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """Exclusive: the day after `until`."""
        day = self.until + timedelta(days=1)
        return datetime(day.year, day.month, day.day, tzinfo=UTC)

    def query(self) -> dict[str, str]:
        """As GET parameters (for links to the CSV and JSON of the same view)."""
        found = {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "service": self.service or "",
            "topic": self.topic or "",
            "bucket": self.bucket,
        }
        return {k: v for k, v in found.items() if v}

    def bucket_of(self, moment: datetime) -> date:
        day = moment.astimezone(UTC).date()
        return day if self.bucket == "day" else day - timedelta(days=day.weekday())

    def buckets(self) -> list[date]:
        """Every bucket of the period, in order (weeks start on Monday)."""
        found, day = [], self.bucket_of(self.start)
        step = timedelta(days=1 if self.bucket == "day" else 7)
        while day <= self.until:
            found.append(day)
            day += step
        return found


def _day(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise FilterError(f"{name} must be a date, YYYY-MM-DD") from None


def _code(value: str | None, name: str) -> str | None:
    if not value:
        return None
    if not _CODE.match(value):
        raise FilterError(f"{name} is not a valid code")
    return value


class Counts(Tally):
    """The override report's tally (one counting rule), with what the dashboard shows too."""

    def wire(self) -> dict[str, Any]:
        return {"fires": self.fires, **super().wire(), "ignored": self.ignored}


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


@dataclass
class Dashboard:
    filters: Filters
    total: Counts = field(default_factory=Counts)
    by_topic: dict[str, Counts] = field(default_factory=lambda: defaultdict(Counts))
    by_bucket: dict[tuple[date, str], Counts] = field(default_factory=lambda: defaultdict(Counts))
    by_payer_profile: dict[str, Counts] = field(default_factory=lambda: defaultdict(Counts))
    by_reason: Counter[ReasonKey] = field(default_factory=Counter)
    live_orders: int = 0  # draft orders of in-scope order-sign calls answered (200)
    live_fires: Counter[str] = field(default_factory=Counter)  # cards of those calls
    backtests: BacktestListing = field(default_factory=lambda: BacktestListing(False))

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        overridden = sum(self.by_reason.values())
        return {
            "topics": [{"topic": k, **c.wire()} for k, c in sorted(self.by_topic.items())],
            "timeline": [
                {"bucket": b.isoformat(), "topic": t, **c.wire()}
                for (b, t), c in sorted(self.by_bucket.items())
            ],
            "payerProfiles": [
                {"payerProfile": k, **c.wire()} for k, c in sorted(self.by_payer_profile.items())
            ],
            "overrideReasons": [
                {
                    "system": k.system,
                    "code": k.code,
                    "display": k.display,
                    "overridden": n,
                    "share": _rounded(n / overridden),
                }
                for k, n in sorted(
                    self.by_reason.items(), key=lambda kv: (-kv[1], kv[0].code or "")
                )
            ],
            "backtestRuns": [
                {
                    "runId": run.summary.run_id if run.summary else run.directory,
                    "source": run.summary.source if run.summary else None,
                    "since": run.summary.since.isoformat() if run.summary else None,
                    "until": run.summary.until.isoformat() if run.summary else None,
                    "started": run.summary.started.isoformat() if run.summary else None,
                    "finished": run.summary.finished.isoformat() if run.summary else None,
                    "orders": run.summary.orders if run.summary else None,
                    "dataGapRate": run.summary.data_gap_rate if run.summary else None,
                    "problem": run.problem,
                }
                for run in self.backtests.runs
            ],
            "backtestTopics": self._backtest_topics(),
        }

    def _backtest_topics(self) -> list[dict[str, Any]]:
        """Fires per 100 orders per topic: live first, then each run (newest first)."""
        summaries = self.backtests.summaries
        if not summaries:
            return []
        topics = set(self.live_fires)
        for summary in summaries:
            topics |= set(summary.per_topic)
        if self.filters.topic:
            topics &= {self.filters.topic}
        rows: list[dict[str, Any]] = []
        for topic in sorted(topics):
            fires = self.live_fires[topic]
            per_100 = 100 * fires / self.live_orders if self.live_orders else None
            rows.append(
                {
                    "topic": topic,
                    "run": LIVE,
                    "orders": self.live_orders,
                    "fires": fires,
                    "per100Orders": _rounded(per_100, 2),
                }
            )
            for summary in summaries:
                found = summary.per_topic.get(topic)
                rows.append(
                    {
                        "topic": topic,
                        "run": summary.run_id,
                        "orders": summary.orders,
                        "fires": found.fires if found else 0,
                        "per100Orders": found.per_100_orders if found else 0.0,
                    }
                )
        return rows

    def wire(self) -> dict[str, Any]:
        return {
            "filters": {
                "since": self.filters.since.isoformat(),
                "until": self.filters.until.isoformat(),
                "service": self.filters.service,
                "topic": self.filters.topic,
                "bucket": self.filters.bucket,
            },
            "period": {
                "since": self.filters.start.isoformat(),
                "until": self.filters.end.isoformat(),
            },
            "total": self.total.wire(),
            "liveOrders": self.live_orders,
            "backtest": {"configured": self.backtests.configured, "note": self.backtests.note},
            "tables": self.tables(),
        }


def load_dashboard(
    storage: Storage, filters: Filters, backtests: BacktestListing | None = None
) -> Dashboard:
    """Read the period's cards, their latest feedback and the live order count (blocking)."""
    storage.ensure_schema()
    dashboard = Dashboard(filters, backtests=backtests or BacktestListing(False))
    calls: list[ColumnElement[bool]] = [
        HookCall.received_at >= filters.start,
        HookCall.received_at < filters.end,
    ]
    if filters.service:
        calls.append(HookCall.service_id == filters.service)
    cards = [*calls, IssuedCardRow.topic == filters.topic] if filters.topic else calls
    # The calls a back-test stands for: order-sign, answered, in scope (the chart was read).
    signed = [
        *calls,
        HookCall.hook == "order-sign",
        HookCall.status == 200,
        cast(HookCall.data_sources, String) != "{}",
    ]
    with storage.session() as session:
        cards_found = card_outcomes(session, *cards)
        if dashboard.backtests.summaries:
            orders = session.scalar(
                select(
                    func.coalesce(func.sum(func.json_array_length(HookCall.order_ids)), 0)
                ).where(*signed)
            )
            dashboard.live_orders = int(orders or 0)
            fired = session.execute(
                select(IssuedCardRow.topic, func.count())
                .join(HookCall)
                .where(*signed)
                .group_by(IssuedCardRow.topic)
            ).all()
            dashboard.live_fires.update({topic: int(n) for topic, n in fired})
    for card in cards_found:
        for counts in (
            dashboard.total,
            dashboard.by_topic[card.topic],
            dashboard.by_bucket[(filters.bucket_of(card.received_at), card.topic)],
            dashboard.by_payer_profile[card.payer_profile or NO_PAYER],
        ):
            counts.add(card.outcome, card.mode)
        if card.override_reason is not None:
            dashboard.by_reason[card.override_reason] += 1
    return dashboard


def as_csv(table: str, rows: list[dict[str, Any]]) -> str:
    """One table of data.json as CSV: the same columns, the same values (empty for null)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = TABLES[table]
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row[c] is None else _csv_safe(row[c]) for c in columns])
    return buffer.getvalue()


def _csv_safe(value: Any) -> str:
    """Text a spreadsheet would run as a formula (=, +, -, @ first) is quoted with a `'`."""
    text = str(value)
    if isinstance(value, str) and text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text
