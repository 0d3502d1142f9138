"""One audit record per hook call, answered or rejected, findable by hookInstance."""

from __future__ import annotations

import copy
import json
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from service.config import Settings
from service.storage.models import HookCall
from service.storage.store import Storage
from tests.api.test_invoke_smoke import ORDER_SIGN_URL, REQUEST
from tests.security.support import ISSUER, bearer, mint, one_trusted_client
from tests.storage.conftest import ServedApp
from tests.support.conformance import assert_conformant_response, conformant_body, topics


def calls_for(storage: Storage, hook_instance: str) -> list[HookCall]:
    with storage.session() as session:
        query = (
            select(HookCall)
            .where(HookCall.hook_instance == hook_instance)
            .options(selectinload(HookCall.cards))
        )
        return list(session.scalars(query))


def with_instance(hook_instance: str) -> dict[str, Any]:
    request = copy.deepcopy(REQUEST)
    request["hookInstance"] = hook_instance
    return request


async def test_answered_call_is_audited_with_cards_and_data_sources(
    make_settings: Any, database_url: str, tmp_path: Path
) -> None:
    auth, key = one_trusted_client(tmp_path)
    settings: Settings = make_settings(
        storage={"url": database_url},
        auth=auth,
    )
    served = ServedApp(settings)
    async with served as client:
        response = await client.post(
            ORDER_SIGN_URL,
            json=with_instance("audit-answered-1"),
            headers=bearer(mint(key, f"http://cds.test{ORDER_SIGN_URL}")),
        )
        await served.drain_audit()
        [call] = calls_for(served.persistence.storage, "audit-answered-1")
    body = conformant_body(response)
    assert (call.status, call.hook, call.service_id) == (200, "order-sign", "cardiac-ct-order-sign")
    assert call.client_iss == ISSUER
    assert call.patient_id == "pat-1"
    assert call.order_ids == ["ServiceRequest/cac-1", "ServiceRequest/ccta-1"]
    assert call.latency_ms > 0
    # Every key was sent as null prefetch: "no data", and nothing fetched.
    assert call.data_sources and set(call.data_sources.values()) == {"null"}
    issued = {(c.card_uuid, c.topic, c.indicator) for c in call.cards}
    assert issued == {
        (card["uuid"], code, card["indicator"])
        for card, code in zip(body["cards"], topics(body), strict=True)
    }
    bundling = next(c for c in call.cards if c.topic == "cac-bundling-conflict")
    assert "ServiceRequest/cac-1" in bundling.order_refs


async def test_rejected_calls_are_audited_with_what_is_known(settings: Settings) -> None:
    wrong_hook = with_instance("audit-rejected-1")
    wrong_hook["hook"] = "order-select"
    served = ServedApp(settings)
    async with served as client:
        rejected = await client.post(ORDER_SIGN_URL, json=wrong_hook)
        unknown = await client.post("/cds-services/no-such-service", json=REQUEST)
        too_big = await client.post(
            ORDER_SIGN_URL, content=b"x" * (settings.limits.max_body_bytes + 1)
        )
        await served.drain_audit()
        storage = served.persistence.storage
        [call] = calls_for(storage, "audit-rejected-1")
        with storage.session() as session:
            statuses = sorted((c.service_id, c.status) for c in session.scalars(select(HookCall)))
    assert (rejected.status_code, unknown.status_code, too_big.status_code) == (400, 404, 413)
    assert (call.status, call.hook, call.patient_id, call.cards) == (
        400,
        "order-select",
        "pat-1",
        [],
    )
    assert statuses == [
        ("cardiac-ct-order-sign", 400),
        ("cardiac-ct-order-sign", 413),
        ("no-such-service", 404),
    ]


async def test_discovery_and_feedback_are_not_hook_calls(settings: Settings) -> None:
    served = ServedApp(settings)
    async with served as client:
        await client.get("/cds-services")
        await client.post(
            f"{ORDER_SIGN_URL}/feedback",
            json={
                "feedback": [
                    {"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-11-01T00:00Z"}
                ]
            },
        )
        await served.drain_audit()
        with served.persistence.storage.session() as session:
            assert list(session.scalars(select(HookCall))) == []


