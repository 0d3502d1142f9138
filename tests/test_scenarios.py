"""Golden scenarios: every fhir_fixtures/scenarios/*.json through the HTTP API, twice.

(a) with the full prefetch the file carries; (b) with `prefetch` removed, the same resources in a
real SEKMET FHIR server and `fhirServer` + `fhirAuthorization` pointing at it. Both must give the
topics and CRD coverage information the file expects. (c) checks the premise that makes (a) and
(b) comparable: each prefetch value is exactly what its discovery template finds on the server.

Each scenario gets a fresh in-memory SEKMET server. Files reuse resource ids across scenarios
(Coverage/cov-medicare is in ~50 of them), so one shared server would have them overwrite each
other. Measured on 75 scenarios (2026-11-23): fresh server + load 115 ms per scenario (8.6 s in
all) against 28 ms (2.1 s) for loading into one shared server; the isolation is worth 6 s.
Format: fhir_fixtures/README.md and the scenario format note in the project brief.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from service.cdshooks.discovery import ServiceRegistry
from service.fhir.gather import fill_template
from service.offline import coverage_summary, scenario_resources
from service.pipeline import Knowledge
from tests.conftest import AppClient, settings_in
from tests.support.conformance import conformant_body, topics
from tests.support.fhir_server import FHIR_BASE, running_fhir_server

IN_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")

SCENARIO_DIR = Path(__file__).resolve().parents[1] / "fhir_fixtures" / "scenarios"
SCENARIO_FILES = sorted(SCENARIO_DIR.glob("*.json"))
SCENARIO_ID = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
KINDS = {"positive", "negative", "edge"}
TEMPLATES = ServiceRegistry().document.services[0].prefetch or {}
PREFETCH_KEYS = set(TEMPLATES)
KNOWN_TOPICS = set(Knowledge.load().rule_data.rules)
SERVER_TYPES = {
    "Patient",
    "Coverage",
    "Condition",
    "Observation",
    "DiagnosticReport",
    "Procedure",
    "ImagingStudy",
    "ServiceRequest",
}


@dataclass(frozen=True)
class Scenario:
    path: Path
    data: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def request(self) -> dict[str, Any]:
        return copy.deepcopy(self.data["request"])

    @property
    def url(self) -> str:
        return f"/cds-services/cardiac-ct-{self.data['request']['hook']}"


def _scenario_params() -> list[Any]:
    return [pytest.param(path, id=path.stem) for path in SCENARIO_FILES]


def load(path: Path) -> Scenario:
    return Scenario(path, json.loads(path.read_text(encoding="utf-8")))


# --- the files themselves ----------------------------------------------------------------


def test_there_are_scenarios() -> None:
    assert SCENARIO_FILES, f"no scenario files in {SCENARIO_DIR}"


@pytest.mark.parametrize("path", _scenario_params())
def test_scenario_file_is_well_formed(path: Path) -> None:
    scenario = load(path)  # valid JSON, or this raises with the position
    data = scenario.data
    assert SCENARIO_ID.match(path.stem), "file name must be a kebab-case scenario id"
    missing = {"title", "topic", "kind", "today", "request", "expect"} - set(data)
    assert not missing, f"missing fields {sorted(missing)}"
    assert data["kind"] in KINDS, data["kind"]
    assert data["topic"] in KNOWN_TOPICS | {"clean", "protocol"}, data["topic"]
    date.fromisoformat(data["today"])
    request, expect = data["request"], data["expect"]
    assert request["hook"] in {"order-sign", "order-select"}
    assert set(request["prefetch"]) == PREFETCH_KEYS, "prefetch must carry all 9 keys"
    assert isinstance(expect["topics"], list)
    assert expect["topics"] == sorted(expect["topics"]), "expect.topics must be sorted"
    assert set(expect["topics"]) <= KNOWN_TOPICS, set(expect["topics"]) - KNOWN_TOPICS
    drafts = {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in request["context"]["draftOrders"].get("entry", [])
    }
    # A typo here would make a `null` expectation pass vacuously.
    for ref, values in (expect.get("coverage") or {}).items():
        assert ref in drafts, f"expect.coverage names {ref}, which is not a draft order"
        assert values is None or isinstance(values, dict), ref
    for ref in request["context"].get("selections") or []:
        assert ref in drafts, f"selection {ref} is not a draft order"


@pytest.mark.parametrize("path", _scenario_params())
def test_scenario_resources_are_valid_r4(path: Path) -> None:
    scenario = load(path)
    request = scenario.data["request"]
    drafts = [e["resource"] for e in request["context"]["draftOrders"].get("entry", [])]
    on_server = scenario_resources(request)
    seen: set[str] = set()
    for resource in [*drafts, *on_server]:
        kind, rid = resource["resourceType"], resource.get("id")
        assert rid, f"a {kind} without id"
        assert rid not in seen, f"id {rid!r} used twice in the scenario"
        seen.add(rid)
        try:
            get_fhir_model_class(kind).model_validate(resource)
        except ValidationError as exc:
            pytest.fail(f"{kind}/{rid} is not valid R4: {exc}")
    for resource in on_server:
        assert resource["resourceType"] in SERVER_TYPES, resource["resourceType"]
    patient_id = request["context"]["patientId"]
    patient = request["prefetch"]["patient"]
    assert patient is None or patient["id"] == patient_id, "prefetch.patient is another patient"
    for resource in on_server:
        subject = resource.get("subject") or resource.get("beneficiary") or {}
        if subject.get("reference", "").startswith("Patient/"):
            assert subject["reference"] == f"Patient/{patient_id}", f"{resource['id']}: {subject}"


def test_patient_ids_are_unique_across_scenarios() -> None:
    owners: dict[str, str] = {}
    for path in SCENARIO_FILES:
        patient_id = load(path).data["request"]["context"]["patientId"]
        assert patient_id not in owners, f"{path.stem} reuses {patient_id} of {owners[patient_id]}"
        owners[patient_id] = path.stem


def _ids(value: Any) -> set[str]:
    if not isinstance(value, dict):
        return set()
    items = [e.get("resource") or {} for e in value.get("entry") or []]
    if value.get("resourceType") != "Bundle":
        items = [value]
    return {f"{r.get('resourceType')}/{r.get('id')}" for r in items}


@IN_MODULE_LOOP
@pytest.mark.parametrize("path", _scenario_params())
async def test_prefetch_is_what_the_templates_return(path: Path) -> None:
    """Each prefetch value holds exactly what its discovery template finds on a server that
    holds the scenario's data; otherwise the prefetch and fetch runs test different things."""
    request = load(path).data["request"]
    async with running_fhir_server() as fhir_server, fhir_server.client() as client:
        await fhir_server.load(scenario_resources(request))
        differences = {}
        for key, template in TEMPLATES.items():
            query = fill_template(template, request["context"], request["context"]["userId"])
            assert query is not None, key
            response = await client.get(f"/{query}")
            assert response.status_code == 200, f"{key}: {response.text}"
            found, given = _ids(response.json()), _ids(request["prefetch"][key])
            if found != given:
                differences[key] = {
                    "search also finds": sorted(found - given),
                    "prefetch also has": sorted(given - found),
                }
    assert not differences, json.dumps(differences, indent=2)


