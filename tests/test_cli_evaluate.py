"""`cardiac-ct-cds evaluate` on scenario files: evaluated as of the scenario's `today`."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from service.cli import app
from service.offline import COVERAGE_INFO_URL

SCENARIOS = Path(__file__).resolve().parents[1] / "fhir_fixtures" / "scenarios"
OID_SCENARIO = SCENARIOS / "protocol-cpt-oid-system.json"


def _coverage_date(output: str) -> str:
    response = json.loads(output)
    extension = next(
        e
        for a in response["systemActions"]
        for e in a["resource"]["extension"]
        if e["url"] == COVERAGE_INFO_URL
    )
    return next(s["valueDate"] for s in extension["extension"] if s["url"] == "date")


def test_scenario_today_is_the_default() -> None:
    today = json.loads(OID_SCENARIO.read_text(encoding="utf-8"))["today"]
    result = CliRunner().invoke(app, ["evaluate", str(OID_SCENARIO), "--json"])
    assert result.exit_code == 0, result.output
    assert _coverage_date(result.output) == today


def test_today_option_wins() -> None:
    result = CliRunner().invoke(
        app, ["evaluate", str(OID_SCENARIO), "--json", "--today", "2027-02-03"]
    )
    assert result.exit_code == 0, result.output
    assert _coverage_date(result.output) == "2027-02-03"


def test_scenario_is_printed_with_its_expectations() -> None:
    result = CliRunner().invoke(app, ["evaluate", str(OID_SCENARIO)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Scenario: Calcium score coded with the CPT OID")
    assert "today: 2026-11-23" in result.output
    assert "Card topics: cac-abn-required   (as expected)" in result.output
    assert "Coverage ServiceRequest/cac-oid: as expected" in result.output


def test_a_differing_answer_is_flagged(tmp_path: Path) -> None:
    scenario = json.loads(OID_SCENARIO.read_text(encoding="utf-8"))
    scenario["expect"] = {"topics": [], "coverage": {"ServiceRequest/cac-oid": None}}
    path = tmp_path / "changed.json"
    path.write_text(json.dumps(scenario), encoding="utf-8")
    result = CliRunner().invoke(app, ["evaluate", str(path)])
    assert result.exit_code == 0, result.output
    assert "Card topics: cac-abn-required   (EXPECTED -)" in result.output
    assert "Coverage ServiceRequest/cac-oid: EXPECTED null" in result.output


def test_bad_today_is_a_clear_error() -> None:
    result = CliRunner().invoke(app, ["evaluate", str(OID_SCENARIO), "--today", "tomorrow"])
    assert result.exit_code == 2
    assert "cannot evaluate" in result.output


def test_offline_checks_a_request_as_the_api_does(tmp_path: Path) -> None:
    """One parse path: an order-select call without selections is refused offline too."""
    select = json.loads((SCENARIOS / "protocol-order-select-selected-cac.json").read_text())
    del select["request"]["context"]["selections"]
    path = tmp_path / "no-selections.json"
    path.write_text(json.dumps(select), encoding="utf-8")
    result = CliRunner().invoke(app, ["evaluate", str(path)])
    assert result.exit_code == 2
    assert "context.selections is required for order-select" in result.output
