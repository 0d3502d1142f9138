"""gather() against a real FHIR server (SEKMET): what prefetch left out is fetched, correctly."""

from __future__ import annotations

from typing import Any

from service.config import FhirServerAllowance
from service.fhir.gather import GatheredData
from tests.fhir.support import (
    KEYS,
    PATIENT,
    RecordingTransport,
    chart,
    condition,
    hook_request,
    ids,
    reasons,
    run_gather,
)
from tests.support.fhir_server import FhirServer


def _allow(server: FhirServer, without_token: bool = False) -> FhirServerAllowance:
    return FhirServerAllowance(base_url=server.base_url, allow_without_token=without_token)


async def _gather(
    server: FhirServer,
    *,
    prefetch: dict[str, Any] | None = None,
    token: str | None = None,
    **fhir: Any,
) -> tuple[GatheredData, RecordingTransport]:
    recorder = RecordingTransport(server.transport)
    request = hook_request(
        fhir_server=server.base_url, token=token or server.token, prefetch=prefetch
    )
    data = await run_gather(recorder, request, allowance=_allow(server), **fhir)
    return data, recorder


async def test_no_prefetch_fetches_every_key_with_the_bearer_token(fhir_server: FhirServer) -> None:
    await fhir_server.load(chart())
    data, recorder = await _gather(fhir_server)

    assert data.gaps == []
    assert data.provenance == {key: "fetched" for key in KEYS}
    assert recorder.resource_types() == sorted(
        [
            "Patient",
            "Coverage",
            "Condition",
            "Observation",
            "DiagnosticReport",
            "Observation",
            "Procedure",
            "ImagingStudy",
            "ServiceRequest",
        ]
    )
    assert {r.headers["Authorization"] for r in recorder.requests} == {
        f"Bearer {fhir_server.token}"
    }
    assert ids(data, "patient") == [f"Patient/{PATIENT}"]
    assert ids(data, "coverage") == ["Coverage/cov-1"]
    assert ids(data, "conditions") == ["Condition/cond-1"]
    assert ids(data, "procedures") == []


async def test_token_lists_reach_the_server_as_search_syntax(
    fhir_server: FhirServer,
) -> None:
    """`code=a,b` must filter: a glucose value or chest X-ray must not come back."""
    await fhir_server.load(chart())
    data, recorder = await _gather(fhir_server)

    # _sort=-date is honoured: the newest BMI first.
    assert [r.id for r in data.resources["bmi"]] == ["bmi-new", "bmi-old"]
    assert ids(data, "cardiacOrders") == ["ServiceRequest/ccta-on-file"]
    # No _include: the report alone, its result Observation from the imaging-results search.
    assert ids(data, "cctaReports") == ["DiagnosticReport/ccta-report"]
    assert ids(data, "cctaResults") == ["Observation/sten-1"]
    bmi_query = next(r.url for r in recorder.requests if b"39156-5" in r.url.query)
    assert b"code=39156-5&" in bmi_query.query  # system-less: the LOINC URI or OID alike
    orders_query = next(r.url for r in recorder.requests if r.url.path.endswith("/ServiceRequest"))
    assert b"code=75571,S8092,75572," in orders_query.query


async def test_partial_prefetch_fetches_only_the_missing_keys(fhir_server: FhirServer) -> None:
    await fhir_server.load(chart())
    given = {
        "patient": {"resourceType": "Patient", "id": PATIENT},
        "coverage": {"resourceType": "Bundle", "type": "searchset", "entry": []},
        "conditions": {"resourceType": "Bundle", "type": "searchset", "entry": []},
        "bmi": None,
        "procedures": None,
        "imagingStudies": None,
    }
    data, recorder = await _gather(fhir_server, prefetch=given)

    assert recorder.resource_types() == ["DiagnosticReport", "Observation", "ServiceRequest"]
    assert data.provenance == {
        "patient": "prefetch",
        "coverage": "prefetch",
        "conditions": "prefetch",
        "bmi": "null",
        "procedures": "null",
        "imagingStudies": "null",
        "cctaReports": "fetched",
        "cctaResults": "fetched",
        "cardiacOrders": "fetched",
    }
    # Prefetch wins: the server's condition is not added to the (empty) prefetched one.
    assert ids(data, "conditions") == []
    assert data.gaps == []


async def test_null_keys_are_never_refetched(fhir_server: FhirServer) -> None:
    await fhir_server.load(chart())
    data, recorder = await _gather(fhir_server, prefetch={key: None for key in KEYS})
    assert recorder.requests == []
    assert set(data.provenance.values()) == {"null"}
    assert data.gaps == []


