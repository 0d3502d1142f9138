"""FFR-CT rules on hand-built facts: each topic fires on its case and stays silent otherwise."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Any

import pytest

from service.facts.ccta import with_ccta_targets
from service.facts.model import CctaResult, CoverageFacts, Diagnosis, Facts, Order, PerformedStudy
from service.fhir.gaps import DataGap
from service.knowledge.catalogue import RuleData, load_rule_data
from service.knowledge.vocabulary import Code
from service.rules import ffrct
from service.rules.findings import Finding, ProposedAction

TODAY = date(2026, 11, 23)
FFRCT = Code("cpt", "75580")
CCTA = Code("cpt", "75574")
CHEST_PAIN = Code("icd10cm", "R079")
SCREENING = Code("icd10cm", "Z136")

RULE_DATA = load_rule_data()


@pytest.fixture(scope="module")
def data() -> RuleData:
    return RULE_DATA  # loaded once for the module (the facts helpers use it too)


def order(
    ref: str = "ServiceRequest/ffr-1",
    *codes: Code,
    reasons: frozenset[Code] = frozenset({CHEST_PAIN}),
    origin: Any = "draft",
    status: str = "draft",
    day: date = TODAY,
    links: frozenset[str] = frozenset(),
    selected: bool = True,
) -> Order:
    return Order(
        ref=ref,
        codes=frozenset(codes or {FFRCT}),
        reason_codes=reasons,
        status=status,
        origin=origin,
        service_date=day,
        selected=selected,
        linked_refs=links,
    )


def ccta(
    percent: float | None = 60.0,
    *,
    ref: str = "DiagnosticReport/ccta-1",
    day: date = date(2026, 11, 2),
    cad_rads: str | None = None,
    bounds: tuple[float, float] | None = None,
    modifiers: frozenset[str] = frozenset(),
    aliases: frozenset[str] = frozenset(),
) -> CctaResult:
    return CctaResult(
        ref=ref,
        performed=day,
        max_stenosis_percent=percent,
        cad_rads=cad_rads,
        cad_rads_modifiers=modifiers,
        stenosis_range=bounds,
        aliases=aliases | {ref},
    )


def facts(*drafts: Order, **kwargs: Any) -> Facts:
    defaults: dict[str, Any] = {"cctas": (ccta(),), "has_bmi": True}
    defaults.update(kwargs)
    return with_ccta_targets(
        Facts(
            today=TODAY,
            patient_ref="Patient/p1",
            patient_state=None,
            draft_orders=drafts or (order(),),
            **defaults,
        ),
        RULE_DATA,
    )


def run(rule: Any, f: Facts, data: RuleData) -> list[Finding]:
    return list(rule(f, data))


def gap(key: str) -> DataGap:
    return DataGap(key, "FHIR server timed out")


def test_clean_order_gives_no_finding(data: RuleData) -> None:
    from service.rules.engine import RULES, evaluate

    ffrct_rules = {t: r for t, r in RULES.items() if t.startswith("ffrct-")}
    assert len(ffrct_rules) == 9
    assert evaluate(facts(), data, ffrct_rules) == []


def test_non_ffrct_orders_are_ignored(data: RuleData) -> None:
    cac = order("ServiceRequest/cac", Code("cpt", "75571"), reasons=frozenset())
    f = facts(cac, cctas=(), has_bmi=False)
    assert all(run(r, f, data) == [] for r in _ffrct_rules())


def _ffrct_rules() -> list[Any]:
    return [
        ffrct.symptoms_missing,
        ffrct.screening_use,
        ffrct.ccta_missing,
        ffrct.stenosis_out_of_range,
        ffrct.stenosis_undocumented,
        ffrct.bmi_missing,
        ffrct.duplicate,
        ffrct.legacy_code,
        ffrct.excluded_history,
    ]


# -- symptoms -------------------------------------------------------------------------------


def test_symptoms_missing_fires_without_any_symptom(data: RuleData) -> None:
    found = run(ffrct.symptoms_missing, facts(order(reasons=frozenset())), data)
    assert [f.topic for f in found] == ["ffrct-symptoms-missing"]
    assert found[0].order_refs == ("ServiceRequest/ffr-1",)


@pytest.mark.parametrize(
    "symptom",
    [Code("icd10cm", "R0789"), Code("icd10cm", "I2089"), Code("snomed", "233819005")],
)
def test_symptom_on_the_problem_list_is_enough(data: RuleData, symptom: Code) -> None:
    problem = Diagnosis("Condition/c1", frozenset({symptom}), None, "problem-list-item")
    f = facts(order(reasons=frozenset()), diagnoses=(problem,))
    assert run(ffrct.symptoms_missing, f, data) == []


def test_symptoms_unknown_when_conditions_unavailable(data: RuleData) -> None:
    f = facts(order(reasons=frozenset()), gaps=(gap("conditions"),))
    assert run(ffrct.symptoms_missing, f, data) == []


def test_symptoms_unknown_when_a_reason_reference_is_unresolved(data: RuleData) -> None:
    unresolved = replace(order(reasons=frozenset()), reasons_unresolved=True)
    assert run(ffrct.symptoms_missing, facts(unresolved), data) == []


def test_symptom_on_the_order_needs_no_conditions(data: RuleData) -> None:
    f = facts(order(), gaps=(gap("conditions"),))
    assert run(ffrct.symptoms_missing, f, data) == []


# -- screening ------------------------------------------------------------------------------


def test_screening_only_reason_fires(data: RuleData) -> None:
    found = run(ffrct.screening_use, facts(order(reasons=frozenset({SCREENING}))), data)
    assert [f.details["reason_code"] for f in found] == ["Z13.6"]


def test_screening_with_a_symptom_on_the_order_is_fine(data: RuleData) -> None:
    f = facts(order(reasons=frozenset({SCREENING, CHEST_PAIN})))
    assert run(ffrct.screening_use, f, data) == []


def test_screening_with_another_diagnosis_on_the_order_is_fine(data: RuleData) -> None:
    f = facts(order(reasons=frozenset({SCREENING, Code("icd10cm", "I2510")})))
    assert run(ffrct.screening_use, f, data) == []


def test_screening_reason_fires_even_with_symptom_on_problem_list(data: RuleData) -> None:
    problem = Diagnosis("Condition/c1", frozenset({CHEST_PAIN}), None)
    f = facts(order(reasons=frozenset({Code("icd10cm", "Z0000")})), diagnoses=(problem,))
    assert [f.topic for f in run(ffrct.screening_use, f, data)] == ["ffrct-screening-use"]


def test_no_reason_and_screening_encounter_diagnosis_fires(data: RuleData) -> None:
    visit = Diagnosis("Condition/c1", frozenset({SCREENING}), None, "encounter-diagnosis")
    f = facts(order(reasons=frozenset()), diagnoses=(visit,))
    assert [f.topic for f in run(ffrct.screening_use, f, data)] == ["ffrct-screening-use"]
    symptom = Diagnosis("Condition/c2", frozenset({CHEST_PAIN}), None)
    f = facts(order(reasons=frozenset()), diagnoses=(visit, symptom))
    assert run(ffrct.screening_use, f, data) == []


# -- CCTA -----------------------------------------------------------------------------------


def test_ccta_missing_suggests_a_75574_order(data: RuleData) -> None:
    found = run(ffrct.ccta_missing, facts(cctas=()), data)
    assert len(found) == 1
    assert found[0].actions == (
        ProposedAction("create-order", "ServiceRequest/ffr-1", Code("cpt", "75574")),
    )


def test_ccta_in_the_same_draft_counts(data: RuleData) -> None:
    new_ccta = order("ServiceRequest/ccta-1", CCTA)
    assert run(ffrct.ccta_missing, facts(order(), new_ccta, cctas=()), data) == []


@pytest.mark.parametrize("key", ["cctaReports", "procedures", "imagingStudies"])
def test_ccta_missing_is_silent_when_ccta_data_unavailable(data: RuleData, key: str) -> None:
    assert run(ffrct.ccta_missing, facts(cctas=(), gaps=(gap(key),)), data) == []


def test_ccta_missing_silent_when_order_links_an_unseen_report(data: RuleData) -> None:
    linked = order(links=frozenset({"DiagnosticReport/outside-ccta"}))
    assert run(ffrct.ccta_missing, facts(linked, cctas=()), data) == []


# -- stenosis -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("percent", "fires"), [(29.0, True), (30.0, False), (60.0, False), (90.0, False), (95.0, True)]
)
def test_stenosis_range_is_inclusive(data: RuleData, percent: float, fires: bool) -> None:
    found = run(ffrct.stenosis_out_of_range, facts(cctas=(ccta(percent),)), data)
    assert bool(found) is fires


def test_payer_range_replaces_the_seed_range(data: RuleData) -> None:
    """Original Medicare's FFR-CT policy (the MAC LCDs) says 40-90 %, on the order's own date
    of service; a commercial payer without a range keeps the seed's 30-90 %."""
    medicare = CoverageFacts(
        "Coverage/m", "original-medicare", "original-medicare", "Medicare", None, "test"
    )
    f = facts(cctas=(ccta(35.0),), coverage=medicare)
    found = run(ffrct.stenosis_out_of_range, f, data)
    assert found[0].details["range"] == "40-90 %"
    assert found[0].details["stenosis"] == "35 %"
    commercial = CoverageFacts("Coverage/c", "commercial", None, "Acme Health", None, "test")
    assert (
        run(ffrct.stenosis_out_of_range, facts(cctas=(ccta(35.0),), coverage=commercial), data)
        == []
    )


