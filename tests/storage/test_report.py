"""Override analytics on a known dataset: the same numbers from the library, the CLI (table,
csv, json) and GET /analytics/overrides, which needs a client JWT like the hooks."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from service.cli import app as cli
from service.config import Settings
from service.storage.report import build_report, period
from service.storage.store import AuditCard, AuditRecord, FeedbackEntry, Storage
from tests.security.support import ISSUER, bearer, mint, one_trusted_client
from tests.storage.conftest import ServedApp

BUNDLING, PRIOR_AUTH = "cac-bundling-conflict", "prior-auth-required"
R1 = ("http://example.org/override", "already-done", "Already done")
R2 = ("http://example.org/override", "patient-declined", None)


def at(day: int, hour: int = 9, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def call(call_id: str, when: datetime, payer: str | None, *cards: tuple[str, str]) -> AuditRecord:
    return AuditRecord(
        call_id,
        when,
        "cardiac-ct-order-sign",
        200,
        12.5,
        hook="order-sign",
        hook_instance=f"hi-{call_id}",
        payer_profile=payer,
        cards=tuple(AuditCard(uuid, topic, "warning", (), payer) for uuid, topic in cards),
    )


def outcome(
    card: str, kind: str, when: datetime, reason: tuple[str, str, str | None] | None = None
) -> FeedbackEntry:
    system, code, display = reason or (None, None, None)
    return FeedbackEntry(
        card,
        kind,
        when,
        when.isoformat(),
        accepted_suggestions=("s-1",) if kind == "accepted" else (),
        override_system=system,
        override_code=code,
        override_display=display,
    )


def load_known_dataset(storage: Storage) -> None:
    storage.write_audit(
        [
            call("A", at(5), "medicare-original", ("a1", BUNDLING), ("a2", PRIOR_AUTH)),
            call("B", at(10), "horizon-bcbs-nj", ("b1", BUNDLING), ("b2", PRIOR_AUTH)),
            call("C", at(12), None, ("c1", BUNDLING)),
            call("D", at(20, month=10), "medicare-original", ("d1", BUNDLING)),  # before period
        ]
    )
    feedback = [
        outcome("a1", "accepted", at(5)),
        outcome("a2", "overridden", at(5), R1),
        outcome("b1", "overridden", at(10, 10), R1),
        outcome("b1", "accepted", at(10, 11)),  # changed mind: the latest outcome counts
        outcome("b2", "overridden", at(11), R2),
        outcome("d1", "overridden", at(2), R1),  # card issued before the period
        outcome("zz", "overridden", at(15), R1),  # never issued
        outcome("yy", "accepted", at(5, month=12)),  # never issued, after the period
    ]
    storage.record_feedback(feedback, service_id="svc", client_iss=ISSUER, received_at=at(20))


def rates(issued: int, accepted: int, overridden: int, rate: Any, of_issued: Any) -> dict[str, Any]:
    return {
        "issued": issued,
        "accepted": accepted,
        "overridden": overridden,
        "overrideRate": rate,
        "overrideRateOfIssued": of_issued,
        "silent": 0,
    }


EXPECTED: dict[str, Any] = {
    "since": "2026-11-01T00:00:00+00:00",
    "until": "2026-12-01T00:00:00+00:00",
    "total": rates(5, 2, 2, 0.5, 0.4),
    "byTopic": [
        {"topic": BUNDLING, **rates(3, 2, 0, 0.0, 0.0)},
        {"topic": PRIOR_AUTH, **rates(2, 0, 2, 1.0, 1.0)},
    ],
    "byPayerProfile": [
        {"payerProfile": "(none)", **rates(1, 0, 0, None, 0.0)},
        {"payerProfile": "horizon-bcbs-nj", **rates(2, 1, 1, 0.5, 0.5)},
        {"payerProfile": "medicare-original", **rates(2, 1, 1, 0.5, 0.5)},
    ],
    "byOverrideReason": [
        {"system": R1[0], "code": R1[1], "display": R1[2], "overridden": 1},
        {"system": R2[0], "code": R2[1], "display": None, "overridden": 1},
    ],
    "unknownCardFeedback": {"accepted": 0, "overridden": 1},
}


def test_report_numbers_on_a_known_dataset(storage: Storage) -> None:
    load_known_dataset(storage)
    start, end = period("2026-11-01", "2026-11-30", datetime.now(UTC))
    assert build_report(storage, start, end).wire() == EXPECTED


def test_period_bounds() -> None:
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    assert period(None, None, now) == (datetime(2026, 10, 24, 12, tzinfo=UTC), now)
    assert period("2026-11-01T06:00:00+02:00", "2026-11-02T00:00:00", now) == (
        datetime(2026, 11, 1, 4, tzinfo=UTC),
        datetime(2026, 11, 2, tzinfo=UTC),
    )
    for since, until in (("2026-11-30", "2026-11-01"), ("last week", None)):
        with pytest.raises(ValueError):
            period(since, until, now)


def config_file(tmp_path: Path, database_url: str) -> Path:
    path = tmp_path / "report.toml"
    path.write_text(
        f'public_base_url = "http://cds.test"\nenvironment = "test"\n'
        f'[auth]\nenabled = false\n[storage]\nurl = "{database_url}"\n',
        encoding="utf-8",
    )
    return path


def run_report(tmp_path: Path, database_url: str, *options: str) -> str:
    args = ["report", "--since", "2026-11-01", "--until", "2026-11-30"]
    args += [*options, "--config", str(config_file(tmp_path, database_url))]
    result = CliRunner().invoke(cli, args, env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_cli_report_json_csv_and_table(storage: Storage, database_url: str, tmp_path: Path) -> None:
    load_known_dataset(storage)

    assert json.loads(run_report(tmp_path, database_url, "--format", "json")) == EXPECTED

    rows = list(csv.DictReader(io.StringIO(run_report(tmp_path, database_url, "--format", "csv"))))
    by_group = {(r["section"], r["group"]): r for r in rows}
    assert by_group[("total", "all")]["override_rate"] == "0.5000"
    assert by_group[("topic", PRIOR_AUTH)]["overridden"] == "2"
    assert by_group[("payer_profile", "(none)")]["override_rate"] == ""
    assert by_group[("override_reason", "Already done [already-done]")]["overridden"] == "1"
    assert by_group[("unknown_card", "overridden")]["overridden"] == "1"

    table = run_report(tmp_path, database_url)
    assert "By topic" in table and "By payer profile" in table and "Override reasons" in table
    assert "Already done [already-done]" in table  # brackets are text, not rich markup
    prior_auth_line = next(line for line in table.splitlines() if PRIOR_AUTH in line)
    cells = [cell.strip() for cell in prior_auth_line.split("│")[2:7]]
    assert cells == ["2", "0", "2", "100.0%", "100.0%"]


def test_cli_report_refuses_a_bad_period(database_url: str, tmp_path: Path) -> None:
    args = ["report", "--since", "yesterday", "--config", str(config_file(tmp_path, database_url))]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "invalid --since/--until" in result.stderr


ANALYTICS = "/analytics/overrides"


async def test_analytics_endpoint_needs_a_jwt_and_gives_the_report(
    make_settings: Any, database_url: str, storage: Storage, tmp_path: Path
) -> None:
    load_known_dataset(storage)
    auth, key = one_trusted_client(tmp_path)
    settings: Settings = make_settings(
        storage={"url": database_url},
        auth=auth,
    )
    query = {"since": "2026-11-01", "until": "2026-11-30"}
    async with ServedApp(settings) as client:
        anonymous = await client.get(ANALYTICS, params=query)
        wrong_audience = await client.get(
            ANALYTICS, params=query, headers=bearer(mint(key, "http://cds.test/cds-services"))
        )
        report = await client.get(
            ANALYTICS, params=query, headers=bearer(mint(key, f"http://cds.test{ANALYTICS}"))
        )
        bad_period = await client.get(
            ANALYTICS,
            params={"since": "2026-12-01", "until": "2026-11-01"},
            headers=bearer(mint(key, f"http://cds.test{ANALYTICS}")),
        )
    assert (anonymous.status_code, wrong_audience.status_code) == (401, 401)
    assert report.status_code == 200, report.text
    assert report.json() == EXPECTED
    assert bad_period.status_code == 400
    assert bad_period.json()["resourceType"] == "OperationOutcome"