# --- through the API ---------------------------------------------------------------------


class _CurrentFhirServer(httpx.AsyncBaseTransport):
    """Routes the service's FHIR calls to the SEKMET server of the scenario being run."""

    target: httpx.AsyncBaseTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert self.target is not None, "no FHIR server for this scenario"
        return await self.target.handle_async_request(request)


@dataclass
class Service:
    app: Any
    client: httpx.AsyncClient
    fhir: _CurrentFhirServer


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def service(tmp_path_factory: Any) -> AsyncIterator[Service]:
    settings = settings_in(
        tmp_path_factory.mktemp("scenarios"),
        auth={"enabled": False, "unauthenticated_fhir_servers": [{"base_url": FHIR_BASE}]},
    )
    fhir = _CurrentFhirServer()
    served = AppClient(settings, fhir_transport=fhir)
    async with served as client:
        yield Service(served.app, client, fhir)


async def _answer(service: Service, scenario: Scenario, request: dict[str, Any]) -> dict[str, Any]:
    today = date.fromisoformat(scenario.data["today"])
    service.app.state.runtime.today = lambda: today
    response = await service.client.post(scenario.url, json=request)
    return conformant_body(response)


def assert_expected(scenario: Scenario, body: dict[str, Any], how: str) -> None:
    expect = scenario.data["expect"]
    assert sorted(topics(body)) == expect["topics"], f"{scenario.name} ({how}): card topics"
    actual = coverage_summary(body)
    for ref, wanted in (expect.get("coverage") or {}).items():
        if wanted is None:
            assert ref not in actual, f"{scenario.name} ({how}): coverage action on {ref}"
            continue
        assert ref in actual, f"{scenario.name} ({how}): no coverage information on {ref}"
        got = {key: actual[ref].get(key) for key in wanted}
        assert got == wanted, f"{scenario.name} ({how}): coverage information on {ref}"


@IN_MODULE_LOOP
@pytest.mark.parametrize("path", _scenario_params())
async def test_scenario_with_prefetch(service: Service, path: Path) -> None:
    scenario = load(path)
    body = await _answer(service, scenario, scenario.request)
    assert_expected(scenario, body, "prefetch")


@IN_MODULE_LOOP
@pytest.mark.parametrize("path", _scenario_params())
async def test_scenario_fetched_from_fhir_server(service: Service, path: Path) -> None:
    scenario = load(path)
    request = scenario.request
    resources = scenario_resources(request)
    del request["prefetch"]
    async with running_fhir_server() as fhir_server:
        await fhir_server.load(resources)
        request["fhirServer"] = fhir_server.base_url
        request["fhirAuthorization"] = {
            "access_token": fhir_server.token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "user/*.read",
            "subject": "cardiac-ct-cds",
        }
        service.fhir.target = fhir_server.transport
        try:
            body = await _answer(service, scenario, request)
        finally:
            service.fhir.target = None
    assert_expected(scenario, body, "no prefetch, FHIR server")