@pytest.mark.parametrize(
    ("category", "bounds", "fires"),
    [
        ("1", (1.0, 24.0), True),
        ("2", (25.0, 49.0), False),
        ("4A", (70.0, 99.0), False),
        ("5", (100.0, 100.0), True),
        ("0", (0.0, 0.0), True),
    ],
)
def test_cad_rads_only_fires_when_the_whole_range_is_outside(
    data: RuleData, category: str, bounds: tuple[float, float], fires: bool
) -> None:
    reading = ccta(None, cad_rads=category, bounds=bounds)
    assert bool(run(ffrct.stenosis_out_of_range, facts(cctas=(reading,)), data)) is fires
    assert run(ffrct.stenosis_undocumented, facts(cctas=(reading,)), data) == []


def test_measured_percent_wins_over_cad_rads(data: RuleData) -> None:
    reading = ccta(60.0, cad_rads="1", bounds=(1.0, 24.0))
    assert run(ffrct.stenosis_out_of_range, facts(cctas=(reading,)), data) == []


def test_most_recent_ccta_counts_unless_the_order_links_another(data: RuleData) -> None:
    old = ccta(95.0, ref="DiagnosticReport/old", day=date(2025, 1, 5))
    new = ccta(60.0, ref="DiagnosticReport/new")
    assert run(ffrct.stenosis_out_of_range, facts(cctas=(new, old)), data) == []
    linked = order(links=frozenset({"DiagnosticReport/old"}))
    found = run(ffrct.stenosis_out_of_range, facts(linked, cctas=(new, old)), data)
    assert found[0].order_refs == ("ServiceRequest/ffr-1", "DiagnosticReport/old")


