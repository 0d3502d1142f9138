"""The dashboard's numbers on real rows (SQLite and PostgreSQL): the same as `build_report`, moved
by every filter, the same in CSV as in JSON, and never a patient or order id on any page."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.config import Settings
from service.dashboard.data import TABLES
from service.storage.report import build_report, period
from service.storage.store import Storage
from tests.dashboard.conftest import (
    BUNDLING,
    PRIOR_AUTH,
    RISK,
    SECRETS,
    SELECT,
    SIGN,
    admin_client,
    at,
    basic,
    make_backtest_dir,
    outcome,
    seed,
)
from tests.storage.test_report import load_known_dataset

NOVEMBER = {"since": "2026-11-01", "until": "2026-11-30"}
REPORT_KEYS = ("issued", "accepted", "overridden", "overrideRate", "overrideRateOfIssued", "silent")


async def get_json(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    response = await client.get("/dashboard/data.json", params={**NOVEMBER, **params})
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def by(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {row[key]: row for row in rows}


def report_view(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {row[key]: {k: row[k] for k in REPORT_KEYS} for row in rows}


@pytest.mark.parametrize("dataset", [seed, load_known_dataset], ids=["dashboard", "report"])
async def test_the_numbers_are_build_reports(
    dataset: Callable[[Storage], None],
    admin_settings: Callable[..., Settings],
    storage: Storage,
) -> None:
    dataset(storage)
    start, end = period(NOVEMBER["since"], NOVEMBER["until"], datetime.now(UTC))
    report = build_report(storage, start, end).wire()
    async with admin_client(admin_settings(), auth=basic()) as client:
        data = await get_json(client)
    tables = data["tables"]
    assert data["period"] == {"since": report["since"], "until": report["until"]}
    assert {k: data["total"][k] for k in REPORT_KEYS} == report["total"]
    assert report_view(tables["topics"], "topic") == report_view(report["byTopic"], "topic")
    assert report_view(tables["payerProfiles"], "payerProfile") == report_view(
        report["byPayerProfile"], "payerProfile"
    )
    reasons = Counter(
        {(r["system"], r["code"], r["display"]): r["overridden"] for r in tables["overrideReasons"]}
    )
    expected = Counter(
        {
            (r["system"], r["code"], r["display"]): r["overridden"]
            for r in report["byOverrideReason"]
        }
    )
    assert reasons == expected
    for row in tables["topics"] + tables["payerProfiles"]:
        assert row["fires"] == row["issued"] + row["silent"]
        assert row["ignored"] == row["issued"] - row["accepted"] - row["overridden"]


async def test_known_numbers_and_every_filter_moves_them(
    admin_settings: Callable[..., Settings], storage: Storage
) -> None:
    seed(storage)
    async with admin_client(admin_settings(), auth=basic()) as client:
        everything = await get_json(client)
        signed = await get_json(client, service=SIGN)
        selected = await get_json(client, service=SELECT)
        prior_auth = await get_json(client, topic=PRIOR_AUTH)
        later = await get_json(client, since="2026-11-09")
        daily = await get_json(client, bucket="day")
        october = await get_json(client, since="2026-10-01", until="2026-10-31")

    def totals(data: dict[str, Any]) -> tuple[int, ...]:
        t = data["total"]
        return (t["fires"], t["issued"], t["accepted"], t["overridden"], t["ignored"], t["silent"])

    assert totals(everything) == (8, 6, 2, 3, 1, 2)
    assert everything["total"]["overrideRate"] == 0.6
    assert totals(signed) == (6, 5, 2, 2, 1, 1)
    assert totals(selected) == (2, 1, 0, 1, 0, 1)
    assert totals(prior_auth) == (2, 2, 0, 2, 0, 0)
    assert totals(later) == (3, 2, 0, 1, 1, 1)
    assert totals(october) == (1, 1, 0, 1, 0, 0)
    assert [r["topic"] for r in prior_auth["tables"]["topics"]] == [PRIOR_AUTH]

    topics = by(everything["tables"]["topics"], "topic")
    assert topics[BUNDLING] == {
        "topic": BUNDLING,
        "fires": 4,
        "issued": 4,
        "accepted": 2,
        "overridden": 1,
        "ignored": 1,
        "overrideRate": 0.3333,
        "overrideRateOfIssued": 0.25,
        "silent": 0,
    }
    assert (topics[RISK]["silent"], topics[RISK]["issued"], topics[RISK]["overrideRate"]) == (
        2,
        0,
        None,
    )
    reasons = everything["tables"]["overrideReasons"]
    assert [(r["code"], r["overridden"], r["share"]) for r in reasons] == [
        ("already-done", 2, 0.6667),
        (None, 1, 0.3333),  # overridden without a reason
    ]
    payers = by(everything["tables"]["payerProfiles"], "payerProfile")
    assert (payers["medicare-original"]["fires"], payers["(none)"]["ignored"]) == (5, 1)

    weekly = {(r["bucket"], r["topic"]): r["fires"] for r in everything["tables"]["timeline"]}
    assert weekly == {
        ("2026-11-02", BUNDLING): 2,
        ("2026-11-02", PRIOR_AUTH): 2,
        ("2026-11-02", RISK): 1,
        ("2026-11-09", BUNDLING): 2,
        ("2026-11-09", RISK): 1,
    }
    per_day = {(r["bucket"], r["topic"]): r["fires"] for r in daily["tables"]["timeline"]}
    assert per_day[("2026-11-04", BUNDLING)] == 1
    assert per_day[("2026-11-11", RISK)] == 1
    assert sum(per_day.values()) == sum(weekly.values()) == 8


async def test_bad_filters_are_refused_with_the_reason(
    admin_settings: Callable[..., Settings], storage: Storage
) -> None:
    async with admin_client(admin_settings(), auth=basic()) as client:
        cases = {
            "since": {"since": "last week"},
            "since must not be after until": {"since": "2026-12-01", "until": "2026-11-01"},
            "bucket": {"bucket": "month"},
            "topic": {"topic": "<script>"},
            "at most": {"since": "2020-01-01", "until": "2026-11-30"},
        }
        for reason, params in cases.items():
            as_json = await client.get("/dashboard/data.json", params=params)
            as_page = await client.get("/dashboard", params=params)
            assert as_json.status_code == 400 and reason in as_json.json()["error"], params
            assert as_page.status_code == 400 and "<script>" not in as_page.text, params
        missing = await client.get("/dashboard/csv/patients.csv", params=NOVEMBER)
    assert missing.status_code == 404


async def test_every_csv_download_equals_its_json_table(
    admin_settings: Callable[..., Settings], storage: Storage, tmp_path: Path
) -> None:
    seed(storage)
    settings = admin_settings(backtest_dir=str(make_backtest_dir(tmp_path)))
    views = [{}, {"service": SIGN, "bucket": "day"}, {"topic": BUNDLING, "since": "2026-11-03"}]
    async with admin_client(settings, auth=basic()) as client:
        for view in views:
            data = await get_json(client, **view)
            for table, columns in TABLES.items():
                response = await client.get(
                    f"/dashboard/csv/{table}.csv", params={**NOVEMBER, **view}
                )
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/csv")
                assert "attachment" in response.headers["content-disposition"]
                reader = csv.reader(io.StringIO(response.text))
                assert next(reader) == list(columns)
                expected = [
                    ["" if row[c] is None else str(row[c]) for c in columns]
                    for row in data["tables"][table]
                ]
                assert list(reader) == expected, (table, view)
                assert data["tables"][table], f"{table} is empty: the check would prove nothing"


async def test_backtest_runs_beside_the_live_numbers(
    admin_settings: Callable[..., Settings], storage: Storage, tmp_path: Path
) -> None:
    seed(storage)
    unset = admin_settings()
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    empty = admin_settings(backtest_dir=str(empty_dir))
    runs = admin_settings(backtest_dir=str(make_backtest_dir(tmp_path)))
    async with admin_client(unset, auth=basic()) as client:
        none = await get_json(client)
        none_page = (await client.get("/dashboard", params=NOVEMBER)).text
    async with admin_client(empty, auth=basic()) as client:
        nothing = await get_json(client)
    async with admin_client(runs, auth=basic()) as client:
        found = await get_json(client)
        one_topic = await get_json(client, topic=PRIOR_AUTH)
        page = (await client.get("/dashboard", params=NOVEMBER)).text

    assert not none["backtest"]["configured"]
    assert "admin.backtest_dir" in none["backtest"]["note"]
    assert "admin.backtest_dir" in none_page and 'id="chart-backtest"' not in none_page
    assert none["tables"]["backtestRuns"] == none["tables"]["backtestTopics"] == []
    assert nothing["backtest"]["configured"] and "No back-test runs" in nothing["backtest"]["note"]

    runs_table = found["tables"]["backtestRuns"]
    assert [(r["runId"], r["problem"]) for r in runs_table] == [
        ("bt-newer", None),
        ("bt-older", None),
        ("broken", "summary.json unreadable (JSONDecodeError)"),
        ("running", "no summary.json (running, or stopped early)"),
    ]
    assert runs_table[0]["orders"] == 200 and runs_table[0]["dataGapRate"] == 0.02
    # Live: S1 (2 orders), S2 and S3 (1 each) are answered, in-scope order-sign calls;
    # S4 is order-select, S5 out of scope, S6 refused.
    assert found["liveOrders"] == 4
    comparison = {
        (r["topic"], r["run"]): r["per100Orders"] for r in found["tables"]["backtestTopics"]
    }
    assert comparison == {
        (BUNDLING, "live"): 75.0,
        (BUNDLING, "bt-newer"): 15.0,
        (BUNDLING, "bt-older"): 0.0,
        (PRIOR_AUTH, "live"): 50.0,
        (PRIOR_AUTH, "bt-newer"): 0.0,
        (PRIOR_AUTH, "bt-older"): 40.0,
        (RISK, "live"): 25.0,
        (RISK, "bt-newer"): 0.0,
        (RISK, "bt-older"): 0.0,
        ("ffrct-bmi-missing", "live"): 0.0,
        ("ffrct-bmi-missing", "bt-newer"): 5.0,
        ("ffrct-bmi-missing", "bt-older"): 0.0,
    }
    assert {r["topic"] for r in one_topic["tables"]["backtestTopics"]} == {PRIOR_AUTH}
    assert 'id="chart-backtest"' in page and "bt-newer" in page


async def test_no_patient_order_or_person_appears_anywhere(
    admin_settings: Callable[..., Settings], storage: Storage, tmp_path: Path
) -> None:
    """Every page of every view: HTML, JSON and each CSV carry ids of topics, services, payer
    profiles and reason codes only (the seeded rows hold patient and order ids, hookInstances,
    the client's issuer and a comment naming a person)."""
    seed(storage)
    settings = admin_settings(backtest_dir=str(make_backtest_dir(tmp_path)))
    texts: list[str] = []
    async with admin_client(settings, auth=basic()) as client:
        for view in ({}, {"bucket": "day"}, {"service": SIGN}, {"topic": PRIOR_AUTH}):
            params = {**NOVEMBER, **view}
            texts.append((await client.get("/dashboard", params=params)).text)
            texts.append((await client.get("/dashboard/data.json", params=params)).text)
            for table in TABLES:
                texts.append((await client.get(f"/dashboard/csv/{table}.csv", params=params)).text)
    assert all(texts)
    assert BUNDLING in texts[0] and "already-done" in texts[0]
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


async def test_plotly_js_comes_from_the_installed_package_and_is_cached(
    admin_settings: Callable[..., Settings], storage: Storage
) -> None:
    from plotly.offline import get_plotlyjs, get_plotlyjs_version

    path = f"/dashboard/static/plotly-{get_plotlyjs_version()}.min.js"
    async with admin_client(admin_settings(), auth=basic()) as client:
        page = await client.get("/dashboard", params=NOVEMBER)
        script = await client.get(path)
        revalidated = await client.get(path, headers={"If-None-Match": script.headers["etag"]})
        other_version = await client.get("/dashboard/static/plotly-0.0.1.min.js")
        own = await client.get("/dashboard/static/dashboard.js")
    assert f'src="{path}"' in page.text
    assert "cdn" not in page.text.lower()
    assert script.status_code == 200
    assert script.headers["content-encoding"] == "gzip"  # httpx decoded it
    assert script.text == get_plotlyjs()
    assert "max-age=31536000" in script.headers["cache-control"]
    assert revalidated.status_code == 304
    assert other_version.status_code == 404
    assert own.status_code == 200 and "Plotly.newPlot" in own.text


async def test_a_reason_text_from_a_client_is_shown_as_text(
    admin_settings: Callable[..., Settings], storage: Storage
) -> None:
    """Override reasons come from the EHR: no markup of theirs reaches the page or the charts
    (plotly.js reads <a href> and <b> in labels)."""
    seed(storage)
    markup = '<a href="https://evil.example/">click</a><script>alert(1)</script>'
    storage.record_feedback(
        [outcome("s3a", "overridden", at(10, 12), ("http://example.org/x", "odd", markup))],
        service_id=SIGN,
        client_iss=None,
        received_at=at(20),
    )
    async with admin_client(admin_settings(), auth=basic()) as client:
        page = (await client.get("/dashboard", params=NOVEMBER)).text
    assert '<a href="https://evil.example/' not in page and "<script>alert" not in page
    figures = page.split('id="dashboard-figures" type="application/json">')[1].split("</script>")[0]
    assert "\\u0026lt;a href" in figures  # the label, HTML-escaped for plotly, JSON-escaped


async def test_the_page_shows_the_configured_topic_modes(
    admin_settings: Callable[..., Settings], storage: Storage
) -> None:
    seed(storage)
    plain = admin_settings()
    rules = {
        "topic_modes": {"cac-risk-factor-missing": "silent"},
        "service_topic_modes": {"cardiac-ct-order-select": {"ffrct-bmi-missing": "off"}},
    }
    moded = plain.model_copy(update={"rules": plain.rules.model_copy(update=rules)})
    async with admin_client(plain, auth=basic()) as client:
        default = (await client.get("/dashboard", params=NOVEMBER)).text
    async with admin_client(moded, auth=basic()) as client:
        page = (await client.get("/dashboard", params=NOVEMBER)).text
    assert "Every topic is active for every service" in default
    table = page[page.index('<table id="topic-modes">') :]
    assert "<code>cac-risk-factor-missing</code></td><td>silent" in table
    assert "cardiac-ct-order-select</td><td><code>ffrct-bmi-missing</code></td><td>off" in table
