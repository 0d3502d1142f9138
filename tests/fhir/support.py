"""Helpers for the FHIR data-access tests: request builders, resources, a recording transport."""

from __future__ import annotations

from typing import Any

import httpx

from service.cdshooks.discovery import ServiceRegistry
from service.cdshooks.models import HookRequest
from service.config import FhirAccessSettings, FhirServerAllowance
from service.fhir.gather import GatheredData, gather
from tests.support.fhir_json import PREFETCH_KEYS, service_request

LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
PATIENT = "pat-1"
KEYS = PREFETCH_KEYS


def templates() -> dict[str, str]:
    service = ServiceRegistry().get("cardiac-ct-order-sign")
    assert service is not None and service.prefetch is not None
    return dict(service.prefetch)


def order(
    order_id: str, cpt: str, day: str = "2026-12-01", status: str = "draft"
) -> dict[str, Any]:
    return service_request(order_id, cpt, patient=PATIENT, day=day, status=status)


def condition(cond_id: str, icd: str = "I20.9") -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cond_id,
        "subject": {"reference": f"Patient/{PATIENT}"},
        "code": {"coding": [{"system": ICD10, "code": icd}]},
    }


def observation(
    obs_id: str, loinc: str, day: str, value: float | None = None, *, category: str | None = None
) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": obs_id,
        "status": "final",
        "subject": {"reference": f"Patient/{PATIENT}"},
        "code": {"coding": [{"system": LOINC, "code": loinc}]},
        "effectiveDateTime": day,
    }
    if category is not None:
        obs["category"] = [{"coding": [{"system": OBSERVATION_CATEGORY, "code": category}]}]
    if value is not None:
        obs["valueQuantity"] = {"value": value, "unit": "%"}
    return obs


def chart() -> list[dict[str, Any]]:
    """A small chart: patient, coverage, a condition, BMIs, a CCTA report, an order on file."""
    return [
        {"resourceType": "Patient", "id": PATIENT, "address": [{"state": "NJ"}]},
        {
            "resourceType": "Coverage",
            "id": "cov-1",
            "status": "active",
            "beneficiary": {"reference": f"Patient/{PATIENT}"},
            "payor": [{"display": "Horizon BCBS NJ"}],
        },
        condition("cond-1"),
        observation("bmi-old", "39156-5", "2025-01-01", 31.0),
        observation("bmi-new", "39156-5", "2026-10-01", 29.0),
        observation("glucose", "2345-7", "2026-10-01", 90.0),  # not a BMI: must not arrive
        observation("sten-1", "18747-6", "2026-11-01", 55.0, category="imaging"),
        {
            "resourceType": "DiagnosticReport",
            "id": "ccta-report",
            "status": "final",
            "subject": {"reference": f"Patient/{PATIENT}"},
            "code": {"coding": [{"system": LOINC, "code": "79073-3"}]},
            "effectiveDateTime": "2026-11-01",
            "result": [{"reference": "Observation/sten-1"}],
        },
        order("ccta-on-file", "75574", status="active"),
        order("unrelated-order", "71045", status="active"),  # chest X-ray: must not arrive
    ]


def hook_request(
    *,
    fhir_server: str | None,
    token: str | None,
    prefetch: dict[str, Any] | None = None,
    drafts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hook": "order-sign",
        "hookInstance": "9b7d2c1e-6f59-4b43-9d4b-5a0f2b8c1f10",
        "context": {
            "userId": "Practitioner/dr-1",
            "patientId": PATIENT,
            "draftOrders": {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": r} for r in drafts or [order("cac-1", "75571")]],
            },
        },
    }
    if fhir_server is not None:
        body["fhirServer"] = fhir_server
    if token is not None:
        body["fhirAuthorization"] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "cardiac-ct-cds",
        }
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


class RecordingTransport(httpx.AsyncBaseTransport):
    """Passes requests to a real transport and remembers them (URL and headers)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.inner.handle_async_request(request)

    def resource_types(self) -> list[str]:
        """The resource type each request asked for (`Patient`, `Condition` ...)."""
        return sorted(r.url.path.split("/fhir/", 1)[1].split("/")[0] for r in self.requests)


async def run_gather(
    transport: httpx.AsyncBaseTransport,
    request: dict[str, Any],
    *,
    allowance: FhirServerAllowance | None,
    **fhir: Any,
) -> GatheredData:
    async with httpx.AsyncClient(transport=transport) as http:
        return await gather(
            templates=templates(),
            request=HookRequest.model_validate(request),
            allowance=allowance,
            http=http,
            settings=FhirAccessSettings(**fhir),
        )


def ids(data: GatheredData, key: str) -> list[str]:
    return sorted(f"{r.get_resource_type()}/{r.id}" for r in data.resources.get(key, []))


def reasons(data: GatheredData, key: str) -> list[str]:
    return [g.reason for g in data.gaps if g.key == key]
