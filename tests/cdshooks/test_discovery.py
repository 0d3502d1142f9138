"""Discovery is a contract with every EHR that registered us: pin it byte for byte, then check it.

Spec: https://cds-hooks.hl7.org/2.0/#discovery . A change to the document must be deliberate:
update tests/cdshooks/discovery.expected.json in the same commit.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

EXPECTED_FILE = Path(__file__).with_name("discovery.expected.json")
# https://cds-hooks.hl7.org/2.0/#prefetch-tokens : the only tokens a 2.0 client must fill.
ALLOWED_TOKENS = {
    "context.patientId",
    "context.encounterId",
    "context.userId",
    "userPractitionerId",
    "userPractitionerRoleId",
    "userPatientId",
    "userRelatedPersonId",
}
TOKEN = re.compile(r"\{\{(.*?)\}\}")
OPTION_FIELDS = {"code", "type", "name", "description", "default"}


@pytest.fixture
async def discovery(make_settings: Any, app_client: Any) -> dict[str, Any]:
    async with app_client(make_settings()) as client:
        response = await client.get("/cds-services")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


async def test_discovery_matches_the_pinned_document(discovery: dict[str, Any]) -> None:
    expected = json.loads(EXPECTED_FILE.read_text(encoding="utf-8"))
    assert discovery == expected, (
        "GET /cds-services changed; if intended, regenerate "
        "tests/cdshooks/discovery.expected.json and say so in the commit"
    )


async def test_every_service_has_the_required_fields(discovery: dict[str, Any]) -> None:
    assert set(discovery) == {"services"}
    for service in discovery["services"]:
        assert {"hook", "id", "description"} <= set(service)
        allowed = {"hook", "title", "description", "id", "prefetch", "usageRequirements"}
        assert set(service) <= allowed | {"extension"}, set(service)
        for value in service.values():
            assert value not in (None, "", [], {}), service["id"]


async def test_one_service_per_hook_and_unique_ids(discovery: dict[str, Any]) -> None:
    hooks = [s["hook"] for s in discovery["services"]]
    ids = [s["id"] for s in discovery["services"]]
    assert sorted(hooks) == ["order-select", "order-sign"]
    assert len(set(ids)) == len(ids)


async def test_prefetch_templates_use_only_2_0_tokens(discovery: dict[str, Any]) -> None:
    for service in discovery["services"]:
        for key, template in service["prefetch"].items():
            tokens = set(TOKEN.findall(template))
            assert tokens, f"{service['id']}.{key} has no token: it would be the same for all"
            assert tokens <= ALLOWED_TOKENS, f"{service['id']}.{key}: {tokens - ALLOWED_TOKENS}"
            # Relative read or search URL: no absolute server, no leading slash.
            assert not template.startswith(("/", "http:", "https:")), template


async def test_configuration_options_are_well_formed(discovery: dict[str, Any]) -> None:
    for service in discovery["services"]:
        # Da Vinci CRD: https://hl7.org/fhir/us/davinci-crd/STU2/deviations.html#configuration-options
        options = service["extension"]["davinci-crd.configuration-options"]
        codes = [o["code"] for o in options]
        assert len(set(codes)) == len(codes)
        for option in options:
            assert set(option) == OPTION_FIELDS, option
            assert option["type"] in {"boolean", "integer"}, option
            expected_type = bool if option["type"] == "boolean" else int
            assert type(option["default"]) is expected_type, option
            assert option["name"].strip() and option["description"].strip()
            assert re.fullmatch(r"[a-z][a-z0-9-]*", option["code"]), option["code"]


async def test_both_services_offer_the_same_prefetch_and_options(discovery: dict[str, Any]) -> None:
    sign, select = sorted(discovery["services"], key=lambda s: s["hook"] != "order-sign")
    assert sign["prefetch"] == select["prefetch"]
    assert sign["extension"] == select["extension"]
