"""One large call must not hold the others (issue 10 item 1): evaluation runs off the event loop
and its cost is linear in the draft orders. Checked by completion order, never by timings."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from tests.api.test_invoke_smoke import ORDER_SIGN_URL, REQUEST
from tests.support.conformance import conformant_body, topics
from tests.support.fhir_json import service_request


def _many_ffrct_drafts(count: int) -> dict[str, Any]:
    request = copy.deepcopy(REQUEST)
    request["context"]["draftOrders"]["entry"] = [
        {"resource": service_request(f"ffr-{i}", "75580", patient="pat-1")} for i in range(count)
    ]
    return request


async def test_a_small_call_is_answered_while_a_large_one_is_evaluated(
    make_settings: Any, app_client: Any
) -> None:
    finished: list[str] = []
    settings = make_settings(auth={"enabled": False}, limits={"max_draft_orders": 1000})
    async with app_client(settings) as client:

        async def call(name: str, body: dict[str, Any]) -> dict[str, Any]:
            response = await client.post(ORDER_SIGN_URL, json=body)
            finished.append(name)
            return conformant_body(response)

        large = asyncio.create_task(call("large", _many_ffrct_drafts(1000)))
        await asyncio.sleep(0.05)  # the large call is being evaluated
        small = await call("small", REQUEST)
        large_body = await large
    assert finished == ["small", "large"]
    assert "cac-bundling-conflict" in topics(small)
    # 1000 FFR-CT drafts: far more findings than cards; the answer is capped at max-cards.
    assert len(large_body["cards"]) == 10
