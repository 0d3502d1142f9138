"""Feedback endpoint: spec-shaped feedback is accepted, malformed feedback is a 400.

Spec: https://cds-hooks.hl7.org/2.0/#feedback . The sandbox sends override reasons without a
display, and feedback may arrive for the same card more than once: both are accepted. What is
stored is tested in tests/storage; this is the wire contract only.
"""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from tests.api.builders import ORDER_SIGN_URL, bundling_pair, hook_request
from tests.api.test_invocation_errors import assert_outcome
from tests.support.conformance import assert_conformant_response

pytestmark = pytest.mark.asyncio(loop_scope="module")

FEEDBACK_URL = f"{ORDER_SIGN_URL}/feedback"
CARD = "9368d37b-283f-44a0-93ea-547cebab93ed"
WHEN = "2026-11-23T10:15:00Z"
REASON_SYSTEM = "https://example.com/cds-hooks/override-reason-system"

ACCEPTED = {
    "card": CARD,
    "outcome": "accepted",
    "acceptedSuggestions": [{"id": "e56e1945-20b3-4393-8503-a1a20fd73152"}],
    "outcomeTimestamp": WHEN,
}
OVERRIDDEN = {
    "card": CARD,
    "outcome": "overridden",
    "overrideReason": {
        "reason": {"code": "already-performed", "system": REASON_SYSTEM, "display": "Done"},
        "userComment": "Scan already done at an outside facility.",
    },
    "outcomeTimestamp": WHEN,
}
SANDBOX_OVERRIDE = {  # cds-hooks/sandbox: reason Coding without display
    "card": CARD,
    "outcome": "overridden",
    "overrideReason": {"reason": {"code": "d7ecf885", "system": REASON_SYSTEM}},
    "outcomeTimestamp": WHEN,
}
BARE_OVERRIDE = {"card": CARD, "outcome": "overridden", "outcomeTimestamp": WHEN}


@pytest.mark.parametrize(
    "items",
    [
        pytest.param([ACCEPTED], id="accepted"),
        pytest.param([OVERRIDDEN], id="overridden with reason and comment"),
        pytest.param([SANDBOX_OVERRIDE], id="sandbox reason without display"),
        pytest.param([BARE_OVERRIDE], id="overridden without reason"),
        pytest.param([ACCEPTED, OVERRIDDEN, SANDBOX_OVERRIDE], id="several items"),
        pytest.param([{**ACCEPTED, "extension": {"com.example.x": 1}}], id="extension"),
    ],
)
async def test_spec_shaped_feedback_is_accepted(
    shared_client: httpx.AsyncClient, items: list[dict[str, Any]]
) -> None:
    response = await shared_client.post(FEEDBACK_URL, json={"feedback": items})
    assert response.status_code == 200, response.text


async def test_repeated_feedback_is_accepted_again(shared_client: httpx.AsyncClient) -> None:
    body = {"feedback": [OVERRIDDEN]}
    first = await shared_client.post(FEEDBACK_URL, json=body)
    second = await shared_client.post(FEEDBACK_URL, json=copy.deepcopy(body))
    assert (first.status_code, second.status_code) == (200, 200)


async def test_feedback_on_a_card_the_service_issued(shared_client: httpx.AsyncClient) -> None:
    response = await shared_client.post(ORDER_SIGN_URL, json=hook_request(*bundling_pair()))
    assert response.status_code == 200, response.text
    assert_conformant_response(response.json())
    card = next(
        c
        for c in response.json()["cards"]
        if c["source"]["topic"]["code"] == "cac-bundling-conflict"
    )
    suggestion = card["suggestions"][0]["uuid"]
    feedback = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": suggestion}],
                "outcomeTimestamp": WHEN,
            }
        ]
    }
    answer = await shared_client.post(FEEDBACK_URL, json=feedback)
    assert answer.status_code == 200, answer.text


def _without(item: dict[str, Any], member: str) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != member}


MALFORMED = [
    pytest.param(b"", "empty", id="empty body"),
    pytest.param(b"{feedback", "JSON", id="not json"),
    pytest.param(b"[]", "feedback", id="a list"),
    pytest.param({}, "feedback", id="no feedback member"),
    pytest.param({"feedback": []}, "feedback", id="empty feedback"),
    pytest.param({"feedback": ACCEPTED}, "feedback", id="feedback an object"),
    pytest.param({"feedback": ["x"]}, "feedback", id="item a string"),
    pytest.param({"feedback": [_without(ACCEPTED, "card")]}, "card", id="no card"),
    pytest.param({"feedback": [{**ACCEPTED, "card": ""}]}, "card", id="empty card"),
    pytest.param({"feedback": [_without(ACCEPTED, "outcome")]}, "outcome", id="no outcome"),
    pytest.param({"feedback": [{**ACCEPTED, "outcome": "ignored"}]}, "outcome", id="bad outcome"),
    pytest.param(
        {"feedback": [_without(ACCEPTED, "outcomeTimestamp")]},
        "outcomeTimestamp",
        id="no timestamp",
    ),
    pytest.param(
        {"feedback": [_without(ACCEPTED, "acceptedSuggestions")]},
        "acceptedSuggestions",
        id="accepted without suggestions",
    ),
    pytest.param(
        {"feedback": [{**ACCEPTED, "acceptedSuggestions": [{}]}]},
        "acceptedSuggestions",
        id="suggestion without id",
    ),
    pytest.param(
        {"feedback": [{**ACCEPTED, "acceptedSuggestions": "e56e"}]},
        "acceptedSuggestions",
        id="suggestions a string",
    ),
    pytest.param(
        {"feedback": [{**OVERRIDDEN, "overrideReason": "too busy"}]},
        "overrideReason",
        id="override reason a string",
    ),
    pytest.param(
        {"feedback": [{**OVERRIDDEN, "overrideReason": {"reason": "busy"}}]},
        "reason",
        id="reason not a Coding",
    ),
    pytest.param(
        {"feedback": [{**OVERRIDDEN, "overrideReason": {"userComment": 5}}]},
        "userComment",
        id="comment not a string",
    ),
]


@pytest.mark.parametrize(("body", "needle"), MALFORMED)
async def test_malformed_feedback_is_400(
    shared_client: httpx.AsyncClient, body: Any, needle: str
) -> None:
    if isinstance(body, bytes):
        response = await shared_client.post(
            FEEDBACK_URL, content=body, headers={"content-type": "application/json"}
        )
    else:
        response = await shared_client.post(FEEDBACK_URL, json=body)
    assert_outcome(response, 400, needle)
