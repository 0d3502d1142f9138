"""order-select: decision support about the *selected* orders only.

Spec: https://cds-hooks.hl7.org/hooks/order-select/ ("should focus on the 'selected' orders";
draftOrders holds every unsigned order of the session, selections the newly chosen ones).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.builders import ORDER_SELECT_URL, bundling_pair, hook_request
from tests.support.conformance import conformant_body, topics

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _select(client: httpx.AsyncClient, selections: list[str]) -> dict[str, Any]:
    request = hook_request(*bundling_pair(), hook="order-select", selections=selections)
    response = await client.post(ORDER_SELECT_URL, json=request)
    return conformant_body(response)


async def test_selected_calcium_score_with_a_ccta_in_the_draft(
    shared_client: httpx.AsyncClient,
) -> None:
    body = await _select(shared_client, ["ServiceRequest/cac-1"])
    assert "cac-bundling-conflict" in topics(body)
    card = body["cards"][topics(body).index("cac-bundling-conflict")]
    assert card["suggestions"][0]["actions"][0]["resourceId"] == "ServiceRequest/cac-1"


async def test_only_the_ccta_selected_gives_no_card_about_the_calcium_score(
    shared_client: httpx.AsyncClient,
) -> None:
    body = await _select(shared_client, ["ServiceRequest/ccta-1"])
    assert "cac-bundling-conflict" not in topics(body)
    for action in body.get("systemActions", []):
        resource = action.get("resource", {})
        assert f"{resource.get('resourceType')}/{resource.get('id')}" != "ServiceRequest/cac-1"


async def test_both_selected(shared_client: httpx.AsyncClient) -> None:
    body = await _select(shared_client, ["ServiceRequest/ccta-1", "ServiceRequest/cac-1"])
    assert topics(body).count("cac-bundling-conflict") == 1


async def test_selection_not_among_the_drafts_gives_no_card(
    shared_client: httpx.AsyncClient,
) -> None:
    body = await _select(shared_client, ["ServiceRequest/not-in-draft"])
    assert topics(body) == []
