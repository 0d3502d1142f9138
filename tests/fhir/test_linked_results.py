"""CCTA and FFR-CT reports under every code spelling, and their results without `_include`.

Against a real FHIR server (SEKMET): the templates find reports coded with the CPT OID and final
FFR-CT reports (75580); result Observations that the imaging-results search does not find (no
`imaging` category) are read by id on the fetch path, members included; what cannot be read is
one `cctaResults` gap; a reference to another host is never contacted.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import httpx

from service.config import FhirServerAllowance
from service.fhir.gather import GatheredData
from tests.fhir.support import (
    KEYS,
    LOINC,
    PATIENT,
    RecordingTransport,
    hook_request,
    ids,
    observation,
    reasons,
    run_gather,
)
from tests.support.fhir_server import FhirServer

CPT_OID = "urn:oid:2.16.840.1.113883.6.12"
CPT = "http://www.ama-assn.org/go/cpt"


def _report(
    report_id: str,
    system: str,
    code: str,
    results: list[str] | None = None,
    status: str = "final",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "id": report_id,
        "status": status,
        "subject": {"reference": f"Patient/{PATIENT}"},
        "code": {"coding": [{"system": system, "code": code}]},
        "effectiveDateTime": "2026-11-01",
        "result": [{"reference": ref} for ref in results or []],
        **extra,
    }


def _panel(obs_id: str, members: list[str]) -> dict[str, Any]:
    panel = observation(obs_id, "18748-4", "2026-11-01")  # no category: not an imaging search hit
    panel["hasMember"] = [{"reference": ref} for ref in members]
    return panel


def _bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }


def _prefetch(*reports: dict[str, Any]) -> dict[str, Any]:
    """Every key prefetched (nothing on file), the reports given, no result Observations."""
    prefetch: dict[str, Any] = {key: _bundle() for key in KEYS}
    prefetch["patient"] = {"resourceType": "Patient", "id": PATIENT}
    prefetch["cctaReports"] = _bundle(*reports)
    return prefetch


async def _gather(
    server: FhirServer, prefetch: dict[str, Any] | None = None, **fhir: Any
) -> tuple[GatheredData, RecordingTransport]:
    recorder = RecordingTransport(server.transport)
    request = hook_request(fhir_server=server.base_url, token=server.token, prefetch=prefetch)
    allowance = FhirServerAllowance(base_url=server.base_url)
    return await run_gather(recorder, request, allowance=allowance, **fhir), recorder


def _id_searches(recorder: RecordingTransport) -> list[list[str]]:
    """The ids asked for by each `Observation?_id=` request, in order."""
    return [
        sorted(r.url.params["_id"].split(","))
        for r in recorder.requests
        if r.url.path.endswith("/Observation") and "_id" in r.url.params
    ]


async def test_ccta_report_coded_with_the_cpt_oid_is_found(fhir_server: FhirServer) -> None:
    await fhir_server.load(
        [
            _report("ccta-oid", CPT_OID, "75574"),
            _report("ccta-hcpcs", "urn:oid:2.16.840.1.113883.6.285", "75574"),
            _report("ccta-loinc-oid", "urn:oid:2.16.840.1.113883.6.1", "79073-3"),
            _report("echo", LOINC, "34552-0"),  # echocardiography: not a CCTA
        ]
    )
    data, _ = await _gather(fhir_server)
    assert ids(data, "cctaReports") == [
        "DiagnosticReport/ccta-hcpcs",
        "DiagnosticReport/ccta-loinc-oid",
        "DiagnosticReport/ccta-oid",
    ]
    assert data.gaps == []


async def test_final_ffrct_report_is_found(fhir_server: FhirServer) -> None:
    await fhir_server.load(
        [_report("ffr-75580", CPT, "75580"), _report("ffr-legacy", CPT_OID, "0503T")]
    )
    data, _ = await _gather(fhir_server)
    assert ids(data, "cctaReports") == [
        "DiagnosticReport/ffr-75580",
        "DiagnosticReport/ffr-legacy",
    ]


async def test_results_without_the_imaging_category_are_read_by_id(
    fhir_server: FhirServer,
) -> None:
    await fhir_server.load(
        [
            _report("ccta", CPT, "75574", ["Observation/panel", "Observation/lvef"]),
            _panel("panel", ["Observation/lad"]),
            observation("lad", "18747-6", "2026-11-01", 70.0),  # a member, no category either
            observation("lvef", "10230-1", "2026-11-01", 60.0, category="imaging"),
        ]
    )
    data, recorder = await _gather(fhir_server)

    assert ids(data, "cctaResults") == ["Observation/lad", "Observation/lvef", "Observation/panel"]
    assert _id_searches(recorder) == [["panel"], ["lad"]]  # the search found lvef already
    assert data.provenance["cctaResults"] == "fetched"
    assert data.gaps == []


async def test_full_prefetch_missing_results_are_read_by_id(fhir_server: FhirServer) -> None:
    await fhir_server.load(
        [
            _panel("panel", ["Observation/lad", "#local"]),
            observation("lad", "18747-6", "2026-11-01", 70.0),
        ]
    )
    contained = observation("kept", "18747-6", "2026-11-01", 40.0)
    report = _report("ccta", CPT, "75574", ["Observation/panel", "#kept"], contained=[contained])
    data, recorder = await _gather(fhir_server, prefetch=_prefetch(report))

    assert ids(data, "cctaResults") == ["Observation/lad", "Observation/panel"]
    assert _id_searches(recorder) == [["panel"], ["lad"]]
    assert len(recorder.requests) == 2  # nothing else: everything else was prefetched
    assert data.provenance["cctaResults"] == "prefetch"
    # The panel's `#local` member names nothing it contains: counted, never guessed at.
    assert reasons(data, "cctaResults") == [
        "1 result(s) of a CCTA report could not be read "
        "(a reference names no Observation in the report)"
    ]


async def test_prefetch_only_missing_results_are_one_gap() -> None:
    report = _report("ccta", CPT, "75574", ["Observation/sten", "Observation/cad-rads", "#c"])
    report["contained"] = [observation("c", "18747-6", "2026-11-01", 50.0)]
    void = _report("void", CPT, "75574", ["Observation/gone"], status="entered-in-error")
    request = hook_request(fhir_server=None, token=None, prefetch=_prefetch(report, void))
    data = await run_gather(httpx.MockTransport(_never), request, allowance=None)

    assert reasons(data, "cctaResults") == [
        "2 result(s) of a CCTA report could not be read (the request named no FHIR server)"
    ]
    assert [g.key for g in data.gaps] == ["cctaResults"]
    assert ids(data, "cctaReports") == ["DiagnosticReport/ccta", "DiagnosticReport/void"]


async def test_results_already_gathered_need_no_request(fhir_server: FhirServer) -> None:
    sten = observation("sten", "18747-6", "2026-11-01", 55.0, category="imaging")
    prefetch = _prefetch(_report("ccta", CPT, "75574", ["Observation/sten"]))
    prefetch["cctaResults"] = _bundle(sten)
    data, recorder = await _gather(fhir_server, prefetch=prefetch)
    assert recorder.requests == []
    assert data.gaps == []


async def test_a_result_on_another_host_is_never_fetched(fhir_server: FhirServer) -> None:
    await fhir_server.load([observation("same-base", "18747-6", "2026-11-01", 65.0)])
    report = _report(
        "ccta",
        CPT,
        "75574",
        [
            "http://evil.test/fhir/Observation/x",
            "https://fhir.test/fhir/Observation/wrong-scheme",
            "http://fhir.test/other/Observation/wrong-path",
            f"{fhir_server.base_url}/Observation/same-base",
        ],
    )
    data, recorder = await _gather(fhir_server, prefetch=_prefetch(report))

    assert {str(r.url).startswith(f"{fhir_server.base_url}/") for r in recorder.requests} == {True}
    assert _id_searches(recorder) == [["same-base"]]
    assert ids(data, "cctaResults") == ["Observation/same-base"]
    assert reasons(data, "cctaResults") == [
        "3 result(s) of a CCTA report could not be read "
        "(a reference is not to an Observation on the FHIR server; not followed)"
    ]


async def test_ids_are_read_fifty_at_a_time(fhir_server: FhirServer) -> None:
    results = [observation(f"r{i:02}", "18747-6", "2026-11-01", 50.0) for i in range(55)]
    await fhir_server.load(results)
    report = _report("ccta", CPT, "75574", [f"Observation/r{i:02}" for i in range(55)])
    data, recorder = await _gather(fhir_server, prefetch=_prefetch(report))

    assert [len(chunk) for chunk in _id_searches(recorder)] == [50, 5]
    assert len(data.resources["cctaResults"]) == 55
    assert data.gaps == []


async def test_a_failed_read_is_a_gap_not_an_error(fhir_server: FhirServer) -> None:
    report = _report("ccta", CPT, "75574", ["Observation/a", "Observation/b"])
    request = hook_request(
        fhir_server=fhir_server.base_url, token="wrong-token", prefetch=_prefetch(report)
    )
    allowance = FhirServerAllowance(base_url=fhir_server.base_url)
    data = await run_gather(fhir_server.transport, request, allowance=allowance)
    assert reasons(data, "cctaResults") == [
        "2 result(s) of a CCTA report could not be read (FHIR server answered 401)"
    ]


async def test_reading_results_stays_inside_the_one_deadline() -> None:
    async def hang(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        await asyncio.sleep(3600)

    base = "http://slow.test/fhir"
    report = _report("ccta", CPT, "75574", ["Observation/a"])
    request = hook_request(fhir_server=base, token="t", prefetch=_prefetch(report))
    started = asyncio.get_running_loop().time()
    data = await run_gather(
        httpx.ASGITransport(app=hang),
        request,
        allowance=FhirServerAllowance(base_url=base),
        deadline_seconds=0.2,
    )
    assert asyncio.get_running_loop().time() - started < 1.5
    assert reasons(data, "cctaResults") == [
        "1 result(s) of a CCTA report could not be read (FHIR server did not answer within 0.2 s)"
    ]


def _never(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"no request may be made: {request.url}")
