"""Primary coverage and payer classification on messy Coverage JSON (rules.md §4)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from service.facts.coverage import coverage_facts, normalise_state
from service.facts.model import Order
from service.fhir.gaps import DataGap
from service.fhir.gather import gather_prefetch
from service.knowledge.catalogue import RuleData, load_rule_data
from service.knowledge.vocabulary import Code

SOPT_SPELLINGS = [
    "https://nahdo.org/sopt",
    "urn:oid:2.16.840.1.113883.3.221.5",
    "http://phdsc.org/standards/payer-typology.asp",
]
DOS = date(2026, 12, 1)
TEMPLATES = {"patient": "", "coverage": ""}


@pytest.fixture(scope="module")
def rule_data() -> RuleData:
    return load_rule_data()


def coverage(
    cov_id: str,
    *,
    sopt: str | None = None,
    system: str = SOPT_SPELLINGS[0],
    order: int | None = None,
    payor: dict[str, Any] | None = None,
    period: dict[str, str] | None = None,
    patient: str = "p1",
    status: str = "active",
    **extra: Any,
) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Coverage",
        "id": cov_id,
        "status": status,
        "beneficiary": {"reference": f"Patient/{patient}"},
        "payor": [payor or {"display": "Some payer"}],
    }
    if sopt is not None:
        res["type"] = {"coding": [{"system": system, "code": sopt}]}
    if order is not None:
        res["order"] = order
    if period is not None:
        res["period"] = period
    res.update(extra)
    return res


def patient(state: str | None = None, **address: Any) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Patient", "id": "p1"}
    if state is not None:
        res["address"] = [{"use": "home", "state": state, **address}]
    return res


def draft_order(order_id: str, cpt: str, day: date = DOS) -> Order:
    return Order(
        ref=f"ServiceRequest/{order_id}",
        codes=frozenset({Code("cpt", cpt)}),
        reason_codes=frozenset(),
        status="draft",
        origin="draft",
        service_date=day,
    )


def cac_order() -> Order:
    return draft_order("cac-1", "75571")


def facts_for(
    rule_data: RuleData,
    coverages: list[dict[str, Any]] | None,
    *,
    pat: dict[str, Any] | None = None,
    orders: tuple[Order, ...] = (),
) -> Any:
    prefetch: dict[str, Any] = {
        "patient": pat or patient(),
        "coverage": None
        if coverages is None
        else {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": c} for c in coverages],
        },
    }
    data, _ = gather_prefetch(TEMPLATES, prefetch)
    return coverage_facts(
        data, rule_data, patient_id="p1", draft_orders=orders or (cac_order(),), today=DOS
    )


@pytest.mark.parametrize("system", SOPT_SPELLINGS)
@pytest.mark.parametrize("code", ["12", "121", "129"])
def test_original_medicare_sopt_in_every_spelling(
    rule_data: RuleData, system: str, code: str
) -> None:
    result = facts_for(rule_data, [coverage("c1", sopt=code, system=system)])
    assert result.primary.payer_kind == "original-medicare"
    assert result.primary.payer_profile == "original-medicare"
    assert result.primary.ref == "Coverage/c1"


@pytest.mark.parametrize("system", SOPT_SPELLINGS)
@pytest.mark.parametrize(
    "code", ["11", "111", "1111", "1112", "112", "113", "119", "123", "14", "141", "142"]
)
def test_medicare_advantage_sopt(rule_data: RuleData, system: str, code: str) -> None:
    result = facts_for(rule_data, [coverage("c1", sopt=code, system=system)])
    assert result.primary.payer_kind == "medicare-advantage"


def test_ma_plan_of_a_commercial_carrier_is_medicare_advantage(rule_data: RuleData) -> None:
    cov = coverage("c1", sopt="111", payor={"display": "Anthem Blue Cross"})
    assert facts_for(rule_data, [cov]).primary.payer_kind == "medicare-advantage"


@pytest.mark.parametrize(
    ("sopt", "payor", "profile"),
    [
        ("2", "Anthem Blue Cross", "medicaid"),  # a Medicaid managed-care plan run by Anthem
        ("21", "Centers for Medicare & Medicaid Services", "medicaid"),
        ("5", "Aetna Medicare Advantage", "commercial-other"),  # conflicting name is ignored
        ("6", "Anthem Blue Cross", "anthem-aim"),  # same kind: the name picks the payer
    ],
)
def test_the_payer_type_code_decides_the_kind(
    rule_data: RuleData, sopt: str, payor: str, profile: str
) -> None:
    result = facts_for(rule_data, [coverage("c1", sopt=sopt, payor={"display": payor})])
    assert result.primary.payer_profile == profile
    if sopt == "5":
        assert "ignored" in result.primary.why


@pytest.mark.parametrize("payor", ["Wellcare", "Medicare plan", "Some payer"])
def test_sopt_1_alone_is_ambiguous_and_reported_as_a_gap(rule_data: RuleData, payor: str) -> None:
    """SOPT 1 ("Medicare", either kind) with a payor that is not the program itself."""
    result = facts_for(rule_data, [coverage("c1", sopt="1", payor={"display": payor})])
    assert result.primary.payer_kind == "medicare-unknown"
    assert result.primary.payer_profile is None
    assert [g.key for g in result.gaps] == ["coverage-type"]


MBI = {"system": "http://hl7.org/fhir/sid/us-mbi", "value": "1EG4TE5MK73"}


@pytest.mark.parametrize(
    ("sopt", "payor", "extra"),
    [
        (None, {"display": "Medicare"}, {}),
        ("1", {"display": "Medicare"}, {}),
        (None, {"display": "MEDICARE PART B"}, {}),
        (None, {"display": "Medicare Parts A & B"}, {}),
        (None, {"display": "CMS"}, {}),
        (None, {"display": "Medicare"}, {"identifier": [MBI]}),
        (None, {"reference": "Organization/unknown"}, {"identifier": [MBI]}),
        (
            "1",
            {"display": "Medicare"},
            {"identifier": [{**MBI, "system": "urn:oid:2.16.840.1.113883.4.927"}]},
        ),
        (None, {"display": "Medicare Part B - Novitas Solutions"}, {}),
    ],
)
def test_original_medicare_as_ehrs_write_it(
    rule_data: RuleData, sopt: str | None, payor: dict[str, Any], extra: dict[str, Any]
) -> None:
    """The payor is the program itself, or the member id is an MBI (rules.md §4, 2026-12-01)."""
    result = facts_for(rule_data, [coverage("c1", sopt=sopt, payor=payor, **extra)])
    assert result.primary.payer_kind == "original-medicare", result.primary.why
    assert result.gaps == ()


@pytest.mark.parametrize(
    ("payor", "extra"),
    [
        ({"display": "Aetna Medicare"}, {}),  # a carrier's Medicare product: not the program
        ({"display": "Wellcare"}, {"identifier": [MBI]}),  # MBI but another payor named
    ],
)
def test_a_carrier_named_with_medicare_is_not_original_medicare(
    rule_data: RuleData, payor: dict[str, Any], extra: dict[str, Any]
) -> None:
    result = facts_for(rule_data, [coverage("c1", payor=payor, **extra)])
    assert result.primary.payer_kind == "medicare-unknown", result.primary.why


PLAN = {
    "type": {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "plan"}
        ]
    }
}


@pytest.mark.parametrize(
    ("sopt", "payor", "plan_value"),
    [
        (None, "Humana", "H1036-077"),
        (None, "Medicare", "H5216-001"),  # a contract number beats the bare word Medicare
        (None, "Humana", "h5216-236-000"),  # contract, plan and segment
        ("6", "Blue Cross Blue Shield", "R5941-001"),
        (None, "Humana Gold Plus HMO", None),
    ],
)
def test_medicare_advantage_from_contract_numbers_and_plan_names(
    rule_data: RuleData, sopt: str | None, payor: str, plan_value: str | None
) -> None:
    classes = [{**PLAN, "value": plan_value}] if plan_value else []
    result = facts_for(
        rule_data, [coverage("c1", sopt=sopt, payor={"display": payor}, **{"class": classes})]
    )
    assert result.primary.payer_kind == "medicare-advantage", result.primary.why


@pytest.mark.parametrize("plan_value", ["H2000", "E1234-001", "S5601-001"])
def test_plan_ids_that_are_not_ma_contracts_leave_the_sopt_code_in_charge(
    rule_data: RuleData, plan_value: str
) -> None:
    """A bare 'H2000' may be a commercial plan code; E and S contracts may be drug-only."""
    classes = [{**PLAN, "value": plan_value}]
    result = facts_for(
        rule_data,
        [
            coverage(
                "c1", sopt="6", payor={"display": "Blue Cross Blue Shield"}, **{"class": classes}
            )
        ],
    )
    assert result.primary.payer_kind == "commercial"


def test_a_group_number_shaped_like_a_contract_is_not_medicare_advantage(
    rule_data: RuleData,
) -> None:
    group = {
        "type": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "group"}
            ]
        },
        "value": "H1234",
    }
    result = facts_for(
        rule_data,
        [coverage("c1", sopt="5", payor={"display": "Acme Health"}, **{"class": [group]})],
    )
    assert result.primary.payer_kind == "commercial"


def test_medicare_secondary_payer_order_is_honoured(rule_data: RuleData) -> None:
    """An employer group plan billed first (order 1), Medicare second: the ABN does not apply."""
    result = facts_for(
        rule_data,
        [
            coverage("c2", order=2, payor={"display": "Medicare"}, identifier=[MBI]),
            coverage("c1", sopt="51", order=1, payor={"display": "Acme Employer Health Plan"}),
        ],
    )
    assert result.primary.payer_kind == "commercial"
    assert [c.payer_kind for c in result.others] == ["original-medicare"]


def test_sopt_1_gap_only_when_a_calcium_score_is_ordered(rule_data: RuleData) -> None:
    ffrct = Order(
        ref="ServiceRequest/f1",
        codes=frozenset({Code("cpt", "75580")}),
        reason_codes=frozenset(),
        status="draft",
        origin="draft",
        service_date=DOS,
    )
    result = facts_for(rule_data, [coverage("c1", sopt="1")], orders=(ffrct,))
    assert result.primary.payer_kind == "medicare-unknown"
    assert result.gaps == ()


def test_medigap_secondary_implies_original_medicare(rule_data: RuleData) -> None:
    result = facts_for(
        rule_data,
        [
            coverage("c2", sopt="623", order=2, payor={"display": "Medigap Plan G"}),
            coverage("c1", sopt="1", order=1, payor={"display": "Humana"}),
        ],
    )
    assert result.primary.ref == "Coverage/c1"
    assert result.primary.payer_kind == "original-medicare"
    assert "secondary implies original-medicare" in result.primary.why
    assert [c.ref for c in result.others] == ["Coverage/c2"]
    assert result.gaps == ()


def test_medigap_without_order_is_not_taken_as_primary(rule_data: RuleData) -> None:
    result = facts_for(
        rule_data, [coverage("c2", sopt="523"), coverage("c1", sopt="1", order=None)]
    )
    assert result.primary.ref == "Coverage/c1"
    assert result.primary.payer_kind == "original-medicare"


def test_lowest_order_is_primary_and_missing_order_is_last(rule_data: RuleData) -> None:
    result = facts_for(
        rule_data,
        [
            coverage("none", sopt="5"),
            coverage("second", sopt="121", order=3),
            coverage("first", payor={"display": "Horizon BCBS"}, order=1),
        ],
    )
    assert result.primary.ref == "Coverage/first"
    assert result.primary.payer_profile == "horizon-bcbs-nj"
    assert [c.ref for c in result.others] == ["Coverage/second", "Coverage/none"]


@pytest.mark.parametrize(
    ("period", "primary"),
    [
        ({"start": "2020-01-01", "end": "2026-11-30"}, None),  # ended the day before
        ({"start": "2026-12-02"}, None),  # not yet started
        ({"start": "2020-01-01", "end": "2026-12-01"}, "Coverage/c1"),  # ends on the day
        ({"end": "2027-01-01T00:00:00Z"}, "Coverage/c1"),
    ],
)
def test_period_must_cover_the_date_of_service(
    rule_data: RuleData, period: dict[str, str], primary: str | None
) -> None:
    result = facts_for(rule_data, [coverage("c1", sopt="121", period=period)])
    assert (result.primary.ref if result.primary else None) == primary
    assert result.known is True


def test_expired_primary_falls_back_to_the_next_coverage(rule_data: RuleData) -> None:
    result = facts_for(
        rule_data,
        [
            coverage("old", sopt="121", order=1, period={"end": "2025-12-31"}),
            coverage("new", sopt="6", order=2, payor={"display": "BCBSM"}),
        ],
    )
    assert result.primary.ref == "Coverage/new"
    assert result.primary.payer_profile == "bcbs-michigan"


def test_beneficiary_by_identifier_only_is_accepted(rule_data: RuleData) -> None:
    cov = coverage("c1", sopt="121")
    cov["beneficiary"] = {"identifier": {"system": "urn:mrn", "value": "123"}}
    assert facts_for(rule_data, [cov]).primary.ref == "Coverage/c1"
    cov["beneficiary"] = {"reference": "https://ehr.example/fhir/Patient/p1/_history/3"}
    assert facts_for(rule_data, [cov]).primary.ref == "Coverage/c1"


def test_other_patients_and_inactive_coverages_are_ignored(rule_data: RuleData) -> None:
    result = facts_for(
        rule_data,
        [coverage("c1", sopt="121", patient="someone-else"), coverage("c2", status="cancelled")],
    )
    assert result.primary is None
    assert result.known is True


@pytest.mark.parametrize(
    ("payor", "profile"),
    [
        ({"display": "HORIZON blue cross blue shield of new jersey"}, "horizon-bcbs-nj"),
        ({"display": "Blue Cross and Blue Shield of Kansas, Inc."}, "bcbs-kansas"),
        ({"display": "Anthem Blue Cross and Blue Shield"}, "anthem-aim"),
        ({"display": "Centers for Medicare & Medicaid Services"}, "original-medicare"),
        ({"display": "Humana Gold Plus Medicare Advantage"}, "medicare-advantage"),
        ({"display": "Panthemic Insurance"}, None),  # "anthem" only as part of a word
    ],
)
def test_payor_names_and_aliases(
    rule_data: RuleData, payor: dict[str, Any], profile: str | None
) -> None:
    result = facts_for(rule_data, [coverage("c1", payor=payor)])
    assert result.primary.payer_profile == profile


def test_contained_organization_and_plan_name(rule_data: RuleData) -> None:
    cov = coverage(
        "c1",
        payor={"reference": "#org"},
        contained=[{"resourceType": "Organization", "id": "org", "name": "BCBSKS"}],
    )
    assert facts_for(rule_data, [cov]).primary.payer_profile == "bcbs-kansas"
    plan_class: dict[str, Any] = {
        "type": {"coding": [{"code": "plan"}]},
        "value": "HZN-PPO",
        "name": "Horizon BCBSNJ OMNIA",
    }
    plan = coverage("c2", payor={"display": "Unknown TPA"})
    plan["class"] = [plan_class]
    assert facts_for(rule_data, [plan]).primary.payer_profile == "horizon-bcbs-nj"


def test_payor_identifier_from_a_site_row(tmp_path: Path) -> None:
    (tmp_path / "site-payers.yaml").write_text(
        """
