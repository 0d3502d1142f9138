"""Hooks as specs: every layer asks the hook's spec, so a new hook is a spec, not edits across
the package."""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import date
from pathlib import Path

import pytest

from service.cdshooks.discovery import ServiceRegistry
from service.cdshooks.hooks import HOOKS, RequestProblem, parse_hook_request
from service.cdshooks.models import HookRequest
from service.fhir.gather import gather_prefetch
from service.pipeline import Knowledge, run

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "order-sign-bundling.json"


def _example() -> dict:  # type: ignore[type-arg]
    return json.loads(EXAMPLE.read_text(encoding="utf-8"))


def test_every_discovered_service_has_a_spec() -> None:
    assert {s.hook for s in ServiceRegistry().document.services} <= set(HOOKS)


def test_only_order_select_has_selections_and_no_documentation_requests() -> None:
    sign, select = HOOKS["order-sign"], HOOKS["order-select"]
    context = {"draftOrders": {}, "selections": ["ServiceRequest/a"]}
    assert sign.focus(context) is None
    assert select.focus(context) == {"ServiceRequest/a"}
    assert sign.asks_for_documentation and not select.asks_for_documentation


def test_one_parse_path_names_the_problem() -> None:
    service = ServiceRegistry().get("cardiac-ct-order-select")
    assert service is not None
    raw = _example()
    raw["hook"] = "order-select"
    with pytest.raises(RequestProblem, match=r"context\.selections is required for order-select"):
        parse_hook_request(raw, service)
    raw["hook"] = "order-sign"
    with pytest.raises(RequestProblem, match="answers hook 'order-select', not 'order-sign'"):
        parse_hook_request(raw, service)


def _evaluate(spec_name: str, request: HookRequest) -> list[str]:
    knowledge = Knowledge.load()
    spec = HOOKS.get(spec_name) or NEW_HOOK
    data, _ = gather_prefetch({k: "" for k in request.prefetch or {}}, request.prefetch)
    evaluation = run(
        spec,
        request,
        data,
        knowledge,
        option_defaults={"coverage-info": True, "cost": False, "max-cards": 10},
        today=date(2026, 11, 23),
    )
    return [c.topic for c in evaluation.issued]


# A hook this service does not answer, whose orders sit under another context member: the
# pipeline reads them through its spec alone.
NEW_HOOK = dataclasses.replace(HOOKS["order-sign"], name="order-review", orders_key="orders")


def test_a_new_hook_is_a_spec() -> None:
    raw = _example()
    expected = _evaluate("order-sign", HookRequest.model_validate(raw))
    assert expected == ["cac-bundling-conflict"]
    moved = copy.deepcopy(raw)
    moved["hook"] = "order-review"
    moved["context"]["orders"] = moved["context"].pop("draftOrders")
    assert _evaluate("order-review", HookRequest.model_validate(moved)) == expected
