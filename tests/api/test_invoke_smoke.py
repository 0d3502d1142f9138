"""The pipeline end to end over HTTP: a bundling conflict in the draft gives one card."""

from __future__ import annotations

import copy
from typing import Any

from tests.support.conformance import conformant_body, topics
from tests.support.fhir_json import PREFETCH_KEYS, service_request

ORDER_SIGN_URL = "/cds-services/cardiac-ct-order-sign"
PATIENT = "pat-1"


REQUEST: dict[str, Any] = {
    "hook": "order-sign",
    "hookInstance": "0b1c3c1e-6f59-4b43-9d4b-5a0f2b8c1f10",
    "context": {
        "userId": "Practitioner/dr-1",
        "patientId": PATIENT,
        "draftOrders": {
            "resourceType": "Bundle",
            "entry": [
                {"resource": service_request("cac-1", "75571", patient=PATIENT)},
                {"resource": service_request("ccta-1", "75574", patient=PATIENT)},
            ],
        },
    },
    "prefetch": dict.fromkeys(PREFETCH_KEYS),
}


async def test_bundling_conflict_card(make_settings: Any, app_client: Any) -> None:
    async with app_client(make_settings()) as client:
        response = await client.post(ORDER_SIGN_URL, json=REQUEST)
    body = conformant_body(response)
    # coverage prefetch null = "no coverage on file" -> the info card follows the warning.
    assert topics(body) == ["cac-bundling-conflict", "coverage-missing"]
    action = body["cards"][0]["suggestions"][0]["actions"][0]
    assert action == {
        "type": "delete",
        "description": action["description"],
        "resourceId": "ServiceRequest/cac-1",
    }


async def test_different_dates_do_not_conflict(make_settings: Any, app_client: Any) -> None:
    request = copy.deepcopy(REQUEST)
    request["context"]["draftOrders"]["entry"][1]["resource"]["occurrenceDateTime"] = "2026-12-02"
    async with app_client(make_settings()) as client:
        response = await client.post(ORDER_SIGN_URL, json=request)
    assert response.status_code == 200
    assert topics(response.json()) == ["coverage-missing"]
