"""Hook calls end to end with no (or partial) prefetch: the service reads the EHR's FHIR server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from typing import Any

import httpx
import pytest

from tests.fhir.support import KEYS, PATIENT, RecordingTransport, chart, hook_request, order
from tests.support.conformance import conformant_body, topics
from tests.support.fhir_server import FhirServer

ORDER_SIGN_URL = "/cds-services/cardiac-ct-order-sign"


def _settings(make_settings: Any, base_url: str, **fhir: Any) -> Any:
    return make_settings(
        auth={
            "enabled": False,
            "unauthenticated_fhir_servers": [{"base_url": base_url, "allow_without_token": False}],
        },
        fhir=fhir,
    )


async def _post(
    app_client: Any, settings: Any, transport: httpx.AsyncBaseTransport, body: dict[str, Any]
) -> dict[str, Any]:
    async with app_client(settings, fhir_transport=transport) as client:
        response = await client.post(ORDER_SIGN_URL, json=body)
    return conformant_body(response)


def _card(body: dict[str, Any], topic: str) -> dict[str, Any]:
    return next(c for c in body["cards"] if c["source"]["topic"]["code"] == topic)


async def test_no_prefetch_bundling_conflict_with_an_order_on_file(
    fhir_server: FhirServer, make_settings: Any, app_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The 75574 is not in the draft: only the FHIR server knows it is booked the same day."""
    await fhir_server.load(chart())
    caplog.set_level(logging.DEBUG)
    body = await _post(
        app_client,
        _settings(make_settings, fhir_server.base_url),
        fhir_server.transport,
        hook_request(fhir_server=fhir_server.base_url, token=fhir_server.token),
    )
    assert "cac-bundling-conflict" in topics(body)
    assert "data-incomplete" not in topics(body)
    conflict = _card(body, "cac-bundling-conflict")
    assert "75574" in conflict["summary"]
    fhir_logs = [r.getMessage() for r in caplog.records if r.name.startswith("service.fhir")]
    assert fhir_logs, "fetches are logged (keys, status codes, counts)"
    assert not any(fhir_server.token in m or PATIENT in m for m in fhir_logs)


async def test_prefetch_and_fetch_combine(
    fhir_server: FhirServer, make_settings: Any, app_client: Any
) -> None:
    """cardiacOrders prefetched (with the 75574), everything else fetched."""
    await fhir_server.load(chart())
    recorder = RecordingTransport(fhir_server.transport)
    prefetch = {
        "cardiacOrders": {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": order("ccta-prefetched", "75574", status="active")}],
        }
    }
    body = await _post(
        app_client,
        _settings(make_settings, fhir_server.base_url),
        recorder,
        hook_request(fhir_server=fhir_server.base_url, token=fhir_server.token, prefetch=prefetch),
    )
    assert "ServiceRequest" not in recorder.resource_types()
    assert len(recorder.requests) == len(KEYS) - 1
    assert "cac-bundling-conflict" in topics(body)


async def test_wrong_token_gives_a_data_incomplete_card(
    fhir_server: FhirServer, make_settings: Any, app_client: Any
) -> None:
    await fhir_server.load(chart())
    body = await _post(
        app_client,
        _settings(make_settings, fhir_server.base_url),
        fhir_server.transport,
        hook_request(fhir_server=fhir_server.base_url, token="stale-token-123"),
    )
    assert "data-incomplete" in topics(body)
    card = _card(body, "data-incomplete")
    assert card["indicator"] == "info"
    # Every source failed the same way: one line names them all.
    (line,) = [x for x in card["detail"].splitlines() if x.endswith(": FHIR server answered 401")]
    assert line.startswith(
        "- **Patient demographics**, **Insurance coverage**, **The problem list and diagnoses**, "
        "**BMI observations**, **CCTA reports**, "
    )
    assert line.count("**") == 2 * len(KEYS)
    assert line.endswith(
        "**Procedures on file**, **Imaging studies on file**, "
        "**Cardiac CT orders on file**: FHIR server answered 401"
    )
    assert "bundling with orders on file" in card["detail"]
    assert "stale-token-123" not in str(body)


async def test_hanging_server_still_answers_with_a_data_incomplete_card(
    make_settings: Any, app_client: Any
) -> None:
    async def hang(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        await asyncio.sleep(3600)

    base = "http://slow.test/fhir"
    body = await _post(
        app_client,
        _settings(make_settings, base, deadline_seconds=0.3),
        httpx.ASGITransport(app=hang),
        hook_request(fhir_server=base, token="t"),
    )
    assert topics(body) == ["data-incomplete"]
    assert "did not answer within 0.3 s" in body["cards"][0]["detail"]


async def test_server_outside_the_allowlist_is_never_contacted(
    fhir_server: FhirServer, make_settings: Any, app_client: Any
) -> None:
    recorder = RecordingTransport(fhir_server.transport)
    body = await _post(
        app_client,
        _settings(make_settings, "http://other.test/fhir"),
        recorder,
        hook_request(fhir_server=fhir_server.base_url, token=fhir_server.token),
    )
    assert recorder.requests == []
    card = _card(body, "data-incomplete")
    assert "not on this client's allowlist" in card["detail"]
    assert "every check on data that was not prefetched" in card["detail"]


async def test_data_incomplete_card_can_be_switched_off(
    fhir_server: FhirServer, make_settings: Any, app_client: Any
) -> None:
    request = hook_request(fhir_server=fhir_server.base_url, token="wrong")
    request["extension"] = {"davinci-crd.configuration": {"data-incomplete": False}}
    body = await _post(
        app_client, _settings(make_settings, fhir_server.base_url), fhir_server.transport, request
    )
    assert "data-incomplete" not in topics(body)


async def test_full_prefetch_with_an_unlisted_server_is_not_data_incomplete(
    fhir_server: FhirServer, make_settings: Any, app_client: Any
) -> None:
    """Nothing needed fetching, so an unreachable fhirServer silenced no check."""
    recorder = RecordingTransport(fhir_server.transport)
    prefetch: dict[str, Any] = {key: None for key in KEYS}
    body = await _post(
        app_client,
        _settings(make_settings, "http://other.test/fhir"),
        recorder,
        hook_request(fhir_server=fhir_server.base_url, token=fhir_server.token, prefetch=prefetch),
    )
    assert recorder.requests == []
    assert "data-incomplete" not in topics(body)
