"""Suggestion actions agree with the coverage system action on the same order (review M7, L4)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from tests.support.conformance import conformant_body, topics

SCENARIOS = Path(__file__).resolve().parents[2] / "fhir_fixtures" / "scenarios"
ORDER_SIGN_URL = "/cds-services/cardiac-ct-order-sign"
COVERAGE_INFO_URL = (
    "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
)


def scenario_request(name: str) -> dict[str, Any]:
    data = json.loads((SCENARIOS / f"{name}.json").read_text())
    return copy.deepcopy(data["request"])


async def answer(app_client: Any, make_settings: Any, request: dict[str, Any]) -> Any:
    async with app_client(make_settings()) as client:
        response = await client.post(ORDER_SIGN_URL, json=request)
    return conformant_body(response)


async def test_legacy_code_update_keeps_other_codings_text_and_coverage_extension(
    app_client: Any, make_settings: Any
) -> None:
    request = scenario_request("crd-ffrct-legacy-code-billed-75580")
    sent = request["context"]["draftOrders"]["entry"][0]["resource"]
    body = await answer(app_client, make_settings, request)
    assert topics(body) == ["ffrct-legacy-code"]
    (suggested,) = body["cards"][0]["suggestions"][0]["actions"]
    (system,) = body["systemActions"]
    assert suggested["type"] == system["type"] == "update"
    updated = suggested["resource"]
    # Only the legacy CPT coding is replaced: the local charge code and code.text stay.
    assert updated["code"] == {
        "coding": [
            sent["code"]["coding"][0],
            {"system": "http://www.ama-assn.org/go/cpt", "code": "75580"},
        ],
        "text": sent["code"]["text"],
    }
    # The same resource the coverage system action returns, with the new code: applying the
    # suggestion after the system action keeps the coverage information.
    assert {k: v for k, v in updated.items() if k != "code"} == {
        k: v for k, v in system["resource"].items() if k != "code"
    }
    assert [e["url"] for e in updated["extension"]] == [COVERAGE_INFO_URL]


async def test_abn_task_names_the_code_medicare_is_billed(
    app_client: Any, make_settings: Any
) -> None:
    """An S8092 order under Original Medicare: S8092 is not a Medicare code (rules.md §1), so the
    ABN task and the card name CPT 75571, and the card says why."""
    request = scenario_request("cac-abn-original-medicare-legacy-sopt")  # an S8092 order
    body = await answer(app_client, make_settings, request)
    assert topics(body) == ["cac-abn-required"]
    card = body["cards"][0]
    (task,) = card["suggestions"][0]["actions"]
    assert "CPT 75571" in task["resource"]["description"]
    assert "S8092" not in task["resource"]["description"]
    assert "**GY**" in card["detail"] and "**GA**" not in card["detail"]
    assert "cannot bill the patient" not in card["detail"]
