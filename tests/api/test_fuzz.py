"""Property-based fuzzing of the hook endpoint: whatever a caller sends, never a 5xx, and every
200 is a conformant CDS Hooks response without nulls (issue 10).

Bodies start from a valid order-sign call (a calcium score and a CCTA, full prefetch) and have
one to three members replaced by arbitrary JSON: type confusion, deep structures, odd strings,
huge and negative numbers. Bounded (a fixed number of examples, no shrinking deadline) so the
suite stays fast. Hypothesis draws the bodies (derandomized: the same ones every run) and the
test sends them on its own event loop; a failure prints the body that caused it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.test_invoke_smoke import ORDER_SIGN_URL, REQUEST
from tests.conftest import AppClient, settings_in
from tests.support.conformance import assert_conformant_response

pytestmark = pytest.mark.asyncio(loop_scope="module")

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every member path of a JSON document (object keys and list indexes)."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


PATHS = _paths(REQUEST)


def _replaced(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(body)
    node: Any = changed
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return changed


def _has_null(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(_has_null(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_null(v) for v in value)
    return False


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(tmp_path_factory: Any) -> AsyncIterator[httpx.AsyncClient]:
    served = AppClient(settings_in(tmp_path_factory.mktemp("fuzz"), auth={"enabled": False}))
    async with served as http:
        yield http


@st.composite
def mutated_requests(draw: st.DrawFn) -> dict[str, Any]:
    body = copy.deepcopy(REQUEST)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(body) or PATHS
        path = draw(st.sampled_from(sorted(paths, key=repr)))
        body = _replaced(body, path, draw(JSON_VALUES))
    return body


async def test_no_body_gives_a_server_error(client: httpx.AsyncClient) -> None:
    seen: list[dict[str, Any]] = []

    @settings(
        max_examples=150,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(mutated_requests())
    def collect(body: dict[str, Any]) -> None:
        seen.append(body)

    collect()  # hypothesis drives a sync function; the calls below run on the test's loop
    assert seen
    for body in seen:
        content = json.dumps(body).encode()
        response = await client.post(
            ORDER_SIGN_URL, content=content, headers={"content-type": "application/json"}
        )
        assert response.status_code < 500, content[:2000]
        if response.status_code == 200:
            answer = response.json()
            assert_conformant_response(answer)
            assert not _has_null(answer), content[:2000]
        else:
            assert response.json()["resourceType"] == "OperationOutcome"
