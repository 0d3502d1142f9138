"""Bad requests get a clear 4xx OperationOutcome, never a 500.

Spec: https://cds-hooks.hl7.org/2.0/#calling-a-cds-service (required fields, hook contexts) and
https://cds-hooks.hl7.org/2.0/#http-response ("MAY return other 4xx/5xx"); the 3.0 ballot asks
for an OperationOutcome body, which is what every error here must carry.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.api.builders import (
    ORDER_SELECT_URL,
    ORDER_SIGN_URL,
    bundling_pair,
    hook_request,
    service_request,
)
from tests.support.conformance import assert_conformant_response

pytestmark = pytest.mark.asyncio(loop_scope="module")


def assert_outcome(response: Any, status: int, *needles: str) -> str:
    """The response is `status` with an OperationOutcome whose diagnostics name the problem."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(
        ("application/fhir+json", "application/json")
    )
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    issue = body["issue"][0]
    assert issue["severity"] == "error"
    diagnostics: str = issue.get("diagnostics", "")
    for needle in needles:
        assert needle in diagnostics, f"{needle!r} not in {diagnostics!r}"
    return diagnostics


def mutate(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    request = hook_request()
    change(request)
    return request


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(request: dict[str, Any]) -> None:
        node = request
        *parents, last = path.split(".")
        for part in parents:
            node = node[part]
        node[last] = value

    return change


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def change(request: dict[str, Any]) -> None:
        node = request
        *parents, last = path.split(".")
        for part in parents:
            node = node[part]
        del node[last]

    return change


# (case id, body bytes, expected status, words the diagnostics must contain)
MALFORMED: list[tuple[str, bytes, int, tuple[str, ...]]] = [
    ("empty body", b"", 400, ("empty",)),
    ("not json", b"{hook: order-sign", 400, ("not valid JSON",)),
    ("truncated json", json.dumps(hook_request()).encode()[:-7], 400, ("not valid JSON",)),
    ("not utf-8", b'{"hook": "\xff\xfe"}', 400, ("not valid JSON",)),
    ("json array", b"[]", 400, ("JSON object",)),
    ("json string", b'"order-sign"', 400, ("JSON object",)),
    ("json number", b"42", 400, ("JSON object",)),
    ("json null", b"null", 400, ("JSON object",)),
    (
        "deeply nested",
        b'{"context": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        413,
        ("limits.max_json_depth",),
    ),
    (
        "nested just under the decoder limit",
        b'{"context": ' + b"[" * 900 + b"]" * 900 + b"}",
        413,
        ("limits.max_json_depth",),
    ),
    ("empty object", b"{}", 400, ("hook",)),
]


def _case(name: str, change: Callable[[dict[str, Any]], None], *needles: str) -> Any:
    return pytest.param(json.dumps(mutate(change)).encode(), 400, needles, id=name)


STRUCTURAL = [
    _case("missing hook", _delete("hook"), "hook"),
    _case("hook not a string", _set("hook", ["order-sign"]), "hook"),
    _case("missing hookInstance", _delete("hookInstance"), "hookInstance"),
    _case("empty hookInstance", _set("hookInstance", ""), "hookInstance"),
    _case("missing context", _delete("context"), "context"),
    _case("context a string", _set("context", "Patient/1"), "context"),
    _case("context a list", _set("context", []), "context"),
    _case("missing userId", _delete("context.userId"), "userId"),
    _case("userId not a reference", _set("context.userId", "dr-1"), "userId"),
    _case("missing patientId", _delete("context.patientId"), "patientId"),
    _case("patientId a number", _set("context.patientId", 7), "patientId"),
    _case("missing draftOrders", _delete("context.draftOrders"), "draftOrders"),
    _case("draftOrders a list", _set("context.draftOrders", []), "draftOrders"),
    _case(
        "draftOrders not a Bundle",
        _set("context.draftOrders", {"resourceType": "ServiceRequest", "id": "x"}),
        "draftOrders",
    ),
    _case(
        "draftOrders entry not a list",
        _set("context.draftOrders", {"resourceType": "Bundle", "entry": {"resource": {}}}),
        "draftOrders",
    ),
    _case("prefetch a list", _set("prefetch", []), "prefetch"),
    _case("prefetch a string", _set("prefetch", "none"), "prefetch"),
    _case("prefetch value a string", _set("prefetch.patient", "Patient/1"), "prefetch"),
    _case("fhirServer a number", _set("fhirServer", 8080), "fhirServer"),
    _case(
        "fhirAuthorization without fhirServer",
        _set("fhirAuthorization", {"access_token": "opaque", "token_type": "Bearer"}),
        "fhirServer",
    ),
    _case(
        "fhirAuthorization without token",
        _set("fhirAuthorization", {"token_type": "Bearer"}),
        "access_token",
    ),
    _case("wrong hook for the service", _set("hook", "order-select"), "order-select"),
    _case("unknown hook", _set("hook", "patient-view"), "patient-view"),
    _case("extension not an object", _set("extension", ["x"]), "extension"),
]


def _as_param(case: tuple[str, bytes, int, tuple[str, ...]]) -> Any:
    name, body, status, needles = case
    return pytest.param(body, status, needles, id=name)


@pytest.mark.parametrize(("body", "status", "needles"), [*map(_as_param, MALFORMED), *STRUCTURAL])
async def test_malformed_request_is_a_clear_4xx(
    shared_client: httpx.AsyncClient, body: bytes, status: int, needles: tuple[str, ...]
) -> None:
    response = await shared_client.post(
        ORDER_SIGN_URL, content=body, headers={"content-type": "application/json"}
    )
    assert_outcome(response, status, *needles)


SELECT_CASES = [
    pytest.param(_delete("context.selections"), "selections", id="missing selections"),
    pytest.param(_set("context.selections", []), "selections", id="empty selections"),
    pytest.param(_set("context.selections", "ServiceRequest/cac-1"), "selections", id="string"),
    pytest.param(_set("context.selections", ["cac-1"]), "selection", id="not a reference"),
    pytest.param(_set("context.selections", [7]), "selections", id="not strings"),
]


@pytest.mark.parametrize(("change", "needle"), SELECT_CASES)
async def test_order_select_needs_well_formed_selections(
    shared_client: httpx.AsyncClient, change: Callable[[dict[str, Any]], None], needle: str
) -> None:
    request = hook_request(hook="order-select")
    change(request)
    response = await shared_client.post(ORDER_SELECT_URL, json=request)
    assert_outcome(response, 400, needle)


async def test_unknown_service_is_404(shared_client: httpx.AsyncClient) -> None:
    response = await shared_client.post("/cds-services/no-such-service", json=hook_request())
    assert_outcome(response, 404, "no-such-service")


async def test_feedback_for_unknown_service_is_404(shared_client: httpx.AsyncClient) -> None:
    response = await shared_client.post("/cds-services/no-such-service/feedback", json={})
    assert_outcome(response, 404, "no-such-service")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", ORDER_SIGN_URL),
        ("PUT", ORDER_SIGN_URL),
        ("DELETE", ORDER_SIGN_URL),
        ("POST", "/cds-services"),
        ("GET", f"{ORDER_SIGN_URL}/feedback"),
    ],
)
async def test_wrong_method_is_405(
    shared_client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await shared_client.request(method, path, json=hook_request())
    assert_outcome(response, 405)
    # RFC 9110 §15.5.6: the 405 says which methods the resource has (issue 10 item 6).
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert method not in allowed and allowed & {"GET", "POST"}


async def test_body_over_the_limit_is_413(make_settings: Any, app_client: Any) -> None:
    limit = 4096
    request = hook_request()
    request["context"]["draftOrders"]["entry"][0]["resource"]["note"] = [{"text": "x" * limit}]
    body = json.dumps(request).encode()
    async with app_client(make_settings(limits={"max_body_bytes": limit})) as client:
        declared = await client.post(
            ORDER_SIGN_URL, content=body, headers={"content-type": "application/json"}
        )

        async def chunks() -> Any:
            for start in range(0, len(body), 1000):
                yield body[start : start + 1000]

        streamed = await client.post(
            ORDER_SIGN_URL, content=chunks(), headers={"content-type": "application/json"}
        )
        small = await client.post(ORDER_SIGN_URL, json=hook_request())
    assert_outcome(declared, 413, str(limit))
    assert "content-length" not in streamed.request.headers  # chunked: no declared length
    assert_outcome(streamed, 413, str(limit))
    assert small.status_code == 200  # the limit is not so low that it refuses real calls
    assert_conformant_response(small.json())


def _mutations() -> list[Any]:
    """Many small corruptions of a valid request: the service may refuse them, never crash."""
    base = hook_request(*bundling_pair())
    junk: list[Any] = [None, "", "x", 0, -1, 1.5, True, [], {}, [None], [{}], {"a": {}}]
    paths = [
        "hook",
        "hookInstance",
        "fhirServer",
        "fhirAuthorization",
        "context",
        "context.userId",
        "context.patientId",
        "context.encounterId",
        "context.draftOrders",
        "context.draftOrders.entry",
        "context.draftOrders.type",
        "prefetch",
        "prefetch.patient",
        "prefetch.coverage",
        "extension",
    ]
    cases = []
    for path in paths:
        for value in junk:
            request = copy.deepcopy(base)
            _set(path, value)(request)
            cases.append(pytest.param(request, id=f"{path}={json.dumps(value)}"))
    # Corruptions deeper than the wire model: inside Bundles and resources.
    deep: dict[str, Any] = {
        "entry of strings": {"context.draftOrders.entry": ["a", 1, None]},
        "entry resource a string": {"context.draftOrders.entry": [{"resource": "x"}]},
        "resource without type": {"context.draftOrders.entry": [{"resource": {"id": "a"}}]},
        "unknown resource type": {
            "context.draftOrders.entry": [{"resource": {"resourceType": "Nope", "id": "a"}}]
        },
        "resourceType a number": {
            "context.draftOrders.entry": [{"resource": {"resourceType": 5, "id": "a"}}]
        },
        "prefetch bundle link a number": {
            "prefetch.coverage": {"resourceType": "Bundle", "type": "searchset", "link": 5}
        },
        "prefetch bundle link of strings": {
            "prefetch.coverage": {"resourceType": "Bundle", "type": "searchset", "link": ["x"]}
        },
        "prefetch bundle entry a dict": {
            "prefetch.conditions": {"resourceType": "Bundle", "entry": {"resource": {}}}
        },
        "prefetch bundle entry a number": {
            "prefetch.conditions": {"resourceType": "Bundle", "entry": 3}
        },
        "prefetch resource of wrong type": {
            "prefetch.patient": {"resourceType": "Coverage", "id": "c", "status": "active"}
        },
        "order code a string": {
            "context.draftOrders.entry": [
                {"resource": {**service_request("a", "75571"), "code": "x"}}
            ]
        },
        "order date garbage": {
            "context.draftOrders.entry": [
                {"resource": {**service_request("a", "75571"), "occurrenceDateTime": "soon"}}
            ]
        },
        "nan in json": {"context.draftOrders.entry": [{"resource": {"id": float("nan")}}]},
    }
    for name, changes in deep.items():
        request = copy.deepcopy(base)
        for path, value in changes.items():
            _set(path, value)(request)
        cases.append(pytest.param(request, id=name))
    return cases


@pytest.mark.parametrize("request_body", _mutations())
async def test_never_500(shared_client: httpx.AsyncClient, request_body: dict[str, Any]) -> None:
    response = await shared_client.post(
        ORDER_SIGN_URL,
        content=json.dumps(request_body).encode(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        assert_conformant_response(response.json())
    else:
        assert_outcome(response, response.status_code)


def _with_number(literal: str) -> bytes:
    """A valid order-sign call whose draft order carries `literal` as a JSON number."""
    body = json.dumps(hook_request())
    return body.replace('"status": "draft"', f'"status": "draft", "x": {literal}', 1).encode()


@pytest.mark.parametrize(
    ("literal", "needle"),
    [
        ("1e999", "number"),  # would become infinity, then null in systemActions
        ("-1e999", "number"),
        ("NaN", "number"),
        ("Infinity", "number"),
        ("9" * 5000, "number"),  # longer than Python's int conversion limit
    ],
)
async def test_unusable_numbers_are_a_400(
    shared_client: httpx.AsyncClient, literal: str, needle: str
) -> None:
    """Issue 10 items 2 and 4: never a 500, never a null sent back."""
    response = await shared_client.post(
        ORDER_SIGN_URL, content=_with_number(literal), headers={"content-type": "application/json"}
    )
    assert_outcome(response, 400, needle)


def _nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"url": "http://example.org/leaf", "valueString": "x"}
    for _ in range(depth):
        node = {"url": "http://example.org/nest", "extension": [node]}
    return node


async def test_deeply_nested_fhir_in_a_draft_order_is_refused_not_a_500(
    shared_client: httpx.AsyncClient,
) -> None:
    """Issue 10 item 2: ~200 levels of extension nesting in a draft order made model validation
    overflow the stack (500). The body is refused up front, naming the limit."""
    order = service_request("cac-1", "75571")
    order["extension"] = [_nested(400)]
    response = await shared_client.post(ORDER_SIGN_URL, json=hook_request(order))
    assert_outcome(response, 413, "limits.max_json_depth")


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (
            lambda r: r["context"]["draftOrders"]["entry"].extend(
                {"resource": service_request(f"o{i}", "71046")} for i in range(101)
            ),
            "limits.max_draft_orders",
        ),
        (
            lambda r: r["context"]["draftOrders"]["entry"][0]["resource"].update(
                {"x": list(range(10_001))}
            ),
            "limits.max_array_items",
        ),
    ],
    ids=["draft-orders", "array-length"],
)
async def test_what_one_call_may_carry_is_bounded(
    shared_client: httpx.AsyncClient, change: Callable[[dict[str, Any]], None], needle: str
) -> None:
    """Issue 10: a legal-size body can still hold work enough to stall a call (a 200,000-number
    array, hundreds of orders); each bound is a documented setting and a 413 naming it."""
    request = hook_request()
    change(request)
    response = await shared_client.post(ORDER_SIGN_URL, json=request)
    assert_outcome(response, 413, needle)