def test_new_ccta_in_the_draft_has_no_reading_yet(data: RuleData) -> None:
    f = facts(order(), order("ServiceRequest/ccta-new", CCTA), cctas=(ccta(None),))
    assert run(ffrct.stenosis_out_of_range, f, data) == []
    assert run(ffrct.stenosis_undocumented, f, data) == []


def test_stenosis_undocumented(data: RuleData) -> None:
    found = run(ffrct.stenosis_undocumented, facts(cctas=(ccta(None),)), data)
    assert [f.details["ccta_date"] for f in found] == ["2026-11-02"]
    assert found[0].order_refs[1] == "DiagnosticReport/ccta-1"
    non_diagnostic = ccta(None, cad_rads="N")
    assert run(ffrct.stenosis_undocumented, facts(cctas=(non_diagnostic,)), data) == []
    assert run(ffrct.stenosis_out_of_range, facts(cctas=(non_diagnostic,)), data) == []


# -- BMI, legacy ----------------------------------------------------------------------------


@pytest.mark.parametrize(("has_bmi", "fires"), [(False, True), (None, False), (True, False)])
def test_bmi_missing(data: RuleData, has_bmi: bool | None, fires: bool) -> None:
    assert bool(run(ffrct.bmi_missing, facts(has_bmi=has_bmi), data)) is fires