payers:
  - id: acme-health
    name: Acme Health
    kind: commercial
    profile: evicore-delegated
    match:
      identifiers: [{system: "http://acme.example/payer-id", value: "ACME01"}]
    sources: [{document: "Acme provider manual", effective: 2026-01-01}]
""",
        encoding="utf-8",
    )
    data = load_rule_data(tmp_path)
    cov = coverage(
        "c1",
        sopt="5",
        payor={"reference": "#o"},
        contained=[
            {
                "resourceType": "Organization",
                "id": "o",
                "identifier": [{"system": "http://acme.example/payer-id", "value": "ACME01"}],
            }
        ],
    )
    result = facts_for(data, [cov])
    assert result.primary.payer_profile == "acme-health"
    row = data.payer("acme-health")
    assert row is not None and row.policy("ffrct") is not None  # inherited from the profile
    assert row.policy("ffrct").prior_auth is True  # type: ignore[union-attr]


def test_commercial_sopt_without_a_known_payer(rule_data: RuleData) -> None:
    result = facts_for(rule_data, [coverage("c1", sopt="511")])
    assert result.primary.payer_kind == "commercial"
    assert result.primary.payer_profile == "commercial-other"


def test_nothing_known_about_the_payer(rule_data: RuleData) -> None:
    result = facts_for(rule_data, [coverage("c1")])
    assert result.primary.payer_kind == "unknown"


def test_coverage_unavailable_is_not_no_coverage(rule_data: RuleData) -> None:
    data, _ = gather_prefetch(TEMPLATES, {"patient": patient()})
    data.gaps.append(DataGap("coverage", "FHIR server answered 503"))
    result = coverage_facts(
        data, rule_data, patient_id="p1", draft_orders=(cac_order(),), today=DOS
    )
    assert result.primary is None
    assert result.known is False


@pytest.mark.parametrize(
    ("pat", "state"),
    [
        (patient("WI"), "WI"),
        (patient("Wisconsin"), "WI"),
        (patient(" new  jersey "), "NJ"),
        (patient("Ontario"), None),
        (patient(None), None),
        (
            {
                "resourceType": "Patient",
                "id": "p1",
                "address": [
                    {"use": "old", "state": "WI"},
                    {"use": "home", "state": "MN", "period": {"end": "2025-01-01"}},
                    {"use": "work", "state": "IL"},
                    {"use": "home", "state": "NJ"},
                ],
            },
            "NJ",
        ),
    ],
)
def test_patient_state_from_current_home_address(
    rule_data: RuleData, pat: dict[str, Any], state: str | None
) -> None:
    assert facts_for(rule_data, [coverage("c1", sopt="121")], pat=pat).patient_state == state


def test_normalise_state() -> None:
    assert normalise_state("wi") == "WI"
    assert normalise_state("D.C.") is None
    assert normalise_state("District of Columbia") == "DC"
    assert normalise_state("XX") is None


def test_row_limited_to_states_matches_only_residents(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(
        """