async def test_feedback_items_are_bounded(shared_client: httpx.AsyncClient) -> None:
    item = {"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-12-01T10:00:00Z"}
    response = await shared_client.post(
        f"{ORDER_SIGN_URL}/feedback", json={"feedback": [item] * 501}
    )
    assert_outcome(response, 413, "limits.max_feedback_items")


async def test_nulls_the_ehr_sent_are_not_sent_back(shared_client: httpx.AsyncClient) -> None:
    """The coverage information update returns the draft order: FHIR JSON has no null and no
    empty member, so what the EHR sent as null or empty is left out (hostile-input run)."""
    order = service_request("cac-1", "75571")
    order.update({"requester": None, "note": [], "reasonCode": [{"coding": None, "text": "x"}]})
    request = hook_request(order)
    coverage = {
        "resourceType": "Coverage",
        "id": "cov-1",
        "status": "active",
        "beneficiary": {"reference": "Patient/pat-protocol"},
        "payor": [{"display": "Acme Health Plan"}],
        "type": {"coding": [{"system": "https://nahdo.org/sopt", "code": "5"}]},
    }
    request["prefetch"]["coverage"] = {"resourceType": "Bundle", "entry": [{"resource": coverage}]}
    response = await shared_client.post(ORDER_SIGN_URL, json=request)
    assert response.status_code == 200, response.text
    assert response.json()["systemActions"][0]["resource"]["id"] == "cac-1"  # the order, sent back
    text = response.text
    assert "null" not in text and "[]" not in text and "{}" not in text