@pytest.mark.parametrize("legacy", ["0501T", "0502T", "0503T", "0504T"])
def test_legacy_code_suggests_75580(data: RuleData, legacy: str) -> None:
    old = order("ServiceRequest/old", Code("cpt", legacy))
    found = run(ffrct.legacy_code, facts(old), data)
    assert found[0].actions == (ProposedAction("replace-order-code", old.ref, FFRCT),)
    assert found[0].details["legacy_code"] == legacy


def test_legacy_coded_order_gets_the_other_checks_too(data: RuleData) -> None:
    old = order("ServiceRequest/old", Code("cpt", "0501T"), reasons=frozenset())
    found = run(ffrct.symptoms_missing, facts(old, cctas=()), data)
    found += run(ffrct.ccta_missing, facts(old, cctas=()), data)
    assert [f.topic for f in found] == ["ffrct-symptoms-missing", "ffrct-ccta-missing"]


# -- excluded history -----------------------------------------------------------------------


@pytest.mark.parametrize(("code", "text"), [("Z955", "coronary stent"), ("Z951", "bypass graft")])
def test_device_history_fires(data: RuleData, code: str, text: str) -> None:
    history = Diagnosis("Condition/h", frozenset({Code("icd10cm", code)}), None)
    found = run(ffrct.excluded_history, facts(diagnoses=(history,)), data)
    assert text in found[0].details["history"]


def test_cad_rads_stent_modifier_fires(data: RuleData) -> None:
    reading = ccta(60.0, cad_rads="3", modifiers=frozenset({"S", "HRP"}))
    found = run(ffrct.excluded_history, facts(cctas=(reading,)), data)
    assert found[0].details["first"] == "CAD-RADS modifier S (coronary stent)"


@pytest.mark.parametrize(
    ("days_before", "fires"), [(0, True), (30, True), (31, False), (-2, False)]
)
def test_acute_mi_window(data: RuleData, days_before: int, fires: bool) -> None:
    onset = date.fromordinal(TODAY.toordinal() - days_before)
    mi = Diagnosis("Condition/mi", frozenset({Code("icd10cm", "I214")}), onset)
    assert bool(run(ffrct.excluded_history, facts(diagnoses=(mi,)), data)) is fires