payers:
  - id: garden-state-health
    name: Garden State Health
    kind: commercial
    states: ["NJ"]
    match: {names: ["Garden State Health"]}
    sources: [{document: "Garden State Health provider manual", effective: 2026-01-01}]
""",
        encoding="utf-8",
    )
    data = load_rule_data(tmp_path)
    cov = [coverage("c1", sopt="5", payor={"display": "Garden State Health"})]
    assert facts_for(data, cov, pat=patient("NJ")).primary.payer_profile == "garden-state-health"
    assert facts_for(data, cov, pat=patient("NY")).primary.payer_profile == "commercial-other"
    assert facts_for(data, cov, pat=patient(None)).primary.payer_profile == "commercial-other"


def test_cms_agency_name_does_not_make_a_medicaid_plan_original_medicare(
    rule_data: RuleData,
) -> None:
    """H4: the agency runs Medicare and oversees Medicaid; the plan name decides."""
    cms = {"display": "Centers for Medicare & Medicaid Services"}
    plan = [{"type": {"coding": [{"code": "plan"}]}, "value": "KS-MCD", "name": "KanCare Medicaid"}]
    result = facts_for(rule_data, [coverage("c1", payor=cms, **{"class": plan})])
    assert (result.primary.payer_kind, result.primary.payer_profile) == ("medicaid", "medicaid")
    assert facts_for(rule_data, [coverage("c1", payor=cms)]).primary.payer_kind == (
        "original-medicare"  # the agency alone pays Original Medicare claims
    )
    assert facts_for(rule_data, [coverage("c1", payor={"display": "CMS"})]).primary.payer_kind == (
        "original-medicare"
    )


@pytest.mark.parametrize(
    ("sopt", "plan_name", "kind"),
    [
        ("6", "Medicare Advantage PPO", "medicare-advantage"),  # L2
        (None, "Medicare Advantage PPO", "medicare-advantage"),
        ("5", "Sunflower Medicaid", "medicaid"),
        ("6", "Blue Choice PPO", "commercial"),
        ("121", "Medicare Advantage PPO", "original-medicare"),  # an exact program code wins
    ],
)
def test_a_commercial_carriers_program_plan_is_that_program(
    rule_data: RuleData, sopt: str | None, plan_name: str, kind: str
) -> None:
    plan = [{"type": {"coding": [{"code": "plan"}]}, "value": "X", "name": plan_name}]
    bcbs = {"display": "Blue Cross Blue Shield of Kansas"}
    result = facts_for(rule_data, [coverage("c1", sopt=sopt, payor=bcbs, **{"class": plan})])
    assert result.primary.payer_kind == kind


def test_a_part_d_plan_is_never_primary(rule_data: RuleData) -> None:
    """L3: research/clinical-rules.md §6.3: a drug-only benefit is ignored for this decision."""
    result = facts_for(
        rule_data,
        [
            coverage("partd", sopt="122", order=1, payor={"display": "SilverScript"}),
            coverage("medical", sopt="5", order=2, payor={"display": "Acme Health Plan"}),
        ],
    )
    assert result.primary.ref == "Coverage/medical"
    assert result.gaps == ()
    only_drugs = facts_for(rule_data, [coverage("partd", sopt="122", order=1)])
    assert only_drugs.primary is None


@pytest.mark.parametrize("orders", [(None, None), (1, 1)])
def test_two_coverages_with_the_same_rank_leave_the_primary_undetermined(
    rule_data: RuleData, orders: tuple[int | None, int | None]
) -> None:
    """M4: the bundle's order must not decide the ABN."""
    first, second = orders
    for listed in (
        [coverage("m", sopt="121", order=first), coverage("b", sopt="6", order=second)],
        [coverage("b", sopt="6", order=second), coverage("m", sopt="121", order=first)],
    ):
        result = facts_for(rule_data, listed)
        assert result.primary.payer_kind == "undetermined"
        assert result.primary.payer_profile is None
        assert [g.key for g in result.gaps] == ["coverage-primary"]
    same_payer = facts_for(rule_data, [coverage("a", sopt="121"), coverage("b", sopt="121")])
    assert same_payer.primary.payer_kind == "original-medicare"  # no real ambiguity


