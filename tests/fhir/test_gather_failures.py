"""A misbehaving FHIR server degrades the answer to gaps; gather() never raises.

These servers are fakes on purpose: a real FHIR server does not hang, send garbage or hand out
links to other hosts. Each is the smallest thing that misbehaves in exactly one way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, MutableMapping
from typing import Any

import httpx

from service.config import FhirServerAllowance
from service.fhir.gather import GatheredData
from tests.fhir.support import KEYS, PATIENT, condition, hook_request, ids, reasons, run_gather

BASE = "http://fhir.test/fhir"
ALLOW = FhirServerAllowance(base_url=BASE)


def _serving(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


async def _gather(
    transport: httpx.AsyncBaseTransport, prefetch: dict[str, Any] | None = None, **fhir: Any
) -> GatheredData:
    request = hook_request(fhir_server=BASE, token="t0k3n-secret", prefetch=prefetch)
    return await run_gather(transport, request, allowance=ALLOW, **fhir)


def _answer(body: Any) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _: httpx.Response(200, json=body)


def _only(key: str) -> dict[str, Any]:
    return {k: None for k in KEYS if k != key}


def _searchset(resources: list[dict[str, Any]], next_url: str | None = None) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }
    if next_url is not None:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


async def test_server_error_is_a_gap() -> None:
    data = await _gather(_serving(lambda _: httpx.Response(500, text="boom")))
    assert set(data.provenance.values()) == {"unavailable"}
    assert {g.reason for g in data.gaps} == {"FHIR server answered 500"}
    assert {g.key for g in data.gaps} == set(KEYS)


async def test_forbidden_is_a_gap() -> None:
    data = await _gather(_serving(lambda _: httpx.Response(403)), _only("coverage"))
    assert reasons(data, "coverage") == ["FHIR server answered 403"]


async def test_garbage_body_is_a_gap() -> None:
    transport = _serving(lambda _: httpx.Response(200, content=b"<html>login</html>"))
    data = await _gather(transport, _only("conditions"))
    assert reasons(data, "conditions") == ["FHIR server sent a response that is not FHIR JSON"]
    assert data.provenance["conditions"] == "unavailable"


async def test_json_that_is_not_fhir_is_a_gap() -> None:
    for body in ({"hello": "world"}, [1, 2], "text", {"resourceType": 5}):
        transport = _serving(_answer(body))
        data = await _gather(transport, _only("conditions"))
        assert reasons(data, "conditions") == [
            "FHIR server sent JSON that is not a FHIR resource"
        ], body


async def test_operation_outcome_answer_is_a_gap_naming_only_issue_codes() -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": "Jane Doe 1970"}],
    }
    data = await _gather(_serving(lambda _: httpx.Response(200, json=outcome)), _only("bmi"))
    assert reasons(data, "bmi") == [
        "FHIR server answered with an error (OperationOutcome processing)"
    ]


async def test_search_answered_with_a_non_bundle_is_a_gap() -> None:
    transport = _serving(lambda _: httpx.Response(200, json=condition("c1")))
    data = await _gather(transport, _only("conditions"))
    assert reasons(data, "conditions") == [
        "FHIR server answered a search with something other than a Bundle"
    ]


async def test_unreadable_resources_are_skipped_and_reported() -> None:
    bad = {"resourceType": "Condition", "id": "bad", "subject": "not a reference"}
    transport = _serving(lambda _: httpx.Response(200, json=_searchset([condition("ok"), bad])))
    data = await _gather(transport, _only("conditions"))
    assert ids(data, "conditions") == ["Condition/ok"]
    assert reasons(data, "conditions") == ["1 Condition resource(s) could not be read"]


async def test_connection_error_is_a_gap() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    data = await _gather(_serving(refuse), _only("patient"))
    assert reasons(data, "patient") == ["FHIR server could not be reached"]


async def test_oversized_response_is_not_read() -> None:
    huge = _searchset([condition(f"c{i}") for i in range(2000)])
    data = await _gather(
        _serving(lambda _: httpx.Response(200, json=huge)),
        _only("conditions"),
        max_response_bytes=65_536,
    )
    assert reasons(data, "conditions") == ["FHIR server sent more than 65536 bytes; not read"]


async def test_hanging_server_is_cut_off_at_the_deadline() -> None:
    """A server that answers some keys and never answers others: keep the answered ones."""

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"].endswith("/Patient/" + PATIENT):
            body = json.dumps({"resourceType": "Patient", "id": PATIENT}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        await asyncio.sleep(3600)

    data = await _gather(httpx.ASGITransport(app=app), deadline_seconds=0.3)
    assert data.provenance["patient"] == "fetched"
    assert ids(data, "patient") == [f"Patient/{PATIENT}"]
    hung = set(KEYS) - {"patient"}
    assert {g.key for g in data.gaps} == hung
    assert {g.reason for g in data.gaps} == {"FHIR server did not answer within 0.3 s"}
    assert {data.provenance[k] for k in hung} == {"unavailable"}


async def test_partial_pages_are_kept_when_a_later_page_fails() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "page=2" in str(request.url):
            return httpx.Response(503)
        return httpx.Response(
            200, json=_searchset([condition("c1")], f"{BASE}/Condition?patient={PATIENT}&page=2")
        )

    data = await _gather(_serving(handler), _only("conditions"))
    assert ids(data, "conditions") == ["Condition/c1"]
    assert data.provenance["conditions"] == "fetched"
    assert reasons(data, "conditions") == ["only part could be read: FHIR server answered 503"]


async def test_next_link_to_another_host_is_not_followed() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url.host))
        return httpx.Response(
            200, json=_searchset([condition("c1")], "http://attacker.test/fhir/Condition?p=2")
        )

    data = await _gather(_serving(handler), _only("conditions"))
    assert seen == ["fhir.test"]
    assert ids(data, "conditions") == ["Condition/c1"]
    assert reasons(data, "conditions") == [
        "only part could be read: a link pointed outside the allowlisted FHIR server; not followed"
    ]


async def test_client_paginated_prefetch_link_to_another_host_is_not_followed() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=_searchset([]))

    for link in (
        "http://attacker.test/fhir/Condition?p=2",
        "https://fhir.test/fhir/Condition?p=2",  # another scheme
        "http://fhir.test:8080/fhir/Condition?p=2",  # another port
        "http://fhir.test/admin/Condition?p=2",  # outside the base path
        "http://fhir.test/fhir/../admin?p=2",
        "http://user@fhir.test/fhir/Condition?p=2",
        "",
    ):
        prefetch = _only("conditions")
        prefetch["conditions"] = _searchset([condition("c1")], link)
        data = await _gather(_serving(handler), prefetch)
        assert ids(data, "conditions") == ["Condition/c1"], link
        assert data.provenance["conditions"] == "prefetch"
        (reason,) = reasons(data, "conditions")
        assert reason.startswith("only part was prefetched, and "), link
    assert seen == []


async def test_relative_next_link_on_the_same_server_is_followed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "page=2" in str(request.url):
            return httpx.Response(200, json=_searchset([condition("c2")]))
        return httpx.Response(200, json=_searchset([condition("c1")], "Condition?page=2"))

    data = await _gather(_serving(handler), _only("conditions"))
    assert ids(data, "conditions") == ["Condition/c1", "Condition/c2"]
    assert data.gaps == []


async def test_gap_reasons_never_carry_the_token_or_the_patient_id() -> None:
    data = await _gather(_serving(lambda _: httpx.Response(401)))
    for gap in data.gaps:
        assert "t0k3n" not in gap.reason
        assert PATIENT not in gap.reason


async def test_client_paginated_prefetch_without_server_access_keeps_the_first_page() -> None:
    prefetch = _only("conditions")
    prefetch["conditions"] = _searchset([condition("c1")], f"{BASE}/Condition?page=2")
    request = hook_request(fhir_server=None, token=None, prefetch=prefetch)
    data = await run_gather(_serving(_answer({})), request, allowance=None)
    assert ids(data, "conditions") == ["Condition/c1"]
    assert data.provenance["conditions"] == "prefetch"
    assert reasons(data, "conditions") == [
        "only part was prefetched, and the request named no FHIR server"
    ]