def test_acute_mi_without_a_date_is_not_assumed_recent(data: RuleData) -> None:
    mi = Diagnosis("Condition/mi", frozenset({Code("icd10cm", "I214")}), None)
    assert run(ffrct.excluded_history, facts(diagnoses=(mi,)), data) == []


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (Code("icd10cm", "Z9861"), "coronary stent or PCI (Z98.61)"),
        (Code("snomed", "428375006"), "coronary stent or PCI (SNOMED CT 428375006)"),
        (Code("icd10cm", "I25810"), "coronary bypass graft (I25.810)"),
        (Code("icd10cm", "I25718"), "coronary bypass graft (I25.718)"),
        (Code("snomed", "399261000"), "coronary bypass graft (SNOMED CT 399261000)"),
        (Code("icd10cm", "Z941"), "heart transplant (Z94.1)"),
    ],
)
def test_history_from_conditions_in_every_system(data: RuleData, code: Code, text: str) -> None:
    history = Diagnosis("Condition/h", frozenset({code}), None)
    for listed in ({"diagnoses": (history,)}, {"inactive_diagnoses": (history,)}):
        found = run(ffrct.excluded_history, facts(**listed), data)
        assert found and text in found[0].details["history"], listed


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (Code("cpt", "92928"), "coronary stent or PCI: procedure CPT 92928 on 2021-03-04"),
        (Code("hcpcs", "C9600"), "coronary stent or PCI: procedure HCPCS C9600"),
        (Code("snomed", "415070008"), "coronary stent or PCI: procedure SNOMED CT 415070008"),
        (Code("cpt", "33533"), "coronary bypass graft: procedure CPT 33533"),
        (Code("icd10pcs", "021209W"), "coronary bypass graft: procedure ICD-10-PCS 021209W"),
        (Code("snomed", "232717009"), "coronary bypass graft: procedure SNOMED CT 232717009"),
    ],
)
def test_history_from_procedures(data: RuleData, code: Code, text: str) -> None:
    done = PerformedStudy(
        "Procedure/p", "procedure", frozenset({code}), "completed", date(2021, 3, 4)
    )
    found = run(ffrct.excluded_history, facts(performed=(done,)), data)
    assert found and text in found[0].details["history"]


@pytest.mark.parametrize(
    "study",
    [
        PerformedStudy(
            "Procedure/p", "procedure", frozenset({Code("cpt", "92928")}), "not-done", None
        ),
        PerformedStudy(
            "Procedure/p",
            "procedure",
            frozenset({Code("cpt", "92928")}),
            "completed",
            date(2026, 12, 9),
        ),
        PerformedStudy(
            "Procedure/p", "procedure", frozenset({Code("cpt", "92978")}), "completed", None
        ),
    ],
    ids=["not-done", "after-the-date-of-service", "ivus-is-not-pci"],
)
def test_procedures_that_are_not_history(data: RuleData, study: PerformedStudy) -> None:
    assert run(ffrct.excluded_history, facts(performed=(study,)), data) == []


@pytest.mark.parametrize("modifier", ["S", "G"])
def test_coded_cad_rads_modifiers_reach_the_rule(data: RuleData, modifier: str) -> None:
    reading = ccta(None, cad_rads="3", modifiers=frozenset({modifier}))
    assert run(ffrct.excluded_history, facts(cctas=(reading,)), data)


@pytest.mark.parametrize(
    "code",
    [
        Code("icd10cm", "I200"),
        Code("icd10cm", "I249"),
        Code("icd10cm", "I25110"),
        Code("icd10cm", "I25710"),
        Code("snomed", "4557003"),
        Code("snomed", "394659003"),
    ],
)
def test_unstable_angina_as_the_only_reason_is_excluded_and_not_a_stable_symptom(
    data: RuleData, code: Code
) -> None:
    """Unstable angina / ACS is not the stable symptom FFR-CT needs (rules.md §2, revised
    2026-12-01): symptoms-missing fires, and excluded-history says the patient is not stable."""
    f = facts(order(reasons=frozenset({code})))
    found = run(ffrct.excluded_history, f, data)
    assert found and "suspected ACS" in found[0].details["first"]
    assert [x.topic for x in run(ffrct.symptoms_missing, f, data)] == ["ffrct-symptoms-missing"]


@pytest.mark.parametrize(
    ("onset_days_before", "active", "fires"),
    [
        (None, True, True),
        (10, True, True),
        (200, True, False),
        (10, False, True),
        (None, False, False),
    ],
)
def test_unstable_angina_on_the_chart(
    data: RuleData, onset_days_before: int | None, active: bool, fires: bool
) -> None:
    onset = (
        None
        if onset_days_before is None
        else date.fromordinal(TODAY.toordinal() - onset_days_before)
    )
    ua = Diagnosis("Condition/ua", frozenset({Code("icd10cm", "I200")}), onset)
    listed = {"diagnoses": (ua,)} if active else {"inactive_diagnoses": (ua,)}
    found = run(ffrct.excluded_history, facts(order(reasons=frozenset()), **listed), data)
    assert bool(found) is fires