def test_primary_coverage_per_order_date_of_service(rule_data: RuleData) -> None:
    """H7: a plan ending Dec 31 and Medicare starting Jan 1, orders on both sides."""
    jan = date(2027, 1, 15)
    ffr = draft_order("ffr", "75580", DOS)
    cac_jan = draft_order("cac", "75571", jan)
    result = facts_for(
        rule_data,
        [
            coverage("acme", sopt="5", order=1, period={"end": "2026-12-31"}),
            coverage("mcr", sopt="121", order=1, period={"start": "2027-01-01"}),
        ],
        orders=(ffr, cac_jan),
    )
    assert result.primary.ref == "Coverage/acme"  # the first focus order's date
    assert [(day, c.ref if c else None) for day, c in result.by_date] == [
        (DOS, "Coverage/acme"),
        (jan, "Coverage/mcr"),
    ]


def test_ffrct_stenosis_range_is_the_payer_on_the_ffrct_orders_date(rule_data: RuleData) -> None:
    """H7 follow-up: a calcium score first (commercial, Dec) and an FFR-CT in Jan (Medicare)."""
    jan = date(2027, 1, 15)
    ffr_jan = draft_order("ffr", "75580", jan)
    result = facts_for(
        rule_data,
        [
            coverage("acme", sopt="5", order=1, period={"end": "2026-12-31"}),
            coverage("mcr", sopt="121", order=1, period={"start": "2027-01-01"}),
        ],
        orders=(cac_order(), ffr_jan),
    )
    assert result.primary.ref == "Coverage/acme"
    # The FFR-CT rule reads the payer's range on the order's own date: the Medicare LCD range.
    on_jan = dict(result.by_date)[jan]
    assert on_jan is not None and on_jan.payer_profile == "original-medicare"
    row = rule_data.payer(on_jan.payer_profile)
    policy = row.policy("ffrct") if row else None
    assert policy is not None and policy.stenosis_range == (40, 90)
