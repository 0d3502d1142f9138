"""The discovery templates search for every code the rules accept, in every spelling they accept.

A CCTA report coded with the CPT OID, or an FFR-CT report coded 75580, that the template does not
find is a CCTA the rules never see: "no CCTA on file", and a suggestion to repeat the scan. So
the code lists are read from the rule data (service/knowledge/data/codes.yaml) and every code
must be searched for under every system spelling the rules read it in; a code added to a list
and not to the template fails here. Templates also stay inside the CDS Hooks 2.0 recommended
query subset (https://cds-hooks.hl7.org/2.0/#prefetch-query-restrictions): no _include, no
chaining.
"""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from service.cdshooks.discovery import ServiceRegistry
from service.knowledge.catalogue import RuleData, load_rule_data
from service.knowledge.vocabulary import CodeList

RULE_DATA = load_rule_data()
# Which code lists each template must cover (the rules' CCTA/FFR-CT evidence and orders on file).
COVERED_LISTS = {
    "cctaReports": ("ccta_result", "ffrct", "ffrct_legacy"),
    "cardiacOrders": ("cac", "cardiac_ct_with_contrast", "ffrct", "ffrct_legacy"),
    "bmi": ("bmi",),
}
# Search parameters of the 2.0 recommended subset that start with "_".
ALLOWED_CONTROL_PARAMS = {"_count", "_sort"}


def _templates() -> dict[str, str]:
    services = ServiceRegistry().document.services
    templates = [dict(s.prefetch or {}) for s in services]
    assert all(t == templates[0] for t in templates), "services differ in their prefetch"
    return templates[0]


def _params(template: str) -> list[tuple[str, str]]:
    _, _, query = template.partition("?")
    return [(unquote(n), unquote(v)) for n, _, v in (p.partition("=") for p in query.split("&"))]


def _code_tokens(template: str) -> set[str]:
    values = [value for name, value in _params(template) if name == "code"]
    assert len(values) == 1, f"expected one code parameter in {template}"
    return set(values[0].split(","))


def spellings(data: RuleData, system: str) -> list[str]:
    """Every system URI a coding of `system` is read under by the rules ('' = no system).

    CPT is also read when sent under a HCPCS URI (CPT is HCPCS Level I) and, CPT-shaped, with
    no system at all (service/facts/build.py CodeReader).
    """
    uris = list(data.systems[system])
    if system == "cpt":
        uris += [*data.systems["hcpcs"], ""]
    return uris


def missing_searches(template: str, code_list: CodeList, data: RuleData) -> list[str]:
    """`system|code` for each accepted spelling of a listed code the template does not search.

    A token without a bar matches the code in any system (and none); `|code` matches it with
    no system; `uri|code` only under that URI (FHIR R4 search, token parameters).
    """
    tokens = _code_tokens(template)
    missing = [
        f"{p.system}|{p.code}* (a code family cannot be searched)" for p in code_list.prefixes
    ]
    for code in sorted(code_list.exact):
        if code.code in tokens:
            continue
        missing += [
            f"{uri}|{code.code}"
            for uri in spellings(data, code.system)
            if f"{uri}|{code.code}" not in tokens
        ]
    return missing


@pytest.mark.parametrize(
    ("key", "list_name"),
    [(key, name) for key, names in COVERED_LISTS.items() for name in names],
)
def test_template_searches_every_listed_code_in_every_spelling(key: str, list_name: str) -> None:
    template = _templates()[key]
    missing = missing_searches(template, RULE_DATA.codes(list_name), RULE_DATA)
    assert not missing, (
        f"prefetch template {key!r} does not search code list {list_name!r} for {missing}; "
        "add the code to service/cdshooks/discovery.yaml (a system-less token covers every "
        "spelling) and regenerate tests/cdshooks/discovery.expected.json"
    )


def test_a_code_missing_from_the_template_is_reported() -> None:
    """The check has teeth: a new code, or a URI-only token, shows up as missing."""
    template = "DiagnosticReport?patient=p&code=75574,http://loinc.org|79073-3"
    codes = CodeList.parse("probe", ["cpt|75574", "cpt|99999", "loinc|79073-3"])
    missing = missing_searches(template, codes, RULE_DATA)
    assert "http://www.ama-assn.org/go/cpt|99999" in missing
    assert "urn:oid:2.16.840.1.113883.6.12|99999" in missing
    assert "|99999" in missing  # CPT sent without a system
    assert "urn:oid:2.16.840.1.113883.6.1|79073-3" in missing  # LOINC under its OID
    assert not any(m.endswith("|75574") for m in missing)


def test_ccta_results_are_a_plain_patient_search_of_imaging_observations() -> None:
    assert _templates()["cctaResults"] == (
        "Observation?patient={{context.patientId}}&category=imaging"
    )


@pytest.mark.parametrize("key", sorted(_templates()))
def test_templates_stay_inside_the_recommended_query_subset(key: str) -> None:
    template = _templates()[key]
    path, _, query = template.partition("?")
    assert "/" not in path or not query, f"{key}: a read takes no parameters"
    for name, value in _params(template) if query else []:
        assert "." not in name, f"{key}: chained parameter {name}"
        assert ":" not in name, f"{key}: modifier or reverse chain {name}"
        if name.startswith("_"):
            assert name in ALLOWED_CONTROL_PARAMS, f"{key}: {name} is outside the 2.0 subset"
        assert value, f"{key}: {name} has no value"
