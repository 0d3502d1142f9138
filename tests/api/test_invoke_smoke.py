"""The pipeline end to end over HTTP: a bundling conflict in the draft gives one card."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from service.fhir.gather import GatheredData, parse_key
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


class _RecordingTransport(httpx.AsyncBaseTransport):
    """Stands in for a FHIR server: records every request it is sent, answers 500."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(500)


def _out_of_scope_request(**changes: Any) -> dict[str, Any]:
    request = copy.deepcopy(REQUEST)
    request["context"]["draftOrders"]["entry"] = [
        {"resource": service_request("cxr-1", "71046", patient=PATIENT)},
        {"resource": service_request("ccta-1", "75574", patient=PATIENT)},
    ]
    request.update(changes)
    return request


async def test_out_of_scope_orders_read_no_patient_data(
    make_settings: Any, app_client: Any
) -> None:
    """A chest X-ray and a CCTA: no order this service checks. The answer is no cards, without
    reading the prefetch (garbage here would otherwise be a data-incomplete card) or contacting
    the FHIR server for the keys left out."""
    fhir = _RecordingTransport()
    settings = make_settings(
        auth={
            "enabled": False,
            "unauthenticated_fhir_servers": [
                {"base_url": "https://ehr.example/fhir", "allow_without_token": True}
            ],
        }
    )
    broken = _out_of_scope_request(
        prefetch={
            "coverage": {
                "resourceType": "Bundle",
                "entry": [{"resource": {"resourceType": "Coverage"}}],
            }
        },
        fhirServer="https://ehr.example/fhir",
    )
    async with app_client(settings, fhir_transport=fhir) as client:
        body = conformant_body(await client.post(ORDER_SIGN_URL, json=broken))
        assert body == {"cards": []}
        assert fhir.requests == []
        # The same chart with a calcium score added is read, so the fetch path is exercised.
        in_scope = copy.deepcopy(broken)
        in_scope["context"]["draftOrders"]["entry"].append(
            {"resource": service_request("cac-1", "75571", patient=PATIENT)}
        )
        body = conformant_body(await client.post(ORDER_SIGN_URL, json=in_scope))
        assert "data-incomplete" in topics(body)
        assert fhir.requests, body


async def test_an_unreadable_draft_is_never_taken_as_out_of_scope(
    make_settings: Any, app_client: Any
) -> None:
    request = _out_of_scope_request()
    request["context"]["draftOrders"]["entry"].append(
        {"resource": {"resourceType": "ServiceRequest", "id": "bad", "status": 42}}
    )
    async with app_client(make_settings()) as client:
        body = conformant_body(await client.post(ORDER_SIGN_URL, json=request))
    assert topics(body) == ["data-incomplete"]


async def test_out_of_scope_on_order_select_looks_at_the_selections_only(
    make_settings: Any, app_client: Any
) -> None:
    """A calcium score already in the order list and a chest X-ray selected: the X-ray is what
    decision support is about now, so nothing is read and no card is returned."""
    request = copy.deepcopy(REQUEST)
    request["hook"] = "order-select"
    request["context"]["draftOrders"]["entry"] = [
        {"resource": service_request("cac-1", "75571", patient=PATIENT)},
        {"resource": service_request("cxr-1", "71046", patient=PATIENT)},
    ]
    request["context"]["selections"] = ["ServiceRequest/cxr-1"]
    request["prefetch"]["coverage"] = {"resourceType": "Bundle", "entry": [{"resource": 1}]}
    async with app_client(make_settings()) as client:
        response = await client.post("/cds-services/cardiac-ct-order-select", json=request)
    assert conformant_body(response) == {"cards": []}


@pytest.mark.parametrize(
    "entry", [[7], [{"fullUrl": "urn:x"}]], ids=["a-number-entry", "an-entry-without-resource"]
)
async def test_an_unreadable_search_answer_is_a_gap_not_no_coverage(
    make_settings: Any, app_client: Any, entry: Any
) -> None:
    """Issue 10 item 3: a coverage answer whose `entry` cannot be read must not become "the
    patient has no active Coverage" (coverage-missing); the check is reported as not run."""
    request = copy.deepcopy(REQUEST)
    request["prefetch"]["coverage"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": entry,
    }
    async with app_client(make_settings()) as client:
        body = conformant_body(await client.post(ORDER_SIGN_URL, json=request))
    assert "coverage-missing" not in topics(body)
    assert "data-incomplete" in topics(body)


@pytest.mark.parametrize("entry", [{"resource": {"resourceType": "Coverage"}}, "Coverage/1", 7])
def test_a_fetched_answer_whose_entry_is_not_a_list_is_a_gap(entry: Any) -> None:
    """The same on the fetch path, where a server's Bundle is not validated by the request
    model: `entry` that is not a list is a gap on the key, not an empty search."""
    data = GatheredData()
    parse_key("coverage", {"resourceType": "Bundle", "type": "searchset", "entry": entry}, data)
    assert data.resources["coverage"] == []
    assert [g.key for g in data.gaps] == ["coverage"]
