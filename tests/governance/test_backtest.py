"""Backtest: past orders evaluated from a FHIR server and from a Bulk Data export give the same
topics as the live hook for the same order on its date of service.

Each scenario whose prefetch is complete becomes a past order: its resources and its draft order
(as signed) are loaded into the in-process SEKMET FHIR server and written as NDJSON files; the
live hook is the same request evaluated with the order's date of service as today.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.backtest import run_backtest
from service.config import Settings
from service.facts.codes import CodeReader
from service.knowledge.catalogue import load_rule_data
from service.offline import evaluate_file, scenario_resources
from tests.support.fhir_json import PREFETCH_KEYS
from tests.support.fhir_server import FhirServer

SCENARIOS = Path(__file__).resolve().parents[2] / "fhir_fixtures" / "scenarios"
TEMPLATE_KEYS = set(PREFETCH_KEYS)


def _past_order_scenarios() -> list[Path]:
    """order-sign scenarios with one dated ServiceRequest draft, every prefetch key answered
    (no null, no OperationOutcome) and no per-call options: what a chart on file looks like."""
    chosen = []
    for path in sorted(SCENARIOS.glob("*.json")):
        request = json.loads(path.read_text(encoding="utf-8"))["request"]
        drafts = [e["resource"] for e in request["context"]["draftOrders"].get("entry", [])]
        prefetch = request.get("prefetch") or {}
        complete = set(prefetch) >= TEMPLATE_KEYS and all(
            isinstance(v, dict) and v.get("resourceType") != "OperationOutcome"
            for v in prefetch.values()
        )
        if (
            request["hook"] == "order-sign"
            and len(drafts) == 1
            and drafts[0]["resourceType"] == "ServiceRequest"
            and "occurrenceDateTime" in drafts[0]
            and complete
            and not request.get("extension")
        ):
            chosen.append(path)
    return chosen


PAST_ORDERS = _past_order_scenarios()
_RULE_DATA = load_rule_data()


def in_scope(order: dict[str, Any]) -> bool:
    found = CodeReader(_RULE_DATA).raw_concept(order.get("code"))
    return found is not None and _RULE_DATA.in_scope(found)


def test_there_are_past_orders_to_backtest() -> None:
    assert len(PAST_ORDERS) >= 20


def _chart(request: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any], date]:
    draft = copy.deepcopy(request["context"]["draftOrders"]["entry"][0]["resource"])
    draft["status"] = "active"  # signed
    others = [r for r in scenario_resources(request) if r["id"] != draft["id"]]
    return [*others, draft], draft, date.fromisoformat(draft["occurrenceDateTime"][:10])


async def _live_topics(settings: Settings, path: Path, day: date, tmp_path: Path) -> list[str]:
    response = await evaluate_file(settings, path, None, today=day)
    return sorted(card["source"]["topic"]["code"] for card in response["cards"])


def _topics_of(output: Path, order_ref: str) -> list[str] | None:
    """The order's topics in a backtest's results; None when it was not evaluated (not a
    cardiac CT order: the backtest searches those only)."""
    results = [json.loads(line) for line in (output / "results.ndjson").read_text().splitlines()]
    mine = [r for r in results if r["order"] == order_ref]
    if not mine:
        return None
    (result,) = mine
    assert result["error"] is None, result
    return sorted(result["topics"])


def _request_of(path: Path) -> dict[str, Any]:
    request: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))["request"]
    return request


@pytest.mark.parametrize("path", PAST_ORDERS, ids=lambda p: p.stem)
async def test_backtest_gives_the_live_topics(
    path: Path,
    fhir_server: FhirServer,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    resources, draft, day = _chart(_request_of(path))
    ref = f"ServiceRequest/{draft['id']}"
    settings = make_settings()
    live = await _live_topics(settings, path, day, tmp_path)

    await fhir_server.load(resources)
    async with httpx.AsyncClient(transport=fhir_server.transport) as http:
        from_server = await run_backtest(
            settings,
            since=day,
            until=day,
            output=tmp_path / "fhir",
            fhir_server=fhir_server.base_url,
            fhir_token=fhir_server.token,
            http=http,
        )
    export = tmp_path / "export"
    export.mkdir()
    for resource in resources:
        with (export / f"{resource['resourceType']}.ndjson").open("a", encoding="utf-8") as out:
            out.write(json.dumps(resource) + "\n")
    from_export = await run_backtest(
        settings, since=day, until=day, output=tmp_path / "ndjson", ndjson=export
    )

    expected = live if live or in_scope(draft) else None  # out of scope: not a past CT order
    assert _topics_of(tmp_path / "fhir", ref) == expected, "FHIR server backtest vs live hook"
    assert _topics_of(tmp_path / "ndjson", ref) == expected, "NDJSON backtest vs live hook"
    for summary in (from_server, from_export):
        assert summary["errors"] == 0
        assert summary["orders"] >= (1 if expected is not None else 0)
        for topic in live:
            assert summary["per_topic"][topic]["fires"] >= 1


async def test_orders_outside_the_range_are_not_evaluated(
    fhir_server: FhirServer, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    resources, _, day = _chart(_request_of(PAST_ORDERS[0]))
    await fhir_server.load(resources)
    async with httpx.AsyncClient(transport=fhir_server.transport) as http:
        summary = await run_backtest(
            make_settings(),
            since=date(day.year - 1, 1, 1),
            until=date(day.year - 1, 12, 31),
            output=tmp_path,
            fhir_server=fhir_server.base_url,
            fhir_token=fhir_server.token,
            http=http,
        )
    assert summary["orders"] == 0
    assert (tmp_path / "results.ndjson").read_text() == ""


def test_the_command_line_writes_csv_results_and_a_summary(tmp_path: Path) -> None:
    """`cardiac-ct-cds backtest --ndjson DIR --format csv`: the rule owner's path."""
    from typer.testing import CliRunner

    from service.cli import app

    path = next(p for p in PAST_ORDERS if p.stem == "cac-abn-original-medicare")
    resources, draft, day = _chart(_request_of(path))
    export = tmp_path / "export"
    export.mkdir()
    for resource in resources:
        with (export / f"{resource['resourceType']}.ndjson").open("a", encoding="utf-8") as out:
            out.write(json.dumps(resource) + "\n")
    output = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "backtest",
            *("--since", day.isoformat(), "--until", day.isoformat()),
            *("--ndjson", str(export), "--output", str(output), "--format", "csv"),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = (output / "results.csv").read_text().splitlines()
    assert lines[0].startswith("order,patient,dateOfService,topics,silentTopics,covered")
    assert any(line.startswith(f"ServiceRequest/{draft['id']},") for line in lines[1:])
    summary = json.loads((output / "summary.json").read_text())
    assert summary["source"] == "ndjson"
    assert summary["per_topic"]["cac-abn-required"]["per_100_orders"] > 0
