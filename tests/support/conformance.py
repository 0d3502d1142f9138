"""CDS Hooks 2.0 response rules, checked on every response the tests produce.

The FHIRPath invariants are the HL7 logical model's (HL7/cds-hooks input/fsh/invariants), run
verbatim with fhirpathpy; the rest are the spec's JSON rules (no null or empty values, summary
under 140 characters, uuids for feedback, descriptions on every action).
"""

from __future__ import annotations

from typing import Any

import httpx
from fhirpathpy import evaluate as fhirpath

CARD_INVARIANTS = {
    "cds-resp-1": (
        "(selectionBehavior = 'at-most-one') implies suggestions.where(isRecommended).count() <= 1"
    ),
    "cds-resp-4": "overrideReasons.all(display.exists())",
    "cds-resp-5": "suggestions.all(actions.all(description.exists()))",
    "cds-resp-6": "suggestions.exists() implies selectionBehavior.exists()",
}
ACTION_INVARIANTS = {
    "cds-resp-2": "(type = 'delete') implies (resourceId.exists() and resource.empty())",
}


def _no_empty(value: Any, path: str) -> None:
    assert value is not None, f"{path} is null"
    if isinstance(value, str | list | dict):
        assert len(value) > 0, f"{path} is empty"
    if isinstance(value, dict):
        for key, item in value.items():
            _no_empty(item, f"{path}.{key}")
    if isinstance(value, list):
        for i, item in enumerate(value):
            _no_empty(item, f"{path}[{i}]")


def _check_action(action: dict[str, Any], path: str) -> None:
    assert action["type"] in {"create", "update", "delete"}, path
    assert action.get("description"), f"{path}: action without description"
    for name, expr in ACTION_INVARIANTS.items():
        assert fhirpath(action, expr) == [True], f"{path}: {name} fails"
    if action["type"] in {"create", "update"}:
        assert action["resource"]["resourceType"], path


def assert_conformant_response(body: dict[str, Any]) -> None:
    """Fail with a precise path if `body` breaks a CDS Hooks 2.0 response rule."""
    assert set(body) <= {"cards", "systemActions"}, f"unexpected members {set(body)}"
    assert isinstance(body["cards"], list)
    for key, value in body.items():
        if key != "cards":
            _no_empty(value, key)
    for i, card in enumerate(body["cards"]):
        path = f"cards[{i}]"
        _no_empty(card, path)
        assert card.get("uuid"), f"{path}: no uuid (feedback needs it)"
        assert 0 < len(card["summary"]) < 140, f"{path}: summary length {len(card['summary'])}"
        assert card["indicator"] in {"info", "warning", "critical"}, path
        assert card["source"]["label"], path
        topic = card["source"].get("topic")
        assert topic and topic.get("system") and topic.get("code"), f"{path}: no source.topic"
        if card["indicator"] == "warning":
            assert card.get("overrideReasons"), f"{path}: warning card without overrideReasons"
        for name, expr in CARD_INVARIANTS.items():
            assert fhirpath(card, expr) == [True], f"{path}: {name} fails"
        for j, suggestion in enumerate(card.get("suggestions", [])):
            assert suggestion.get("uuid"), f"{path}.suggestions[{j}]: no uuid"
            for k, action in enumerate(suggestion.get("actions", [])):
                _check_action(action, f"{path}.suggestions[{j}].actions[{k}]")
    for i, action in enumerate(body.get("systemActions", [])):
        _check_action(action, f"systemActions[{i}]")


def conformant_body(response: httpx.Response) -> dict[str, Any]:
    """The body of a hook call answered 200, checked by `assert_conformant_response`."""
    assert response.status_code == 200, f"{response.status_code}: {response.text}"
    body: dict[str, Any] = response.json()
    assert_conformant_response(body)
    return body


def topics(body: dict[str, Any]) -> list[str]:
    return [card["source"]["topic"]["code"] for card in body["cards"]]