@pytest.mark.parametrize(
    ("code", "symptom"),
    [
        (Code("icd10cm", "R070"), False),  # pain in throat
        (Code("icd10cm", "R0789"), True),
        (Code("icd10cm", "R0602"), True),
        (Code("icd10cm", "I209"), True),
        (Code("icd10cm", "I2089"), True),
        (Code("icd10cm", "I25118"), True),
        (Code("snomed", "29857009"), True),
        (Code("snomed", "426396005"), True),
        (Code("snomed", "274668005"), False),  # non-cardiac chest pain
    ],
)
def test_symptom_list_is_honest(data: RuleData, code: Code, symptom: bool) -> None:
    f = facts(order(reasons=frozenset({code})))
    assert bool(run(ffrct.symptoms_missing, f, data)) is not symptom


def test_unread_ccta_results_are_unknown_not_undocumented(data: RuleData) -> None:
    unread = replace(ccta(None), results_unread=True)
    assert run(ffrct.stenosis_undocumented, facts(cctas=(unread,)), data) == []
    low = replace(ccta(20.0), results_unread=True)
    assert run(ffrct.stenosis_out_of_range, facts(cctas=(low,)), data) == []
    high = replace(ccta(95.0), results_unread=True)  # more results can only raise the maximum
    assert run(ffrct.stenosis_out_of_range, facts(cctas=(high,)), data)


# -- duplicates -----------------------------------------------------------------------------


def _existing(
    status: str = "active", day: date = date(2026, 11, 10), links: frozenset[str] = frozenset()
) -> Order:
    return order("ServiceRequest/ffr-old", origin="existing", status=status, day=day, links=links)


def test_duplicate_of_an_active_order_after_the_ccta(data: RuleData) -> None:
    found = run(ffrct.duplicate, facts(existing_orders=(_existing(),)), data)
    assert found[0].actions == (ProposedAction("delete-order", "ServiceRequest/ffr-1"),)
    assert "ServiceRequest/ffr-old" in found[0].order_refs


def test_prior_ffrct_before_the_ccta_is_for_an_older_ccta(data: RuleData) -> None:
    earlier = _existing(day=date(2026, 10, 1))
    assert run(ffrct.duplicate, facts(existing_orders=(earlier,)), data) == []


def test_cancelled_prior_order_is_not_a_duplicate(data: RuleData) -> None:
    cancelled = _existing(status="revoked")
    assert run(ffrct.duplicate, facts(existing_orders=(cancelled,)), data) == []


def test_linked_prior_decides_regardless_of_date(data: RuleData) -> None:
    old, new = ccta(ref="DiagnosticReport/old", day=date(2026, 1, 1)), ccta()
    for_old = _existing(day=date(2026, 11, 20), links=frozenset({"DiagnosticReport/old"}))
    assert run(ffrct.duplicate, facts(existing_orders=(for_old,), cctas=(new, old)), data) == []
    for_new = _existing(day=date(2026, 1, 2), links=frozenset({"DiagnosticReport/ccta-1"}))
    assert run(ffrct.duplicate, facts(existing_orders=(for_new,), cctas=(new, old)), data)


def test_completed_procedure_and_final_report_are_duplicates(data: RuleData) -> None:
    done = PerformedStudy("Procedure/p", "procedure", frozenset({FFRCT}), "completed", TODAY)
    report = PerformedStudy("DiagnosticReport/r", "report", frozenset({FFRCT}), "final", TODAY)
    draft_report = replace(report, status="preliminary")
    assert run(ffrct.duplicate, facts(performed=(done,)), data)
    assert run(ffrct.duplicate, facts(performed=(report,)), data)
    assert run(ffrct.duplicate, facts(performed=(draft_report,)), data) == []


