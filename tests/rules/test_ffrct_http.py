"""FFR-CT cards end to end over HTTP: suggestion actions, unavailable data, the date of service.

Requests start from the scenario fixtures (realistic, complete prefetch) and change one thing.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from service.pipeline import Knowledge
from service.render.cards import SUMMARY_LIMIT, placeholders
from tests.support.conformance import conformant_body, topics

SCENARIOS = Path(__file__).resolve().parents[2] / "fhir_fixtures" / "scenarios"
URL = "/cds-services/cardiac-ct-order-sign"


def scenario_request(name: str) -> dict[str, Any]:
    request: dict[str, Any] = json.loads((SCENARIOS / f"{name}.json").read_text())["request"]
    return request


async def post(
    make_settings: Any, app_client: Any, request: dict[str, Any], today: date | None = None
) -> dict[str, Any]:
    client_cm = app_client(make_settings())
    async with client_cm as client:
        if today is not None:
            client_cm.app.state.runtime.today = lambda: today
        response = await client.post(URL, json=request)
    return conformant_body(response)


def card(body: dict[str, Any], topic: str) -> dict[str, Any]:
    found = [c for c in body["cards"] if c["source"]["topic"]["code"] == topic]
    assert len(found) == 1, topics(body)
    return found[0]


async def test_ccta_missing_suggests_a_75574_order_with_the_reasons(
    make_settings: Any, app_client: Any
) -> None:
    request = scenario_request("ffrct-ccta-missing-positive")
    body = await post(make_settings, app_client, request)
    (action,) = card(body, "ffrct-ccta-missing")["suggestions"][0]["actions"]
    assert action["type"] == "create"
    new_order = action["resource"]
    assert new_order["resourceType"] == "ServiceRequest"
    assert new_order["code"]["coding"] == [
        {"system": "http://www.ama-assn.org/go/cpt", "code": "75574"}
    ]
    ffrct_order = request["context"]["draftOrders"]["entry"][0]["resource"]
    assert new_order["reasonCode"] == ffrct_order["reasonCode"]
    assert new_order["subject"] == {"reference": f"Patient/{request['context']['patientId']}"}


async def test_legacy_code_update_keeps_the_order_and_sets_75580(
    make_settings: Any, app_client: Any
) -> None:
    body = await post(make_settings, app_client, scenario_request("ffrct-legacy-code-positive"))
    chosen = card(body, "ffrct-legacy-code")
    assert "0501T" in chosen["summary"]
    (action,) = chosen["suggestions"][0]["actions"]
    assert action["type"] == "update"
    assert action["resource"]["id"] == "ffr"
    assert action["resource"]["code"]["coding"] == [
        {"system": "http://www.ama-assn.org/go/cpt", "code": "75580"}
    ]


async def test_duplicate_draft_is_the_one_deleted(make_settings: Any, app_client: Any) -> None:
    body = await post(
        make_settings, app_client, scenario_request("ffrct-duplicate-positive-two-drafts")
    )
    (action,) = card(body, "ffrct-duplicate")["suggestions"][0]["actions"]
    assert action == {
        "type": "delete",
        "description": action["description"],
        "resourceId": "ServiceRequest/ffr-2",
    }


async def test_order_select_deletes_only_the_selected_twin(
    make_settings: Any, app_client: Any
) -> None:
    """Review M9: the user selected ServiceRequest/ffr; the card must not act on ffr-2."""
    request = scenario_request("ffrct-duplicate-edge-order-select-first-twin")
    async with app_client(make_settings()) as client:
        body = conformant_body(
            await client.post("/cds-services/cardiac-ct-order-select", json=request)
        )
    (action,) = card(body, "ffrct-duplicate")["suggestions"][0]["actions"]
    assert (action["type"], action["resourceId"]) == ("delete", "ServiceRequest/ffr")
    updated = {a["resource"]["id"] for a in body.get("systemActions", [])}
    assert "ffr-2" not in updated


@pytest.mark.parametrize(
    ("change", "checks"),
    [
        (
            {"reasonCode": [{"text": "Chest pain on exertion"}]},
            "symptoms; screening; excluded history (unstable angina, recent MI, stent or bypass)",
        ),
        (
            {"reasonReference": [{"reference": "Condition/elsewhere"}]},
            "symptoms; screening; excluded history (unstable angina, recent MI, stent or bypass)",
        ),
        (
            {"supportingInfo": [{"reference": "DiagnosticReport/outside-ccta"}]},
            "CCTA on file; stenosis",
        ),
    ],
)
async def test_unreadable_order_content_names_the_skipped_checks(
    make_settings: Any, app_client: Any, change: dict[str, Any], checks: str
) -> None:
    """Review H3, H6, L1: what silenced a check is on the data-incomplete card."""
    base = "clean-ffrct-medicare-symptomatic" if "supportingInfo" in change else None
    request = scenario_request(base or "ffrct-symptoms-missing-positive")
    order = request["context"]["draftOrders"]["entry"][0]["resource"]
    if base is None:
        order.pop("reasonCode", None)
    order.update(change)
    body = await post(make_settings, app_client, request)
    assert topics(body) == ["data-incomplete"]
    assert f"**Checks not run:** {checks}." in card(body, "data-incomplete")["detail"]


@pytest.mark.parametrize("key", ["cctaReports", "imagingStudies"])
async def test_unreadable_ccta_data_is_not_reported_as_a_missing_ccta(
    make_settings: Any, app_client: Any, key: str
) -> None:
    request = scenario_request("ffrct-ccta-missing-positive")
    request["prefetch"][key] = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout"}],
    }
    body = await post(make_settings, app_client, request)
    assert "ffrct-ccta-missing" not in topics(body)


async def test_unreadable_conditions_do_not_mean_no_symptoms(
    make_settings: Any, app_client: Any
) -> None:
    request = scenario_request("ffrct-symptoms-missing-positive")
    del request["prefetch"]["conditions"]
    body = await post(make_settings, app_client, request)
    assert "ffrct-symptoms-missing" not in topics(body)
    request = scenario_request("ffrct-symptoms-missing-positive")
    assert "ffrct-symptoms-missing" in topics(await post(make_settings, app_client, request))


@pytest.mark.parametrize(
    ("today", "fires"), [(date(2026, 11, 20), True), (date(2026, 12, 15), False)]
)
async def test_acute_mi_window_counts_from_today_without_an_occurrence_date(
    make_settings: Any, app_client: Any, today: date, fires: bool
) -> None:
    request = scenario_request("ffrct-excluded-history-positive-recent-mi")
    del request["context"]["draftOrders"]["entry"][0]["resource"]["occurrenceDateTime"]
    body = await post(make_settings, app_client, request, today=today)
    assert ("ffrct-excluded-history" in topics(body)) is fires


def test_filled_summaries_fit_the_cds_hooks_limit() -> None:
    """Worst plausible placeholder values must not need truncation."""
    worst = {
        "order": "FFR-CT analysis of coronary CTA data (noninvasive estimated coronary FFR)",
        "reason_code": "Z00.01",
        "stenosis": "CAD-RADS 4B (70-100 %)",
        "range": "40-90 %",
        "ccta_date": "2026-11-10",
        "legacy_code": "0504T",
        "other": "an FFR-CT performed on an unknown date",
        "other_ref": "Procedure/ffr-done-2026",
        "first": "acute MI (I22.2) recorded on 2026-11-20 (onset date not documented)",
        "history": "history of coronary stent (Z95.5)",
    }
    templates = Knowledge.load().cards.templates
    for topic, template in templates.items():
        if not topic.startswith("ffrct-"):
            continue
        assert placeholders(template.summary) <= set(worst), topic
        filled = template.summary.format(**worst)
        assert len(filled) <= SUMMARY_LIMIT, (topic, len(filled))
