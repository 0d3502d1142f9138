"""The data-incomplete rule: one card naming what could not be read and the checks it silenced."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from service.cdshooks.hooks import HOOKS
from service.facts.model import CoverageFacts, Diagnosis, Facts, Order
from service.fhir.gaps import DataGap
from service.knowledge.catalogue import RuleData, RuleDataError, load_rule_data
from service.knowledge.vocabulary import Code
from service.pipeline import Knowledge
from service.render.actions import ActionBuilder, ActionContext
from service.render.cards import render_card
from service.rules import data_quality
from service.rules.findings import Finding
from tests.fhir.support import KEYS

TODAY = date(2026, 11, 23)
FFRCT = Code("cpt", "75580")
CAC = Code("cpt", "75571")
CHEST_XRAY = Code("cpt", "71045")


@pytest.fixture(scope="module")
def data() -> RuleData:
    return load_rule_data()


def _facts(*gaps: DataGap, codes: tuple[Code, ...] = (FFRCT,)) -> Facts:
    orders = tuple(
        Order(
            ref=f"ServiceRequest/o{i}",
            codes=frozenset({code}),
            reason_codes=frozenset(),
            status="draft",
            origin="draft",
            service_date=TODAY,
        )
        for i, code in enumerate(codes)
    )
    return Facts(
        today=TODAY,
        patient_ref="Patient/p",
        patient_state=None,
        draft_orders=orders,
        gaps=gaps,
    )


def _one(facts: Facts, data: RuleData) -> Finding:
    findings = list(data_quality.data_incomplete(facts, data))
    assert len(findings) == 1
    return findings[0]


def test_no_gaps_no_card(data: RuleData) -> None:
    assert list(data_quality.data_incomplete(_facts(), data)) == []


def test_sources_failing_the_same_way_share_a_line(data: RuleData) -> None:
    finding = _one(
        _facts(
            DataGap("bmi", "FHIR server answered 401"),
            DataGap("coverage", "FHIR server answered 401"),
        ),
        data,
    )
    assert finding.details["source_lines"] == (
        "- **Insurance coverage**, **BMI observations**: FHIR server answered 401"
    )


def test_names_each_source_with_its_reason_and_the_skipped_checks(data: RuleData) -> None:
    finding = _one(
        _facts(
            DataGap("bmi", "FHIR server did not answer within 2.5 s"),
            DataGap("coverage", "FHIR server answered 401"),
        ),
        data,
    )
    assert finding.topic == "data-incomplete"
    assert finding.order_refs == ("ServiceRequest/o0",)
    # Table order (coverage before bmi), not arrival order.
    assert finding.details["sources"] == "insurance coverage and BMI observations"
    assert finding.details["source_lines"] == (
        "- **Insurance coverage**: FHIR server answered 401\n"
        "- **BMI observations**: FHIR server did not answer within 2.5 s"
    )
    # An FFR-CT order: the calcium-score-only checks (ABN, Medicare Advantage) are not listed.
    assert finding.details["checks"] == (
        "payer policies; prior authorization; coverage information; BMI documentation"
    )


def test_checks_follow_the_orders_code_families(data: RuleData) -> None:
    gap = DataGap("cctaReports", "FHIR server answered 500")
    cac_only = _one(_facts(gap, codes=(CAC,)), data)
    assert cac_only.details["checks"] == "bundling with performed studies"
    both = _one(_facts(gap, codes=(CAC, FFRCT)), data)
    assert both.details["checks"] == (
        "CCTA on file; stenosis; duplicate FFR-CT; bundling with performed studies"
    )


def test_one_card_for_many_gaps_with_checks_and_reasons_once(data: RuleData) -> None:
    finding = _one(
        _facts(
            DataGap("fhirServer", "the FHIR server is not on this client's allowlist"),
            DataGap("cctaReports", "FHIR server answered 401"),
            DataGap("procedures", "FHIR server answered 401"),
            DataGap("procedures", "FHIR server answered 401"),
            DataGap("procedures", "2 Procedure resource(s) could not be read"),
        ),
        data,
    )
    assert finding.details["sources"] == (
        "CCTA reports, procedures on file and the EHR's FHIR server"
    )
    assert finding.details["source_lines"] == (
        "- **CCTA reports**: FHIR server answered 401\n"
        "- **Procedures on file**: FHIR server answered 401; "
        "2 Procedure resource(s) could not be read\n"
        "- **The EHR's FHIR server**: the FHIR server is not on this client's allowlist"
    )
    checks = finding.details["checks"].split("; ")
    many = _one(_facts(*(DataGap(k, "FHIR server answered 500") for k in KEYS)), data)
    assert many.details["sources"] == (
        "patient demographics, insurance coverage and 7 other sources"
    )
    assert len(checks) == len(set(checks))
    assert checks[-1] == "every check on data that was not prefetched"


def test_unknown_gap_key_is_named_as_is(data: RuleData) -> None:
    finding = _one(_facts(DataGap("encounter", "FHIR server answered 404")), data)
    assert finding.details["source_lines"] == "- **Encounter**: FHIR server answered 404"
    assert finding.details["checks"] == "checks that use this data"


def test_silent_when_no_order_is_one_this_service_checks(data: RuleData) -> None:
    gap = DataGap("coverage", "FHIR server answered 401")
    assert list(data_quality.data_incomplete(_facts(gap, codes=(CHEST_XRAY,)), data)) == []
    # ... unless a draft order could not be read: it may have been one.
    unreadable = DataGap("draftOrders", "a draft ServiceRequest could not be read (invalid code)")
    finding = _one(_facts(unreadable, codes=(CHEST_XRAY,)), data)
    assert finding.details["checks"] == "every check on the unreadable draft order"


def test_the_source_table_is_valid_rule_data_covering_every_prefetch_key(data: RuleData) -> None:
    from service.cdshooks.discovery import ServiceRegistry

    params = data_quality.DataIncompleteParams.of(data)
    service = ServiceRegistry().get("cardiac-ct-order-sign")
    assert service is not None and service.prefetch is not None
    assert set(service.prefetch) <= set(params.sources)
    assert {"fhirServer", "draftOrders", "coverage-type"} <= set(params.sources)


def test_renders_as_an_info_card_without_override_reasons(data: RuleData) -> None:
    knowledge = Knowledge.load()
    finding = _one(_facts(DataGap("conditions", "FHIR server answered 403")), data)
    actions = ActionBuilder(
        ActionContext(drafts={}, patient_id="p", user_ref="Practitioner/1", encounter_id=None),
        knowledge.rule_data,
    )
    card = render_card(
        finding, knowledge.cards, knowledge.rule_data, actions, hook=HOOKS["order-sign"]
    )
    assert card.indicator == "info"
    assert card.overrideReasons is None
    assert card.summary == (
        "Some checks were not run: the problem list and diagnoses could not be read"
    )
    assert card.detail is not None
    assert "- **The problem list and diagnoses**: FHIR server answered 403" in card.detail
    assert "**Checks not run:** symptoms; screening; excluded history" in card.detail


def test_a_broken_source_table_stops_the_service_at_startup(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(
        "rules:\n"
        "  data-incomplete:\n"
        "    params:\n"
        "      sources:\n"
        "        bmi: {label: BMI, checks: [{name: BMI documentation, orders: [mri]}]}\n",
        encoding="utf-8",
    )
    with pytest.raises(RuleDataError, match=r"data-incomplete\.params"):
        Knowledge.load(extra_rule_dir=tmp_path)


# -- reason gaps only where a check depended on the unreadable reason --------------------------


def _reason_facts(reasons: frozenset[Code], diagnoses: tuple[Diagnosis, ...], code: Code) -> Facts:
    draft = Order(
        ref="ServiceRequest/o1",
        codes=frozenset({code}),
        reason_codes=reasons,
        status="draft",
        origin="draft",
        service_date=date(2026, 12, 1),
        reasons_uncoded=True,
    )
    return Facts(
        today=date(2026, 12, 1),
        patient_ref="Patient/p1",
        patient_state=None,
        draft_orders=(draft,),
        diagnoses=diagnoses,
        coverage=CoverageFacts(
            "Coverage/c", "commercial", "commercial-other", "Acme", None, "test"
        ),
        gaps=(DataGap("reasonText", "a reason is text only"),),
    )


@pytest.mark.parametrize(
    ("code", "charted", "kept"),
    [
        # FFR-CT: the excluded-history check reads the reason (it may say unstable angina)
        (Code("cpt", "75580"), Code("snomed", "233819005"), True),
        (Code("cpt", "75580"), Code("icd10cm", "E785"), True),  # no symptom: the text may be one
        (Code("cpt", "75571"), Code("snomed", "38341003"), False),  # risk factor on file
        (Code("cpt", "75571"), Code("icd10cm", "R079"), True),  # no risk factor on file
    ],
)
def test_a_text_only_reason_is_a_gap_only_when_a_check_depended_on_it(
    data: RuleData, code: Code, charted: Code, kept: bool
) -> None:
    diagnosis = Diagnosis("Condition/d", frozenset({charted}), None)
    facts = data_quality.without_moot_reason_gaps(
        _reason_facts(frozenset(), (diagnosis,), code), data
    )
    assert bool(facts.gaps) is kept
