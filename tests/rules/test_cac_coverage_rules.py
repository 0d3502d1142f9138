"""CAC coverage rules, prior auth, coverage-missing and cost, on Facts built directly."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Any

import pytest

from service.cdshooks.hooks import HOOKS
from service.crd.assessment import assess_coverage
from service.facts.model import CoverageFacts, Diagnosis, Facts, Order, PayerKind
from service.fhir.gaps import DataGap
from service.knowledge.catalogue import RuleData, load_rule_data
from service.knowledge.vocabulary import Code
from service.rules import cac, coverage
from service.rules.engine import evaluate

DOS = date(2026, 12, 1)
CAC = Code("cpt", "75571")
S8092 = Code("hcpcs", "S8092")
FFRCT = Code("cpt", "75580")
E785 = Code("icd10cm", "E785")
R079 = Code("icd10cm", "R079")
Z136 = Code("icd10cm", "Z136")
ASYMPTOMATIC = Code("snomed", "84387000")


@pytest.fixture(scope="module")
def data() -> RuleData:
    return load_rule_data()


def order(ref: str = "ServiceRequest/o1", *codes: Code, reasons: tuple[Code, ...] = ()) -> Order:
    return Order(
        ref=ref,
        codes=frozenset(codes or (CAC,)),
        reason_codes=frozenset(reasons),
        status="draft",
        origin="draft",
        service_date=DOS,
        display="Calcium score",
    )


def payer(kind: PayerKind, profile: str | None) -> CoverageFacts:
    return CoverageFacts(
        ref="Coverage/c1",
        payer_kind=kind,
        payer_profile=profile,
        payer_name=None,
        state=None,
        why="test",
    )


def facts(
    kind: PayerKind | None = "original-medicare",
    profile: str | None = "original-medicare",
    *orders: Order,
    **kwargs: Any,
) -> Facts:
    return Facts(
        today=DOS,
        patient_ref="Patient/p1",
        patient_state=kwargs.pop("state", None),
        draft_orders=orders or (order(),),
        coverage=payer(kind, profile) if kind else None,
        **kwargs,
    )


def topics(f: Facts, data: RuleData) -> list[str]:
    """Card topics the engine yields, without cost-estimate (on only when the EHR asks)."""
    return sorted(x.topic for x in evaluate(f, data) if x.topic != "cost-estimate")


def test_abn_for_original_medicare_on_75571_and_s8092(data: RuleData) -> None:
    f = facts(
        "original-medicare",
        "original-medicare",
        order("ServiceRequest/a", CAC),
        order("ServiceRequest/b", S8092),
        order("ServiceRequest/c", FFRCT),
    )
    found = list(cac.abn_required(f, data))
    assert [x.order_refs for x in found] == [("ServiceRequest/a",), ("ServiceRequest/b",)]
    assert found[0].actions[0].kind == "create-abn-task"
    # S8092 is not a Medicare code: the card and the ABN task name 75571 (rules.md §1).
    assert found[1].details["code"] == "75571"
    assert "S8092" in found[1].details["code_note"]
    assert found[1].actions[0].code == Code("cpt", "75571")
    assert found[0].details["code_note"] == ""
    assert "$75-$150" in found[0].details["self_pay"]


@pytest.mark.parametrize(
    "kind", ["medicare-advantage", "medicare-unknown", "commercial", "medicaid", "unknown"]
)
def test_no_abn_unless_original_medicare(data: RuleData, kind: PayerKind) -> None:
    assert list(cac.abn_required(facts(kind, None), data)) == []


def test_abn_not_on_unselected_orders(data: RuleData) -> None:
    unselected = replace(order(), selected=False)
    assert (
        list(cac.abn_required(facts("original-medicare", "original-medicare", unselected), data))
        == []
    )


def test_medicare_advantage_info(data: RuleData) -> None:
    assert topics(facts("medicare-advantage", "medicare-advantage"), data) == [
        "cac-medicare-advantage"
    ]


def test_medicare_unknown_asserts_nothing(data: RuleData) -> None:
    assert topics(facts("medicare-unknown", None), data) == []


@pytest.mark.parametrize(
    ("reasons", "diagnoses", "fires"),
    [
        ((), (), True),
        ((Z136,), (), True),  # screening alone does not establish necessity
        ((E785,), (), False),
        ((), (Code("icd10cm", "Z8249"),), False),
        ((), (Code("icd10cm", "E119"),), False),
        ((), (Code("icd10cm", "I10"),), False),
    ],
)
def test_risk_factor_missing(
    data: RuleData, reasons: tuple[Code, ...], diagnoses: tuple[Code, ...], fires: bool
) -> None:
    dx = tuple(Diagnosis(f"Condition/{i}", frozenset({c}), None) for i, c in enumerate(diagnoses))
    f = facts("commercial", "bcbs-kansas", order(reasons=reasons), diagnoses=dx)
    assert bool(list(cac.risk_factor_missing(f, data))) is fires


def test_risk_factor_skipped_when_conditions_unavailable(data: RuleData) -> None:
    f = facts("commercial", "bcbs-kansas", gaps=(DataGap("conditions", "timed out"),))
    assert list(cac.risk_factor_missing(f, data)) == []
    unresolved = replace(order(), reasons_unresolved=True)
    assert list(cac.risk_factor_missing(facts("commercial", "bcbs-kansas", unresolved), data)) == []


def test_risk_factor_only_for_commercial(data: RuleData) -> None:
    assert list(cac.risk_factor_missing(facts("medicaid", "medicaid"), data)) == []
    assert list(cac.risk_factor_missing(facts("commercial", None), data)) != []


@pytest.mark.parametrize(
    ("reasons", "gaps", "fires"),
    [
        ((Z136,), (), True),
        # No reason and no symptom is not "documentation indicates screening" (the seed's
        # words); this case used to fire (review M5).
        ((), (), False),
        ((E785,), (), False),  # a risk factor alone is a diagnostic indication, not screening
        ((ASYMPTOMATIC,), (), True),  # the patient documented asymptomatic
        ((Z136, E785), (), True),  # the seed's screening pairing is still screening
        ((R079,), (), False),
        ((Z136, R079), (), False),
        ((ASYMPTOMATIC,), (DataGap("conditions", "x"),), False),  # a symptom may be there
        ((Z136,), (DataGap("conditions", "x"),), True),  # stated screening
    ],
)
def test_screening_not_covered_horizon(
    data: RuleData, reasons: tuple[Code, ...], gaps: tuple[DataGap, ...], fires: bool
) -> None:
    f = facts("commercial", "horizon-bcbs-nj", order(reasons=reasons), gaps=gaps)
    assert bool(list(cac.screening_not_covered(f, data))) is fires


def test_asymptomatic_on_the_problem_list_counts_as_documented(data: RuleData) -> None:
    documented = Diagnosis("Condition/a", frozenset({ASYMPTOMATIC}), None)
    f = facts("commercial", "horizon-bcbs-nj", order(), diagnoses=(documented,))
    assert [x.details["why"] for x in cac.screening_not_covered(f, data)] == [
        "the patient is documented as asymptomatic"
    ]


def test_unresolved_reason_reference_is_not_read_as_asymptomatic(data: RuleData) -> None:
    """H6: the reference may be the chest pain; skip (the facts carry the gap), never deny."""
    unresolved = replace(order(reasons=(Z136,)), reasons_unresolved=True)
    horizon = facts("commercial", "horizon-bcbs-nj", unresolved)
    assert list(cac.screening_not_covered(horizon, data)) == []
    acme = facts("commercial", "commercial-other", replace(order(), reasons_unresolved=True))
    assert list(cac.risk_factor_missing(acme, data)) == []


def test_a_reason_given_only_as_text_is_not_read_as_absent(data: RuleData) -> None:
    """L1 on the calcium-score side: "Chest pain on exertion" as text may be the symptom."""
    text_only = replace(order(reasons=(Z136,)), reasons_uncoded=True)
    horizon = facts("commercial", "horizon-bcbs-nj", text_only)
    assert list(cac.screening_not_covered(horizon, data)) == []
    acme = facts("commercial", "commercial-other", replace(order(), reasons_uncoded=True))
    assert list(cac.risk_factor_missing(acme, data)) == []


def test_screening_policy_only_for_payers_that_deny_it(data: RuleData) -> None:
    f = facts("commercial", "bcbs-kansas", order(reasons=(Z136,)))
    assert list(cac.screening_not_covered(f, data)) == []


@pytest.mark.parametrize(("state", "fires"), [("WI", True), ("MN", False), (None, False)])
def test_prior_auth_anthem_is_state_specific(
    data: RuleData, state: str | None, fires: bool
) -> None:
    f = facts("commercial", "anthem-aim", order(reasons=(E785,)), state=state)
    found = list(coverage.prior_auth_required(f, data))
    assert bool(found) is fires
    if fires:
        assert found[0].details["reviewer"] == "AIM Specialty Health"


def test_prior_auth_evicore_profile_covers_ffrct_too(data: RuleData) -> None:
    f = facts(
        "commercial",
        "evicore-delegated",
        order("ServiceRequest/a", CAC, reasons=(E785,)),
        order("ServiceRequest/b", FFRCT),
        order("ServiceRequest/c", Code("cpt", "0501T")),
    )
    refs = [x.order_refs for x in coverage.prior_auth_required(f, data)]
    assert refs == [("ServiceRequest/a",), ("ServiceRequest/b",), ("ServiceRequest/c",)]


def test_coverage_missing(data: RuleData) -> None:
    assert topics(facts(None, None), data) == ["coverage-missing"]
    unknown = facts(None, None, coverage_known=False)
    assert topics(unknown, data) == []
    non_cardiac = facts(None, None, order("ServiceRequest/x", Code("cpt", "71045")))
    assert topics(non_cardiac, data) == []


def test_cost_estimate(data: RuleData) -> None:
    f = facts(
        "original-medicare",
        "original-medicare",
        order("ServiceRequest/a", CAC),
        order("ServiceRequest/b", FFRCT),
    )
    found = {x.order_refs[0]: x.details["estimate"] for x in coverage.cost_estimate(f, data)}
    assert found["ServiceRequest/a"] == "patient self-pay typically $75-$150"
    assert found["ServiceRequest/b"] == (
        "expected payment $997.22; minimum patient co-payment $199.45"
    )
    assert list(coverage.cost_estimate(facts("commercial", "bcbs-kansas"), data)) == []


def test_each_order_is_judged_on_the_coverage_for_its_own_date(data: RuleData) -> None:
    """H7: commercial plan ends Dec 31, Original Medicare starts Jan 1; one signing, two dates."""
    jan = date(2027, 1, 15)
    ffr = order("ServiceRequest/ffr", FFRCT)
    cac_jan = replace(order("ServiceRequest/cac", CAC, reasons=(E785,)), service_date=jan)
    medicare = replace(payer("original-medicare", "original-medicare"), ref="Coverage/m")
    commercial = payer("commercial", "commercial-other")
    f = facts(
        "commercial",
        "commercial-other",
        ffr,
        cac_jan,
        coverage_by_date=((DOS, commercial), (jan, medicare)),
    )
    assert [x.order_refs for x in cac.abn_required(f, data)] == [("ServiceRequest/cac",)]
    assessed = {
        a.order_ref: a
        for a in assess_coverage(f, list(evaluate(f, data)), data, hook=HOOKS["order-sign"])
    }
    assert assessed["ServiceRequest/cac"].coverage_ref == "Coverage/m"
    assert assessed["ServiceRequest/cac"].covered == "not-covered"
    assert assessed["ServiceRequest/ffr"].coverage_ref == "Coverage/c1"
    uninsured_in_jan = replace(f, coverage_by_date=((DOS, commercial), (jan, None)))
    assert [x.order_refs for x in coverage.coverage_missing(uninsured_in_jan, data)] == [
        ("ServiceRequest/cac",)
    ]
    assert "ServiceRequest/cac" not in {
        a.order_ref for a in assess_coverage(uninsured_in_jan, [], data, hook=HOOKS["order-sign"])
    }


@pytest.mark.parametrize(
    ("reasons", "modifier", "not_said"),
    [
        ((Z136,), "**GY**, plus **GX**", "**GA**"),  # screening: statutory exclusion
        ((E785,), "**GY**, plus **GX**", "**GA**"),  # risk factor only: still screening
        ((R079,), "**GA**", "**GY**"),  # symptomatic: not reasonable and necessary
    ],
)
def test_abn_card_gives_one_modifier_answer(
    data: RuleData, reasons: tuple[Code, ...], modifier: str, not_said: str
) -> None:
    """L4: research/clinical-rules.md §4.1; the ABN is suggested either way (the default)."""
    (found,) = cac.abn_required(
        facts("original-medicare", "original-medicare", order(reasons=reasons)), data
    )
    assert modifier in found.details["modifiers"]
    assert not_said not in found.details["modifiers"]
    assert found.actions[0].kind == "create-abn-task"


@pytest.mark.parametrize(
    ("category", "fires"),
    [("problem-list-item", False), ("other", False), ("encounter-diagnosis", True)],
)
def test_risk_factor_is_read_from_the_order_and_the_problem_list(
    data: RuleData, category: Any, fires: bool
) -> None:
    """rules.md §3: "no supporting diagnosis on the order or the problem list". A risk factor
    coded only as an encounter diagnosis is not on either, so the card asks to document it."""
    hypertension = Diagnosis(
        "Condition/htn", frozenset({Code("snomed", "38341003")}), None, category=category
    )
    f = facts("commercial", "commercial-other", diagnoses=(hypertension,))
    assert bool(list(cac.risk_factor_missing(f, data))) is fires


def test_s8092_billed_as_75571_to_medicare_is_bundled_with_a_same_day_ccta(data: RuleData) -> None:
    """S8092 reaches a Medicare claim as 75571 (billing_crosswalks), so the NCCI edit applies."""
    ccta = order("ServiceRequest/ccta", Code("cpt", "75574"))
    s8092 = order("ServiceRequest/cac", S8092)
    for kind in ("original-medicare", "medicare-advantage"):
        f = facts(kind, kind, s8092, ccta)
        assert [x.order_refs[0] for x in cac.bundling_conflict(f, data)] == ["ServiceRequest/cac"]
    commercial = facts("commercial", "bcbs-michigan", s8092, ccta)
    assert list(cac.bundling_conflict(commercial, data)) == []


def test_abn_modifier_advice_is_neutral_when_the_reason_cannot_be_read(data: RuleData) -> None:
    unread = replace(order("ServiceRequest/cac", CAC), reasons_uncoded=True)
    (found,) = cac.abn_required(facts("original-medicare", "original-medicare", unread), data)
    assert "could not be read" in found.details["modifiers"]
    assert "No cardiac symptom is documented" not in found.details["modifiers"]
