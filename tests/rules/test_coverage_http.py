"""Coverage cards and CRD coverage information end to end: HTTP, options, audit ids."""

from __future__ import annotations

import copy
import itertools
from datetime import date
from typing import Any

from fhir.resources.R4B.servicerequest import ServiceRequest

from service.cdshooks.hooks import HOOKS
from service.cdshooks.models import HookRequest
from service.fhir.gather import gather_prefetch
from service.offline import coverage_summary
from service.pipeline import Knowledge, run
from tests.support.conformance import conformant_body, topics
from tests.support.fhir_json import PREFETCH_KEYS

ORDER_SIGN_URL = "/cds-services/cardiac-ct-order-sign"
ORDER_SELECT_URL = "/cds-services/cardiac-ct-order-select"
# Every prefetch key but the two each test writes itself.
KEYS = tuple(key for key in PREFETCH_KEYS if key not in {"patient", "coverage"})


def _order(order_id: str, system: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": order_id,
        "status": "draft",
        "intent": "order",
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": "Patient/p-http"},
        "occurrenceDateTime": "2026-12-01",
        "reasonCode": [
            {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E78.5"}]}
        ],
        "note": [{"text": "kept as sent"}],
    }


REQUEST: dict[str, Any] = {
    "hook": "order-sign",
    "hookInstance": "5d7b5f0e-1c39-4c1b-8f43-7f0c0b0d3c11",
    "context": {
        "userId": "Practitioner/dr-1",
        "patientId": "p-http",
        "draftOrders": {
            "resourceType": "Bundle",
            "entry": [
                {"resource": _order("cac-a", "http://www.ama-assn.org/go/cpt", "75571")},
                {"resource": _order("cac-b", "urn:oid:2.16.840.1.113883.6.285", "S8092")},
            ],
        },
    },
    "prefetch": {
        "patient": {"resourceType": "Patient", "id": "p-http"},
        "coverage": {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [
                {
                    "resource": {
                        "resourceType": "Coverage",
                        "id": "cov-1",
                        "status": "active",
                        "beneficiary": {"reference": "Patient/p-http"},
                        "payor": [{"display": "CMS"}],
                        "type": {
                            "coding": [
                                {"system": "urn:oid:2.16.840.1.113883.3.221.5", "code": "121"}
                            ]
                        },
                    }
                }
            ],
        },
        **{key: None for key in KEYS},
    },
}


def _with_config(**config: Any) -> dict[str, Any]:
    request = copy.deepcopy(REQUEST)
    request["extension"] = {"davinci-crd.configuration": config}
    return request


async def _post(make_settings: Any, app_client: Any, body: dict[str, Any], url: str) -> Any:
    async with app_client(make_settings()) as client:
        response = await client.post(url, json=body)
    return conformant_body(response)


async def test_original_medicare_abn_cards_and_not_covered(
    make_settings: Any, app_client: Any
) -> None:
    body = await _post(make_settings, app_client, REQUEST, ORDER_SIGN_URL)
    assert topics(body) == ["cac-abn-required", "cac-abn-required"]
    for card in body["cards"]:
        action = card["suggestions"][0]["actions"][0]
        assert action["type"] == "create"
        assert action["resource"]["resourceType"] == "Task"
    summary = coverage_summary(body)
    assert summary["ServiceRequest/cac-a"]["covered"] == "not-covered"
    # S8092 is never a Medicare billing code: the claim carries 75571 (rules.md §1).
    assert summary["ServiceRequest/cac-b"]["billingCode"] == "75571"
    ids = {s["coverage-assertion-id"] for s in summary.values()}
    assert len(ids) == 2  # one per order, distinct
    for action in body["systemActions"]:
        resource = action["resource"]
        ServiceRequest.model_validate(resource)
        assert resource["note"] == [{"text": "kept as sent"}]


async def test_coverage_info_off_and_cost_on(make_settings: Any, app_client: Any) -> None:
    body = await _post(
        make_settings,
        app_client,
        _with_config(**{"coverage-info": False, "cost": True}),
        ORDER_SIGN_URL,
    )
    assert "systemActions" not in body
    assert sorted(topics(body)) == [
        "cac-abn-required",
        "cac-abn-required",
        "cost-estimate",
        "cost-estimate",
    ]
    cost = next(c for c in body["cards"] if c["source"]["topic"]["code"] == "cost-estimate")
    assert "$75-$150" in cost["summary"]
    assert cost["indicator"] == "info"


async def test_max_cards_keeps_warnings_and_the_system_actions(
    make_settings: Any, app_client: Any
) -> None:
    body = await _post(
        make_settings, app_client, _with_config(cost=True, **{"max-cards": 1}), ORDER_SIGN_URL
    )
    assert topics(body) == ["cac-abn-required"]
    assert len(body["systemActions"]) == 2  # coverage information is not a card


async def test_order_select_only_the_selected_order(make_settings: Any, app_client: Any) -> None:
    request = copy.deepcopy(REQUEST)
    request["hook"] = "order-select"
    request["context"]["selections"] = ["ServiceRequest/cac-b"]
    body = await _post(make_settings, app_client, request, ORDER_SELECT_URL)
    assert topics(body) == ["cac-abn-required"]
    assert list(coverage_summary(body)) == ["ServiceRequest/cac-b"]


def test_evaluation_carries_the_coverage_assertion_ids() -> None:
    knowledge = Knowledge.load()
    request = HookRequest.model_validate(REQUEST)
    templates = {key: "" for key in REQUEST["prefetch"]}
    data, _ = gather_prefetch(templates, request.prefetch)
    counter = itertools.count()
    evaluation = run(
        HOOKS["order-sign"],
        request,
        data,
        knowledge,
        option_defaults={"coverage-info": True, "cost": False, "max-cards": 10},
        today=date(2026, 11, 23),
        new_uuid=lambda: f"uuid-{next(counter)}",
    )
    summary = coverage_summary(evaluation.response.wire())
    assert evaluation.coverage_assertion_ids == tuple(
        summary[ref]["coverage-assertion-id"]
        for ref in ("ServiceRequest/cac-a", "ServiceRequest/cac-b")
    )
    assert set(evaluation.coverage_assertion_ids).isdisjoint(i.uuid for i in evaluation.issued)
