"""Prefetch templates: CDS Hooks 2.0 tokens only, values as data, URLs that stay on the server."""

from __future__ import annotations

import httpx
import pytest

from service.fhir.client import FhirEndpoint, FhirFetchError, is_read
from service.fhir.gather import fill_template

CONTEXT = {"patientId": "pat-1", "userId": "Practitioner/dr-1", "encounterId": "enc-9"}


@pytest.mark.parametrize(
    ("template", "filled"),
    [
        ("Patient/{{context.patientId}}", "Patient/pat-1"),
        (
            "Coverage?patient={{ context.patientId }}&status=active",
            "Coverage?patient=pat-1&status=active",
        ),
        ("Encounter/{{context.encounterId}}", "Encounter/enc-9"),
        (
            "ServiceRequest?requester={{context.userId}}",
            "ServiceRequest?requester=Practitioner/dr-1",
        ),
        ("Practitioner/{{userPractitionerId}}", "Practitioner/dr-1"),
        ("Observation?code=http://loinc.org|39156-5", "Observation?code=http://loinc.org|39156-5"),
    ],
)
def test_tokens_are_filled(template: str, filled: str) -> None:
    assert fill_template(template, CONTEXT, "Practitioner/dr-1") == filled


@pytest.mark.parametrize(
    "template",
    [
        "Encounter/{{context.encounterId}}",  # not in this context
        "PractitionerRole/{{userPractitionerRoleId}}",  # the user is a Practitioner
        "MedicationRequest/{{context.draftOrders}}",  # an object: not a 2.0 token
        "Condition?patient={{context.patient.id}}",  # not a root-level field
        "Observation?date=ge{{today() - 90 days}}",  # FHIRPath tokens are 3.0-ballot only
    ],
)
def test_unfillable_tokens_mean_the_key_cannot_be_fetched(template: str) -> None:
    context = {"patientId": "pat-1", "userId": "Practitioner/dr-1", "draftOrders": {"x": 1}}
    assert fill_template(template, context, "Practitioner/dr-1") is None


def test_token_values_are_data_not_url_syntax() -> None:
    context = {"patientId": "1&_id=2#x?y/z"}
    assert (
        fill_template("Condition?patient={{context.patientId}}", context, None)
        == "Condition?patient=1%26_id%3D2%23x%3Fy%2Fz"
    )
    assert fill_template("Patient/{{context.patientId}}", {"patientId": ".."}, None) is None


ENDPOINT = FhirEndpoint("http://fhir.test/fhir", "secret")


def test_query_values_are_encoded_for_fhir_search() -> None:
    url = ENDPOINT.url_for(
        "Observation?patient=pat-1&code=http://loinc.org|39156-5,http://loinc.org|8302-2"
        "&_include=DiagnosticReport:result&date=ge2026-01-01T00:00:00+01:00&_sort=-date"
    )
    assert url.raw_path == (
        b"/fhir/Observation?patient=pat-1"
        b"&code=http://loinc.org%7C39156-5,http://loinc.org%7C8302-2"
        b"&_include=DiagnosticReport:result&date=ge2026-01-01T00:00:00%2B01:00&_sort=-date"
    )
    # A filled token stays one value: the encoded `&` does not become a new parameter.
    assert ENDPOINT.url_for("Condition?patient=1%26_id%3D2").params == httpx.QueryParams(
        {"patient": "1&_id=2"}
    )


@pytest.mark.parametrize("query", ["../admin/Patient", "Patient/..%2Fadmin", "Patient/%2e%2e"])
def test_a_filled_path_cannot_climb_out_of_the_base(query: str) -> None:
    with pytest.raises(FhirFetchError):
        ENDPOINT.url_for(query)


def test_headers_carry_the_bearer_token_only_when_given() -> None:
    assert ENDPOINT.headers()["Authorization"] == "Bearer secret"
    assert "Authorization" not in FhirEndpoint("http://fhir.test/fhir").headers()
    assert "secret" not in repr(ENDPOINT)


@pytest.mark.parametrize(
    ("query", "read"),
    [("Patient/1", True), ("Coverage?patient=1", False), ("Patient?_id=1", False)],
)
def test_read_or_search(query: str, read: bool) -> None:
    assert is_read(query) is read