def test_two_drafts_give_one_card_on_the_later(data: RuleData) -> None:
    first, second = order("ServiceRequest/a"), order("ServiceRequest/b")
    found = run(ffrct.duplicate, facts(first, second), data)
    assert len(found) == 1
    assert found[0].actions == (ProposedAction("delete-order", "ServiceRequest/b"),)


def test_order_select_of_a_twin_suggests_removing_the_selected_order(data: RuleData) -> None:
    """Review M9 (this test used to expect deleting the UNSELECTED twin): on order-select the
    newly selected order is the one just added, so it is the duplicate; the card never acts on
    an order the user did not select, and never names the order that stays."""
    first, second = order("ServiceRequest/a"), order("ServiceRequest/b", selected=False)
    found = run(ffrct.duplicate, facts(first, second), data)
    assert found[0].actions == (ProposedAction("delete-order", "ServiceRequest/a"),)
    assert found[0].order_refs == ("ServiceRequest/a",)
    assert found[0].details["other_ref"] == "ServiceRequest/b"


def test_drafts_for_different_cctas_are_not_duplicates(data: RuleData) -> None:
    old, new = ccta(ref="DiagnosticReport/old", day=date(2026, 1, 1)), ccta()
    a = order("ServiceRequest/a", links=frozenset({"DiagnosticReport/old"}))
    b = order("ServiceRequest/b", links=frozenset({"DiagnosticReport/ccta-1"}))
    assert run(ffrct.duplicate, facts(a, b, cctas=(new, old)), data) == []


def test_screening_reason_with_an_unresolved_reference_is_not_judged(data: RuleData) -> None:
    unresolved = replace(order(reasons=frozenset({SCREENING})), reasons_unresolved=True)
    assert run(ffrct.screening_use, facts(unresolved), data) == []


def test_subsequent_mi_counts_as_acute(data: RuleData) -> None:
    mi = Diagnosis("Condition/mi", frozenset({Code("icd10cm", "I222")}), date(2026, 11, 1))
    assert run(ffrct.excluded_history, facts(diagnoses=(mi,)), data)


def test_duplicate_card_names_the_prior_order_plainly(data: RuleData) -> None:
    found = run(ffrct.duplicate, facts(existing_orders=(_existing("completed"),)), data)
    assert found[0].details["other"] == "a completed FFR-CT order"
    assert found[0].details["other_ref"] == "ServiceRequest/ffr-old"


# -- review findings (H2, H3, H5, M2, M3, L1) ----------------------------------------------------


def _ccta_order_on_file(status: str = "active", day: date = date(2026, 11, 28)) -> Order:
    return order("ServiceRequest/ccta-old", CCTA, origin="existing", status=status, day=day)


def test_ccta_ordered_on_file_is_not_missing(data: RuleData) -> None:
    """Review H2: an active 75574 order on file is a CCTA "ordered"."""
    f = facts(cctas=(), existing_orders=(_ccta_order_on_file(),))
    assert run(ffrct.ccta_missing, f, data) == []
    target = f.ccta_target(f.draft_orders[0].ref)
    assert target is not None and target.draft == _ccta_order_on_file()
    revoked = facts(cctas=(), existing_orders=(_ccta_order_on_file("revoked"),))
    assert len(run(ffrct.ccta_missing, revoked, data)) == 1


def test_ccta_ordered_after_the_last_ccta_is_the_target(data: RuleData) -> None:
    """A pending 75574 newer than the CCTA on file is the one the FFR-CT is for: the old
    CCTA's 95 % does not fire; an order already read (its report on file) is not pending."""
    old = ccta(95.0, day=date(2025, 3, 1))
    f = facts(cctas=(old,), existing_orders=(_ccta_order_on_file(),))
    assert run(ffrct.stenosis_out_of_range, f, data) == []
    read = replace(old, aliases=old.aliases | {"ServiceRequest/ccta-old"})
    f = facts(cctas=(read,), existing_orders=(_ccta_order_on_file(),))
    assert len(run(ffrct.stenosis_out_of_range, f, data)) == 1


