"""Real EHRs send sloppy requests; the service reads what it can instead of refusing them.

Spec: https://cds-hooks.hl7.org/2.0/#calling-a-cds-service ; the quirks are the ones seen from
cds-hooks/sandbox and the Da Vinci request generator (research notes, cds-hooks-spec.md §1.4).
Each test keeps a 75571 + 75574 same-day pair in the draft, so the bundling card proves the
orders were still read despite the quirk.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import pytest

from service.fhir.gather import gather_prefetch
from tests.api.builders import (
    ORDER_SIGN_URL,
    PATIENT_ID,
    bundling_pair,
    hook_request,
    service_request,
)
from tests.support.conformance import assert_conformant_response, conformant_body, topics

pytestmark = pytest.mark.asyncio(loop_scope="module")

BUNDLING = "cac-bundling-conflict"


async def _topics(client: httpx.AsyncClient, request: dict[str, Any]) -> list[str]:
    response = await client.post(ORDER_SIGN_URL, json=request)
    body = conformant_body(response)
    return topics(body)


async def test_draft_orders_without_bundle_type(shared_client: httpx.AsyncClient) -> None:
    request = hook_request(*bundling_pair())
    del request["context"]["draftOrders"]["type"]
    assert BUNDLING in await _topics(shared_client, request)


async def test_empty_coding_and_empty_reason_code(shared_client: httpx.AsyncClient) -> None:
    cac, ccta = bundling_pair()
    cac["code"]["coding"].append({})
    cac["reasonCode"] = []
    cac["category"] = [{"coding": [{}]}]
    ccta["reasonCode"] = [{"coding": [{}]}]
    assert BUNDLING in await _topics(shared_client, hook_request(cac, ccta))


async def test_unknown_members_and_extensions(shared_client: httpx.AsyncClient) -> None:
    cac, ccta = bundling_pair()
    cac["vendorField"] = {"epic": True}
    cac["extension"] = [{"url": "http://vendor.example/ext/priority", "valueString": "high"}]
    cac["code"]["coding"][0]["vendorCodingFlag"] = 1
    ccta["modifierExtension"] = [{"url": "http://vendor.example/ext/x", "valueBoolean": False}]
    request = hook_request(cac, ccta)
    request["extension"] = {"com.example.launch": {"tab": 3}}
    request["vendorTopLevel"] = "ignored"
    request["context"]["vendorContext"] = ["ignored"]
    request["context"]["draftOrders"]["vendorBundleMember"] = 1
    request["context"]["encounterId"] = "enc-1"
    assert BUNDLING in await _topics(shared_client, request)


async def test_medication_request_without_intent_is_ignored(
    shared_client: httpx.AsyncClient,
) -> None:
    aspirin = {
        "resourceType": "MedicationRequest",
        "id": "med-1",
        "status": "draft",
        "medicationCodeableConcept": {"text": "aspirin 81 mg"},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
    }
    assert BUNDLING in await _topics(shared_client, hook_request(aspirin, *bundling_pair()))


async def test_non_cardiac_orders_only_give_no_cards(shared_client: httpx.AsyncClient) -> None:
    lipids = service_request("lab-1", "80061")
    echo = service_request("echo-1", "93306")
    assert await _topics(shared_client, hook_request(lipids, echo)) == []


def _prefetch_with_bad_order() -> dict[str, Any]:
    """The CCTA order is on file (cardiacOrders); next to it sits an unreadable ServiceRequest."""
    broken = service_request("broken-1", "75574")
    broken["status"] = "not-a-status"
    broken["intent"] = 42
    on_file = service_request("ccta-on-file", "75574")
    on_file["status"] = "active"
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": broken}, {"resource": on_file}],
    }


async def test_bad_resource_in_prefetch_bundle_is_skipped(
    shared_client: httpx.AsyncClient,
) -> None:
    request = hook_request(service_request("cac-1", "75571"))
    request["prefetch"]["cardiacOrders"] = _prefetch_with_bad_order()
    # The readable order on file still conflicts with the calcium score: the bad one was skipped.
    assert BUNDLING in await _topics(shared_client, request)


async def test_bad_resource_in_prefetch_bundle_is_recorded_as_a_gap() -> None:
    templates = {"cardiacOrders": "ServiceRequest?patient={{context.patientId}}"}
    data, to_fetch = gather_prefetch(templates, {"cardiacOrders": _prefetch_with_bad_order()})
    assert to_fetch == []
    assert [r.id for r in data.resources["cardiacOrders"]] == ["ccta-on-file"]
    assert [g.key for g in data.gaps] == ["cardiacOrders"]
    assert "ServiceRequest" in data.gaps[0].reason
    assert "not-a-status" not in data.gaps[0].reason  # values may be PHI: paths only


async def test_bad_resource_in_prefetch_bundle_is_reported(
    shared_client: httpx.AsyncClient,
) -> None:
    request = hook_request(service_request("cac-1", "75571"))
    request["prefetch"]["cardiacOrders"] = _prefetch_with_bad_order()
    assert "data-incomplete" in await _topics(shared_client, request)


async def test_the_same_request_twice_gives_the_same_topics(
    shared_client: httpx.AsyncClient,
) -> None:
    """hookInstance is not unique in practice (the CRD request generator hard-codes one)."""
    request = hook_request(*bundling_pair())
    first = await _topics(shared_client, request)
    second = await _topics(shared_client, copy.deepcopy(request))
    assert first == second
    assert BUNDLING in first


async def test_failed_prefetch_without_fhir_server_degrades(
    shared_client: httpx.AsyncClient,
) -> None:
    """An OperationOutcome prefetch value means the EHR's query failed; with no fhirServer to
    retry on, the answer still comes (200) and says what is missing instead of guessing."""
    request = hook_request(*bundling_pair())
    request["prefetch"]["coverage"] = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout"}],
    }
    del request["prefetch"]["conditions"]
    found = await _topics(shared_client, request)
    assert BUNDLING in found
    assert "data-incomplete" in found
    assert "coverage-missing" not in found  # unknown coverage is not "no coverage"


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/fhir+json", "text/plain", None]
)
async def test_body_is_read_whatever_the_content_type(
    shared_client: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await shared_client.post(
        ORDER_SIGN_URL, content=json.dumps(hook_request(*bundling_pair())), headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert_conformant_response(response.json())
    assert BUNDLING in topics(response.json())
