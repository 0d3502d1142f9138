"""Which raw resources are validated: a cheap look at their codes (service/facts/relevance.py)."""

from __future__ import annotations

from typing import Any

import pytest

from service.facts.relevance import RelevanceFilter
from service.fhir.gather import gather_prefetch
from service.knowledge.catalogue import RuleData, load_rule_data


@pytest.fixture(scope="module")
def data() -> RuleData:
    return load_rule_data()


def condition(cid: str, *codings: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": cid, "code": {"coding": list(codings)}, **extra}


def procedure(pid: str, system: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": pid,
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": system, "code": code}]},
    }


ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"
CPT = "http://www.ama-assn.org/go/cpt"


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        (condition("c1", {"system": ICD, "code": "E78.5"}), True),
        (condition("c2", {"system": "urn:oid:2.16.840.1.113883.6.90", "code": "R0789"}), True),
        (condition("c3", {"system": SCT, "code": "267434003"}), True),
        (condition("c4", {"system": ICD, "code": "J45.909"}), False),  # asthma
        (
            condition(
                "c5", {"system": ICD, "code": "J45.909"}, {"system": SCT, "code": "29857009"}
            ),
            True,
        ),
        (condition("c6"), True),  # no coding: cannot tell
        (condition("c7", {"system": ICD, "code": 42}), True),  # malformed: validate and report
        ({"resourceType": "Condition", "id": "c8", "code": {"text": "chest pain"}}, True),
        (procedure("p1", CPT, "44950"), False),  # appendectomy
        (procedure("p2", CPT, "92928"), True),  # coronary stent
        (procedure("p3", SCT, "232717009"), True),  # CABG
        ({"resourceType": "Observation", "id": "o1", "code": {"coding": [{"code": "x"}]}}, True),
    ],
)
def test_what_is_validated(data: RuleData, raw: dict[str, Any], kept: bool) -> None:
    assert RelevanceFilter(data)(raw) is kept


def test_a_condition_an_order_names_as_its_reason_is_always_kept(data: RuleData) -> None:
    asthma = condition("c4", {"system": ICD, "code": "J45.909"})
    assert RelevanceFilter(data, {"Condition/c4"})(asthma) is True


def test_a_long_problem_list_validates_only_what_the_checks_read(data: RuleData) -> None:
    problems = [condition(f"x{i}", {"system": ICD, "code": "J45.909"}) for i in range(200)]
    broken_but_beside_the_point = condition("bad", {"system": ICD, "code": "K21.9"}, onsetAge=7)
    relevant = condition(
        "lipids",
        {"system": ICD, "code": "E78.5"},
        subject={"reference": "Patient/p1"},
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in [*problems, broken_but_beside_the_point, relevant]],
    }
    gathered, _ = gather_prefetch({"conditions": ""}, {"conditions": bundle}, RelevanceFilter(data))
    assert [r.id for r in gathered.resources["conditions"]] == ["lipids"]
    assert gathered.passed_over == 201
    assert gathered.gaps == []