async def test_operation_outcome_prefetch_is_refetched(fhir_server: FhirServer) -> None:
    await fhir_server.load(chart())
    failed = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout"}],
    }
    prefetch: dict[str, Any] = {key: None for key in KEYS}
    prefetch["coverage"] = failed
    data, recorder = await _gather(fhir_server, prefetch=prefetch)
    assert recorder.resource_types() == ["Coverage"]
    assert data.provenance["coverage"] == "fetched"
    assert ids(data, "coverage") == ["Coverage/cov-1"]


async def test_read_that_finds_nothing_is_no_data_not_a_gap(fhir_server: FhirServer) -> None:
    data, _ = await _gather(fhir_server)  # empty server: Patient/pat-1 is a 404
    assert data.provenance["patient"] == "fetched"
    assert data.resources["patient"] == []
    assert data.gaps == []


async def test_search_pages_are_followed(fhir_server: FhirServer) -> None:
    await fhir_server.load([condition(f"c{i:02}") for i in range(45)])  # SEKMET: 20 per page
    data, recorder = await _gather(fhir_server, prefetch=_all_null_but("conditions"))
    assert len(data.resources["conditions"]) == 45
    assert recorder.resource_types() == ["Condition"] * 3
    assert data.gaps == []


async def test_paging_stops_at_max_pages_with_a_gap(fhir_server: FhirServer) -> None:
    await fhir_server.load([condition(f"c{i:02}") for i in range(45)])
    data, recorder = await _gather(fhir_server, prefetch=_all_null_but("conditions"), max_pages=2)
    assert len(data.resources["conditions"]) == 40
    assert len(recorder.requests) == 2
    assert data.provenance["conditions"] == "fetched"
    assert reasons(data, "conditions") == ["more than 2 page(s) of results; the rest was not read"]


async def test_client_paginated_prefetch_is_completed(fhir_server: FhirServer) -> None:
    await fhir_server.load([condition(f"c{i:02}") for i in range(25)])
    async with fhir_server.client() as client:
        first_page = (await client.get("/Condition", params={"patient": PATIENT})).json()
    assert len(first_page["entry"]) == 20
    prefetch = _all_null_but("conditions")
    prefetch["conditions"] = first_page
    data, recorder = await _gather(fhir_server, prefetch=prefetch)

    assert len(data.resources["conditions"]) == 25
    assert [str(r.url) for r in recorder.requests] == [
        next(link["url"] for link in first_page["link"] if link["relation"] == "next")
    ]
    assert data.provenance["conditions"] == "prefetch"
    assert data.gaps == []


async def test_wrong_token_is_a_401_gap_for_every_key(fhir_server: FhirServer) -> None:
    await fhir_server.load(chart())
    data, _ = await _gather(fhir_server, token="not-the-token")
    assert set(data.provenance.values()) == {"unavailable"}
    assert {g.key for g in data.gaps} == set(KEYS)
    assert {g.reason for g in data.gaps} == {"FHIR server answered 401"}
    assert all("not-the-token" not in g.reason for g in data.gaps)


async def test_open_server_is_read_without_a_token_only_when_allowed(
    fhir_server: FhirServer,
) -> None:
    request = hook_request(fhir_server=fhir_server.base_url, token=None)

    refused = RecordingTransport(fhir_server.transport)
    data = await run_gather(refused, request, allowance=_allow(fhir_server))
    assert refused.requests == []
    assert reasons(data, "patient") == [
        "not prefetched, and the request carried no FHIR access token"
    ]

    allowed = RecordingTransport(fhir_server.transport)
    data = await run_gather(allowed, request, allowance=_allow(fhir_server, without_token=True))
    assert len(allowed.requests) == len(KEYS)
    assert all("Authorization" not in r.headers for r in allowed.requests)
    # SEKMET is not an open server: it refuses, which is a gap, not an error.
    assert reasons(data, "patient") == ["FHIR server answered 401"]


async def test_nothing_is_contacted_without_an_allowance(fhir_server: FhirServer) -> None:
    recorder = RecordingTransport(fhir_server.transport)
    request = hook_request(fhir_server=fhir_server.base_url, token=fhir_server.token)
    data = await run_gather(recorder, request, allowance=None)
    assert recorder.requests == []
    assert reasons(data, "coverage") == [
        "not prefetched, and the FHIR server is not on this client's allowlist"
    ]

    data = await run_gather(recorder, hook_request(fhir_server=None, token=None), allowance=None)
    assert recorder.requests == []
    assert reasons(data, "coverage") == ["not prefetched, and the request named no FHIR server"]
    assert set(data.provenance.values()) == {"unavailable"}


def _all_null_but(*keys: str) -> dict[str, Any]:
    return {key: None for key in KEYS if key not in keys}