def test_link_to_a_non_ccta_study_on_file_does_not_silence_ccta_missing(data: RuleData) -> None:
    """Review H3: the service HAS the linked echo report; it is not a CCTA."""
    linked = order(links=frozenset({"DiagnosticReport/echo-1"}))
    f = facts(linked, cctas=(), on_file_refs=frozenset({"DiagnosticReport/echo-1"}))
    assert [x.topic for x in run(ffrct.ccta_missing, f, data)] == ["ffrct-ccta-missing"]


def test_two_drafts_name_only_the_order_to_remove(data: RuleData) -> None:
    """Review H5: the order that stays gets no duplicate finding (no stale coverage info)."""
    first, second = order("ServiceRequest/a"), order("ServiceRequest/b")
    (found,) = run(ffrct.duplicate, facts(first, second), data)
    assert found.order_refs == ("ServiceRequest/b",)
    assert found.details["other_ref"] == "ServiceRequest/a"


def test_both_twins_selected_on_order_select_removes_the_later(data: RuleData) -> None:
    first, second = order("ServiceRequest/a"), order("ServiceRequest/b")
    (found,) = run(ffrct.duplicate, facts(first, second), data)
    assert found.actions == (ProposedAction("delete-order", "ServiceRequest/b"),)


def test_reported_range_decides_like_a_category(data: RuleData) -> None:
    """Review M2: "50-69 %" is documented and inside the range; "1-24 %" is outside."""
    inside = replace(ccta(None), stenosis_range=(50.0, 69.0), stenosis_range_measured=True)
    assert run(ffrct.stenosis_undocumented, facts(cctas=(inside,)), data) == []
    assert run(ffrct.stenosis_out_of_range, facts(cctas=(inside,)), data) == []
    outside = replace(inside, stenosis_range=(1.0, 24.0))
    (found,) = run(ffrct.stenosis_out_of_range, facts(cctas=(outside,)), data)
    assert found.details["stenosis"] == "1-24 %"


def test_resolved_recent_mi_still_excludes(data: RuleData) -> None:
    """Review M3: the MI was resolved a week ago; it is still within 30 days."""
    mi = Diagnosis("Condition/mi", frozenset({Code("icd10cm", "I214")}), date(2026, 11, 8))
    (found,) = run(ffrct.excluded_history, facts(inactive_diagnoses=(mi,)), data)
    assert found.details["first"] == "acute MI (I21.4) on 2026-11-08"


def test_mi_with_only_a_recorded_date_says_so(data: RuleData) -> None:
    """Review M3: recordedDate is not the onset; the card must not call it one."""
    mi = Diagnosis(
        "Condition/mi", frozenset({Code("icd10cm", "I214")}), None, recorded=date(2026, 11, 20)
    )
    (found,) = run(ffrct.excluded_history, facts(diagnoses=(mi,)), data)
    assert found.details["first"] == (
        "acute MI (I21.4) recorded on 2026-11-20 (onset date not documented)"
    )
    old = replace(mi, recorded=date(2026, 9, 1))
    assert run(ffrct.excluded_history, facts(diagnoses=(old,)), data) == []


def test_text_only_reason_is_not_a_missing_symptom(data: RuleData) -> None:
    """Review L1: "Chest pain on exertion" as text is unknown, not absent (the facts record a
    reasonText gap for the data-incomplete card)."""
    uncoded = replace(order(reasons=frozenset()), reasons_uncoded=True)
    assert run(ffrct.symptoms_missing, facts(uncoded), data) == []
    screening_and_text = replace(order(reasons=frozenset({SCREENING})), reasons_uncoded=True)
    assert run(ffrct.screening_use, facts(screening_and_text), data) == []