SCENARIO = Path(__file__).parents[2] / "fhir_fixtures/scenarios/cac-screening-horizon-positive.json"


async def test_payer_profile_and_coverage_assertions_are_audited(settings: Settings) -> None:
    scenario = json.loads(SCENARIO.read_text(encoding="utf-8"))
    served = ServedApp(settings)
    async with served as client:
        served.app.state.runtime.today = lambda: date.fromisoformat(scenario["today"])
        response = await client.post(ORDER_SIGN_URL, json=scenario["request"])
        await served.drain_audit()
        [call] = calls_for(served.persistence.storage, scenario["request"]["hookInstance"])
    assert response.status_code == 200, response.text
    assert_conformant_response(response.json())
    assert call.payer_profile == "horizon-bcbs-nj"
    assert call.cards and {c.payer_profile for c in call.cards} == {"horizon-bcbs-nj"}
    assert call.coverage_assertion_ids
    for assertion_id in call.coverage_assertion_ids:
        assert assertion_id in response.text  # the ids the client got in systemActions


async def test_dispute_lookup_by_hook_instance_with_feedback(
    make_settings: Any, database_url: str, tmp_path: Path, monkeypatch: Any
) -> None:
    """What a compliance lead runs: `cardiac-ct-cds audit <hookInstance>`."""
    from typer.testing import CliRunner

    from service.cli import app as cli

    auth, key = one_trusted_client(tmp_path)
    settings: Settings = make_settings(storage={"url": database_url}, auth=auth)
    served = ServedApp(settings)
    async with served as client:
        response = await client.post(
            ORDER_SIGN_URL,
            json=with_instance("audit-dispute-1"),
            headers=bearer(mint(key, f"http://cds.test{ORDER_SIGN_URL}")),
        )
        card = next(c for c in conformant_body(response)["cards"])
        feedback_url = f"{ORDER_SIGN_URL}/feedback"
        answer = await client.post(
            feedback_url,
            json={
                "feedback": [
                    {
                        "card": card["uuid"],
                        "outcome": "overridden",
                        "overrideReason": {
                            "reason": {
                                "system": "https://cardiac-ct-cds.org/fhir/CodeSystem/override-reason",
                                "code": "clinically-indicated",
                                "display": "Clinically indicated",
                            },
                            "userComment": "separate study",
                        },
                        "outcomeTimestamp": "2026-11-23T10:00:00Z",
                    }
                ]
            },
            headers=bearer(mint(key, f"http://cds.test{feedback_url}")),
        )
        assert answer.status_code == 200, answer.text
        await served.drain_audit()
        [record] = served.persistence.storage.find_calls("audit-dispute-1")
    assert record["hookInstance"] == "audit-dispute-1"
    assert record["clientIss"] == ISSUER
    assert record["status"] == 200
    found = next(c for c in record["cards"] if c["uuid"] == card["uuid"])
    assert found["topic"] == card["source"]["topic"]["code"]
    assert [(f["outcome"], f["overrideReason"], f["comment"]) for f in found["feedback"]] == [
        ("overridden", "clinically-indicated", "separate study")
    ]

    monkeypatch.setenv("CARDIAC_CDS_STORAGE__URL", database_url)
    printed = CliRunner().invoke(cli, ["audit", "audit-dispute-1"])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.output) == [record]
    missing = CliRunner().invoke(cli, ["audit", "no-such-instance"])
    assert missing.exit_code == 1


async def test_a_call_with_a_lone_surrogate_in_its_ids_is_still_audited(
    settings: Settings,
) -> None:
    """Issue 10 item 8: a patientId holding a lone surrogate (valid JSON, not valid UTF-8)
    made the database refuse the audit record, so the call left no trace."""
    body = with_instance("audit-surrogate-1")
    body["context"]["patientId"] = "pat-\ud800"
    served = ServedApp(settings)
    async with served as client:
        response = await client.post(
            ORDER_SIGN_URL,
            content=json.dumps(body).encode(),  # ensure_ascii: the surrogate as \\ud800
            headers={"content-type": "application/json"},
        )
        await served.drain_audit()
        [call] = calls_for(served.persistence.storage, "audit-surrogate-1")
    assert response.status_code in (200, 400)
    assert call.patient_id == "pat-?"
    assert served.persistence.writer.health().dropped == 0
