"""Clinical facts from messy FHIR JSON: reasons, diagnoses, the CCTA reading, BMI, links."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from service.cdshooks.hooks import HOOKS
from service.facts.build import build_facts
from service.facts.clinical import parse_cad_rads
from service.facts.model import Facts
from service.fhir.drafts import parse_drafts
from service.fhir.gaps import DataGap
from service.fhir.gather import gather_prefetch
from service.fhir.parse import ref_key
from service.knowledge.catalogue import RuleData, load_rule_data
from service.knowledge.vocabulary import Code
from tests.support.fhir_json import CPT, PREFETCH_KEYS, service_request

TODAY = date(2026, 11, 23)
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
MISSING = object()


@pytest.fixture(scope="module")
def data() -> RuleData:
    return load_rule_data()


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }


def ffrct_order(**extra: Any) -> dict[str, Any]:
    return {**service_request("ffr-1", "75580", patient="p1", day="2026-11-30"), **extra}


def make_facts(
    data: RuleData, drafts: list[dict[str, Any]] | None = None, **prefetch: Any
) -> Facts:
    """Facts through the real parse path: prefetch values, absent keys become data gaps."""
    values = {k: prefetch.get(k) for k in PREFETCH_KEYS if prefetch.get(k, None) is not MISSING}
    gathered, to_fetch = gather_prefetch({k: k for k in PREFETCH_KEYS}, values)
    gathered.gaps.extend(DataGap(k, "not prefetched") for k in to_fetch)
    parsed, gaps = parse_drafts(bundle(*(drafts or [ffrct_order()])))
    return build_facts(
        hook=HOOKS["order-sign"],
        context={"patientId": "p1", "userId": "Practitioner/d1"},
        drafts=parsed,
        data=gathered,
        rule_data=data,
        today=TODAY,
        extra_gaps=gaps,
    )


def condition(cid: str, code: str, system: str = ICD, **extra: Any) -> dict[str, Any]:
    resource = {
        "resourceType": "Condition",
        "id": cid,
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": system, "code": code}]},
    }
    resource.update(extra)
    return resource


def status(code: str, kind: str = "clinical") -> dict[str, Any]:
    name = "clinical" if kind == "clinical" else "ver-status"
    system = f"http://terminology.hl7.org/CodeSystem/condition-{name}"
    return {"coding": [{"system": system, "code": code}]}


def report(rid: str = "ccta-1", results: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    resource = {
        "resourceType": "DiagnosticReport",
        "id": rid,
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": LOINC, "code": "79073-3"}]},
        "effectiveDateTime": "2026-11-02T10:30:00Z",
        "result": [{"reference": f"Observation/{r}"} for r in results or []],
    }
    resource.update(extra)
    return resource


def observation(oid: str, **value: Any) -> dict[str, Any]:
    resource = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": {"text": "Maximum stenosis"},
    }
    resource.update(value)
    return resource


def percent(value: float, **extra: Any) -> dict[str, Any]:
    return {"valueQuantity": {"value": value, "unit": "%", "system": UCUM, "code": "%"}, **extra}


# -- reasons and diagnoses -------------------------------------------------------------------


def test_reason_code_in_second_coding_with_legacy_oid_system(data: RuleData) -> None:
    order = ffrct_order(
        reasonCode=[
            {
                "coding": [
                    {"system": "urn:local:dx", "code": "CP-17"},
                    {"system": "urn:oid:2.16.840.1.113883.6.90", "code": "R07.9"},
                ]
            }
        ]
    )
    facts = make_facts(data, [order])
    assert Code("icd10cm", "R079") in facts.draft_orders[0].reason_codes


def test_dotted_icd_without_system_and_cpt_without_system(data: RuleData) -> None:
    order = ffrct_order(
        code={"coding": [{"code": "75580"}]},
        reasonCode=[{"coding": [{"code": "R07.89"}]}],
    )
    drafted = make_facts(data, [order]).draft_orders[0]
    assert Code("cpt", "75580") in drafted.codes
    assert Code("icd10cm", "R0789") in drafted.reason_codes


def test_reason_reference_resolves_against_gathered_and_contained_conditions(
    data: RuleData,
) -> None:
    contained = condition("dx", "I20.9")
    order = ffrct_order(
        contained=[contained],
        reasonReference=[
            {"reference": "#dx"},
            {"reference": "http://ehr.example/fhir/Condition/cp/_history/3"},
        ],
    )
    facts = make_facts(data, [order], conditions=bundle(condition("cp", "R07.2")))
    reasons = facts.draft_orders[0].reason_codes
    assert {Code("icd10cm", "I209"), Code("icd10cm", "R072")} <= reasons
    assert not facts.draft_orders[0].reasons_unresolved


def test_unresolvable_reason_reference_is_flagged(data: RuleData) -> None:
    order = ffrct_order(reasonReference=[{"display": "chest pain (see note)"}])
    assert make_facts(data, [order]).draft_orders[0].reasons_unresolved


def test_only_active_unrefuted_conditions_are_diagnoses(data: RuleData) -> None:
    conditions = bundle(
        condition("active", "R07.9", clinicalStatus=status("active")),
        condition("relapse", "I20.8", clinicalStatus=status("relapse")),
        condition("no-status", "R06.02"),
        condition("abated", "R07.89", abatementDateTime="2026-01-05"),
        condition("resolved", "R07.1", clinicalStatus=status("resolved")),
        condition("error", "R07.2", verificationStatus=status("entered-in-error", "ver")),
        condition("refuted", "I20.9", verificationStatus=status("refuted", "ver")),
    )
    refs = {d.ref for d in make_facts(data, conditions=conditions).diagnoses}
    assert refs == {"Condition/active", "Condition/relapse", "Condition/no-status"}


def test_diagnosis_category_and_recorded_date_is_not_an_onset(data: RuleData) -> None:
    """Review M3: recordedDate is when it was written down; the card must not call it onset."""
    conditions = bundle(
        condition(
            "mi",
            "I21.4",
            recordedDate="2026-11-10",
            category=[
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                            "code": "encounter-diagnosis",
                        }
                    ]
                }
            ],
        )
    )
    (mi,) = make_facts(data, conditions=conditions).diagnoses
    assert mi.category == "encounter-diagnosis"
    assert mi.onset is None
    assert mi.recorded == date(2026, 11, 10)


# -- CCTA reading ----------------------------------------------------------------------------


def test_largest_percent_among_results_and_has_member(data: RuleData) -> None:
    ccta = bundle(
        report(results=["panel", "lad"]),
        observation("lad", **percent(45)),
        observation("panel", hasMember=[{"reference": "Observation/rca"}]),
        observation("rca", **percent(72)),
    )
    (reading,) = make_facts(data, cctaReports=ccta).cctas
    assert reading.ref == "DiagnosticReport/ccta-1"
    assert reading.performed == date(2026, 11, 2)
    assert reading.max_stenosis_percent == 72


def test_percent_in_components_and_lvef_is_not_stenosis(data: RuleData) -> None:
    vessels = observation(
        "vessels",
        component=[
            {"code": {"text": "LAD"}, **percent(55)},
            {"code": {"text": "LCx"}, **percent(35)},
        ],
    )
    lvef = observation(
        "lvef", code={"coding": [{"system": LOINC, "code": "10230-1"}]}, **percent(62)
    )
    ccta = bundle(report(results=["vessels", "lvef"]), vessels, lvef)
    (reading,) = make_facts(data, cctaReports=ccta).cctas
    assert reading.max_stenosis_percent == 55


def test_configured_stenosis_code_without_a_percent_unit(data: RuleData) -> None:
    local = {
        "coding": [
            {
                "system": "https://cardiac-ct-cds.org/fhir/CodeSystem/ccta-finding",
                "code": "max-stenosis",
            }
        ]
    }
    unitless = observation("max", code=local, valueQuantity={"value": 50})
    other = observation("other", valueQuantity={"value": 80, "unit": "mm"})
    ccta = bundle(report(results=["max", "other"]), unitless, other)
    (reading,) = make_facts(data, cctaReports=ccta).cctas
    assert reading.max_stenosis_percent == 50


@pytest.mark.parametrize(
    ("value", "category", "bounds", "modifiers"),
    [
        ({"valueString": "CAD-RADS 4A/S"}, "4A", (70.0, 99.0), {"S"}),
        ({"valueString": "cad-rads 2.0: 3 / G / HRP"}, "3", (50.0, 69.0), {"G", "HRP"}),
        ({"valueCodeableConcept": {"text": "CAD-RADS 1"}}, "1", (1.0, 24.0), set()),
        (
            {
                "valueCodeableConcept": {
                    "coding": [
                        {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "130729"}
                    ]
                }
            },
            "4B",
            (70.0, 100.0),
            set(),
        ),
    ],
)
def test_cad_rads_only_reading(
    data: RuleData,
    value: dict[str, Any],
    category: str,
    bounds: tuple[float, float],
    modifiers: set[str],
) -> None:
    ccta = bundle(report(results=["cr"]), observation("cr", code={"text": "CAD-RADS"}, **value))
    (reading,) = make_facts(data, cctaReports=ccta).cctas
    assert (reading.cad_rads, reading.stenosis_range) == (category, bounds)
    assert reading.cad_rads_modifiers == modifiers
    assert reading.max_stenosis_percent is None


def test_bare_category_needs_a_cad_rads_observation(data: RuleData) -> None:
    ccta = bundle(report(results=["x"]), observation("x", valueString="3/S"))
    (reading,) = make_facts(data, cctaReports=ccta).cctas
    assert reading.cad_rads is None


def test_cad_rads_in_report_conclusion(data: RuleData) -> None:
    ccta = bundle(report(conclusion="Moderate stenosis of the LAD. CAD-RADS 3/S."))
    (reading,) = make_facts(data, cctaReports=ccta).cctas
    assert (reading.cad_rads, reading.cad_rads_modifiers) == ("3", frozenset({"S"}))


def test_report_code_in_second_coding_and_preliminary_counts(data: RuleData) -> None:
    coded = report(
        status="preliminary",
        code={
            "coding": [{"system": "urn:local", "code": "CTCOR"}, {"system": CPT, "code": "75574"}]
        },
    )
    assert len(make_facts(data, cctaReports=bundle(coded)).cctas) == 1
    cancelled = report(status="cancelled")
    assert make_facts(data, cctaReports=bundle(cancelled)).cctas == ()


def test_imaging_study_only_ccta(data: RuleData) -> None:
    study = {
        "resourceType": "ImagingStudy",
        "id": "is-1",
        "status": "available",
        "subject": {"reference": "Patient/p1"},
        "started": "2026-10-15T08:00:00Z",
        "procedureCode": [{"coding": [{"system": LOINC, "code": "86980-0"}]}],
    }
    (reading,) = make_facts(data, imagingStudies=bundle(study)).cctas
    assert reading.ref == "ImagingStudy/is-1"
    assert reading.performed == date(2026, 10, 15)
    assert reading.max_stenosis_percent is None and reading.cad_rads is None


def test_report_procedure_and_study_of_one_ccta_merge(data: RuleData) -> None:
    study = {
        "resourceType": "ImagingStudy",
        "id": "is-1",
        "status": "available",
        "subject": {"reference": "Patient/p1"},
        "started": "2026-09-01",
        "procedureCode": [{"coding": [{"system": CPT, "code": "75574"}]}],
    }
    procedure = {
        "resourceType": "Procedure",
        "id": "proc-1",
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": CPT, "code": "75574"}]},
        "performedDateTime": "2026-11-02",
    }
    linked = report(
        results=["s"],
        imagingStudy=[{"reference": "ImagingStudy/is-1"}],
        basedOn=[{"reference": "ServiceRequest/ccta-order"}],
    )
    facts = make_facts(
        data,
        cctaReports=bundle(linked, observation("s", **percent(64))),
        procedures=bundle(procedure),
        imagingStudies=bundle(study),
    )
    (reading,) = facts.cctas
    assert reading.ref == "DiagnosticReport/ccta-1"
    assert reading.max_stenosis_percent == 64
    assert {"ImagingStudy/is-1", "Procedure/proc-1", "ServiceRequest/ccta-order"} <= reading.aliases


def test_most_recent_ccta_first(data: RuleData) -> None:
    older = report("old", effectiveDateTime="2025-03-01")
    newer = report("new", effectiveDateTime="2026-11-02")
    facts = make_facts(data, cctaReports=bundle(older, newer))
    assert [c.ref for c in facts.cctas] == ["DiagnosticReport/new", "DiagnosticReport/old"]


def test_ffrct_report_and_order_links_are_facts(data: RuleData) -> None:
    ffr_report = report(
        "ffr-r",
        code={"coding": [{"system": CPT, "code": "75580"}]},
        basedOn=[{"reference": "ServiceRequest/x"}],
    )
    order = ffrct_order(supportingInfo=[{"reference": "DiagnosticReport/ccta-1"}])
    facts = make_facts(data, [order], cctaReports=bundle(ffr_report))
    (study,) = [s for s in facts.performed if s.ref == "DiagnosticReport/ffr-r"]
    assert study.kind == "report" and study.linked_refs == {"ServiceRequest/x"}
    assert facts.draft_orders[0].linked_refs == {"DiagnosticReport/ccta-1"}


# -- BMI --------------------------------------------------------------------------------------


def _bmi(**extra: Any) -> dict[str, Any]:
    return observation(
        "bmi-1",
        code={"coding": [{"system": "urn:oid:2.16.840.1.113883.6.1", "code": "39156-5"}]},
        valueQuantity={"value": 31.2, "unit": "kg/m2", "system": UCUM, "code": "kg/m2"},
        **extra,
    )


def test_bmi_known_absent_and_unknown(data: RuleData) -> None:
    assert make_facts(data, bmi=bundle(_bmi())).has_bmi is True
    assert make_facts(data, bmi=bundle()).has_bmi is False
    assert make_facts(data, bmi=None).has_bmi is False  # prefetch null: the client has none
    assert make_facts(data, bmi=MISSING).has_bmi is None
    assert make_facts(data, bmi=bundle(_bmi(status="entered-in-error"))).has_bmi is False


# -- helpers ----------------------------------------------------------------------------------


def test_parse_cad_rads_and_ref_key() -> None:
    assert parse_cad_rads("CAD-RADS 4B/HRP") == ("4B", frozenset({"HRP"}))
    assert parse_cad_rads("no category here") is None
    assert parse_cad_rads("N", bare=True) == ("N", frozenset())
    assert ref_key("https://x/fhir/Observation/a/_history/1") == "Observation/a"
    assert ref_key("#c1") == "#c1"
    assert ref_key("nothing") is None


def test_contained_result_observation_is_read(data: RuleData) -> None:
    contained = observation("c-sten", **percent(81))
    del contained["subject"]
    ccta = bundle(report(contained=[contained], result=[{"reference": "#c-sten"}]))
    (reading,) = make_facts(data, cctaReports=ccta).cctas
    assert reading.max_stenosis_percent == 81


def test_odd_but_valid_data_reads_as_unknown(data: RuleData) -> None:
    """Dangling references, value-less quantities, cycles and unrelated reasons are tolerated."""
    cyclic = observation("loop", hasMember=[{"reference": "Observation/loop"}])
    empty = observation("empty", valueQuantity={"unit": "%"})
    uncoded = {"resourceType": "Condition", "id": "x", "subject": {"reference": "Patient/p1"}}
    ccta = bundle(
        report(results=["loop", "empty", "gone"], effectiveDateTime=None, issued=None),
        cyclic,
        empty,
    )
    order = ffrct_order(
        reasonReference=[{"reference": "Patient/p1"}, {"reference": "Condition/not-here"}],
        supportingInfo=[{"display": "outside CCTA, faxed"}],
    )
    facts = make_facts(data, [order], cctaReports=ccta, conditions=bundle(uncoded))
    (reading,) = facts.cctas
    assert reading.performed is None
    assert reading.max_stenosis_percent is None and reading.cad_rads is None
    assert facts.draft_orders[0].reasons_unresolved
    assert facts.draft_orders[0].linked_refs == frozenset()
    # Review H6: the unresolved reasons are a gap the data-incomplete card names.
    assert [g.key for g in facts.gaps] == ["reasonReference"]
    assert [d.codes for d in facts.diagnoses] == [frozenset()]


# -- review findings (H1, H3, M2, M3, M8, L1) --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CAD-RADS 2.0 category 5: total occlusion", ("5", frozenset())),
        ("CAD-RADS 2.0 classification: CAD-RADS 1.", ("1", frozenset())),
        ("Per CAD-RADS 2.0, category 0.", ("0", frozenset())),
        ("CAD-RADS version 2.0 category 4A/S", ("4A", frozenset({"S"}))),
        ("CAD-RADS 2", ("2", frozenset())),
        ("CAD-RADS: no significant stenosis", None),
        ("Reported using CAD-RADS 2.0.", None),
    ],
)
def test_cad_rads_version_is_not_a_category(
    text: str, expected: tuple[str, frozenset[str]] | None
) -> None:
    """Review H1: "2.0" is the version; "no significant" is not category N."""
    assert parse_cad_rads(text) == expected


def test_calcium_percentile_and_plaque_percent_are_not_stenosis(data: RuleData) -> None:
    """Review M8: only a plausible stenosis % counts; vessel-named results still do."""
    percentile = observation(
        "pct", code={"text": "Coronary calcium score percentile (MESA)"}, **percent(95)
    )
    plaque = observation(
        "pav",
        code={"coding": [{"system": "urn:x", "code": "1", "display": "Plaque burden"}]},
        **percent(88),
    )
    vessel = observation("lad", code={"text": "LAD"}, **percent(55))
    ccta = bundle(report(results=["pct", "pav", "lad"]), percentile, plaque, vessel)
    (reading,) = make_facts(data, cctaReports=ccta).cctas
    assert reading.max_stenosis_percent == 55
    only_percentile = bundle(report(results=["pct"]), percentile)
    (reading,) = make_facts(data, cctaReports=only_percentile).cctas
    assert reading.max_stenosis_percent is None and reading.stenosis_range is None


@pytest.mark.parametrize(
    "value",
    [
        {
            "valueRange": {
                "low": {"value": 50, "unit": "%", "system": UCUM, "code": "%"},
                "high": {"value": 69, "unit": "%", "system": UCUM, "code": "%"},
            }
        },
        {"valueString": "50-69%"},
        {"valueCodeableConcept": {"text": "Moderate stenosis (50 to 69 %)"}},
    ],
)
def test_stenosis_reported_as_a_range(data: RuleData, value: dict[str, Any]) -> None:
    """Review M2: a range is read as a range, not as "undocumented"."""
    ccta = bundle(report(results=["s"]), observation("s", code={"text": "Max stenosis"}, **value))
    (reading,) = make_facts(data, cctaReports=ccta).cctas
    assert reading.max_stenosis_percent is None
    assert reading.stenosis_range == (50.0, 69.0) and reading.stenosis_range_measured


def test_percent_text_needs_a_stenosis_name(data: RuleData) -> None:
    unnamed = observation("x", code={"text": "Comment"}, valueString="seen in 70% of slices")
    named_in_text = observation("y", code={"text": "Comment"}, valueString="LAD stenosis 70 %")
    (reading,) = make_facts(data, cctaReports=bundle(report(results=["x"]), unnamed)).cctas
    assert reading.max_stenosis_percent is None
    (reading,) = make_facts(data, cctaReports=bundle(report(results=["y"]), named_in_text)).cctas
    assert reading.max_stenosis_percent == 70


def test_point_percent_wins_unless_a_range_is_worse(data: RuleData) -> None:
    low_point = observation("a", code={"text": "RCA stenosis"}, **percent(40))
    worse_range = observation("b", code={"text": "LAD stenosis"}, valueString="70-99%")
    ccta = bundle(report(results=["a", "b"]), low_point, worse_range)
    (reading,) = make_facts(data, cctaReports=ccta).cctas
    assert (reading.max_stenosis_percent, reading.stenosis_range) == (None, (70.0, 99.0))
    high_point = observation("a", code={"text": "RCA stenosis"}, **percent(80))
    ccta = bundle(report(results=["a", "b"]), high_point, worse_range)
    (reading,) = make_facts(data, cctaReports=ccta).cctas
    assert (reading.max_stenosis_percent, reading.stenosis_range) == (80.0, None)


def test_resolved_conditions_are_kept_as_inactive_history(data: RuleData) -> None:
    """Review M3: a resolved acute MI still counts inside its window."""
    conditions = bundle(
        condition("mi", "I21.4", clinicalStatus=status("resolved"), onsetDateTime="2026-11-08"),
        condition("err", "I21.4", verificationStatus=status("entered-in-error", "ver")),
    )
    facts = make_facts(data, conditions=conditions)
    assert facts.diagnoses == ()
    (mi,) = facts.inactive_diagnoses
    assert (mi.ref, mi.onset) == ("Condition/mi", date(2026, 11, 8))


def test_icd10_without_system_or_dot_in_a_reason(data: RuleData) -> None:
    """Review L1: "R079" with no system is ICD-10-CM where a diagnosis belongs."""
    order = ffrct_order(reasonCode=[{"coding": [{"code": "R079"}], "text": "chest pain"}])
    conditions = bundle(condition("c", "I2089", system=""))
    del conditions["entry"][0]["resource"]["code"]["coding"][0]["system"]
    facts = make_facts(data, [order], conditions=conditions)
    assert Code("icd10cm", "R079") in facts.draft_orders[0].reason_codes
    assert not facts.draft_orders[0].reasons_uncoded
    assert facts.diagnoses[0].codes == {Code("icd10cm", "I2089")}


def test_text_only_reason_is_unreadable_not_absent(data: RuleData) -> None:
    """Review L1: a reason given only as text is a gap, not "no reason"."""
    text_only = ffrct_order(reasonCode=[{"text": "Chest pain on exertion"}])
    facts = make_facts(data, [text_only])
    assert facts.draft_orders[0].reasons_uncoded
    assert [g.key for g in facts.gaps] == ["reasonText"]
    local = ffrct_order(reasonCode=[{"coding": [{"system": "urn:local:dx", "code": "CP-17"}]}])
    assert make_facts(data, [local]).draft_orders[0].reasons_uncoded
    coded = ffrct_order(reasonCode=[{"coding": [{"system": ICD, "code": "R07.9"}], "text": "CP"}])
    facts = make_facts(data, [coded])
    assert not facts.draft_orders[0].reasons_uncoded and facts.gaps == ()


def test_cpt_code_under_the_hcpcs_system_is_cpt(data: RuleData) -> None:
    """Review L1: CPT is HCPCS Level I; a Level II code (letter first) stays HCPCS."""
    hcpcs = "urn:oid:2.16.840.1.113883.6.285"
    ffr = ffrct_order(code={"coding": [{"system": hcpcs, "code": "75580"}]})
    cac = {**ffrct_order(), "id": "cac-1", "code": {"coding": [{"system": hcpcs, "code": "S8092"}]}}
    drafts = make_facts(data, [ffr, cac]).draft_orders
    assert drafts[0].codes == {Code("cpt", "75580")}
    assert drafts[1].codes == {Code("hcpcs", "S8092")}


def test_links_to_studies_not_received_are_a_gap(data: RuleData) -> None:
    """Review H3: a link the service can check is not a gap; one it cannot see is."""
    echo = {
        "resourceType": "ImagingStudy",
        "id": "echo-1",
        "status": "available",
        "subject": {"reference": "Patient/p1"},
        "procedureCode": [{"coding": [{"system": LOINC, "code": "34552-0"}]}],
    }
    seen = ffrct_order(supportingInfo=[{"reference": "ImagingStudy/echo-1"}])
    facts = make_facts(data, [seen], imagingStudies=bundle(echo))
    assert facts.on_file_refs == {"ImagingStudy/echo-1"} and facts.gaps == ()
    unseen = ffrct_order(supportingInfo=[{"reference": "DiagnosticReport/outside"}])
    facts = make_facts(data, [unseen], imagingStudies=bundle(echo))
    assert [g.key for g in facts.gaps] == ["linkedStudies"]
