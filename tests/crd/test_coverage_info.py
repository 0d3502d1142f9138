"""Da Vinci CRD coverage information: values per rules.md §5, invariants, whole-order update."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import date
from typing import Any

import pytest
from fhir.resources.R4B.servicerequest import ServiceRequest

from service.cdshooks.hooks import HOOKS
from service.crd.assessment import CoverageAssessment, assess_coverage
from service.crd.extension import COVERAGE_INFO_URL, coverage_actions
from service.facts.ccta import with_ccta_targets
from service.facts.model import CoverageFacts, Facts, Order, PayerKind, PerformedStudy
from service.fhir.gaps import DataGap
from service.knowledge.catalogue import RuleData, load_rule_data
from service.knowledge.vocabulary import Code
from service.rules.engine import evaluate
from service.rules.findings import Finding
from tests.support.fhir_json import service_request

DOS = date(2026, 12, 1)
CAC = Code("cpt", "75571")
FFRCT = Code("cpt", "75580")
CCTA = Code("cpt", "75574")

RULE_DATA = load_rule_data()


@pytest.fixture(scope="module")
def data() -> RuleData:
    return RULE_DATA  # loaded once for the module (the facts helpers use it too)


def order(ref: str, code: Code, **kw: Any) -> Order:
    return Order(
        ref=ref,
        codes=frozenset({code}),
        reason_codes=frozenset(kw.pop("reasons", ())),
        status="draft",
        origin="draft",
        service_date=kw.pop("service_date", DOS),
        **kw,
    )


def facts(kind: PayerKind | None, profile: str | None, *orders: Order, **kw: Any) -> Facts:
    cov = (
        CoverageFacts("Coverage/c1", kind, profile, None, kw.pop("state", None), "test")
        if kind
        else None
    )
    return with_ccta_targets(
        Facts(
            today=DOS,
            patient_ref="Patient/p1",
            patient_state=cov.state if cov else None,
            draft_orders=orders,
            coverage=cov,
            **kw,
        ),
        RULE_DATA,
    )


def assess(
    f: Facts, data: RuleData, extra: tuple[Finding, ...] = (), hook: str = "order-sign"
) -> dict[str, CoverageAssessment]:
    # FFR-CT findings come only from `extra`: the tests say which criterion is missing.
    findings = [*(x for x in evaluate(f, data) if not x.topic.startswith("ffrct-")), *extra]
    return {a.order_ref: a for a in assess_coverage(f, findings, data, hook=HOOKS[hook])}


def test_cac_original_medicare_is_not_covered(data: RuleData) -> None:
    a = assess(facts("original-medicare", "original-medicare", order("SR/cac", CAC)), data)
    got = a["SR/cac"]
    assert got.covered == "not-covered"
    assert got.pa_needed is None  # q2
    assert got.billing_codes == (CAC,)
    assert "ABN" in got.reasons[0]


def test_ffrct_documented_medicare_is_covered_no_auth_with_same_day_ccta(data: RuleData) -> None:
    f = facts(
        "original-medicare",
        "original-medicare",
        order("SR/ffr", FFRCT),
        order("SR/ccta", CCTA),
    )
    got = assess(f, data)["SR/ffr"]
    assert (got.covered, got.pa_needed) == ("covered", "no-auth")
    assert got.billing_codes == (FFRCT, CCTA)
    assert got.doc_needed == () and got.info_needed == ()
    assert "SR/ccta" not in assess(f, data)  # the CCTA itself is not in scope


def test_ffrct_ccta_on_another_day_or_already_performed(data: RuleData) -> None:
    other_day = facts(
        "original-medicare",
        "original-medicare",
        order("SR/ffr", FFRCT),
        order("SR/ccta", CCTA, service_date=date(2026, 11, 30)),
    )
    assert assess(other_day, data)["SR/ffr"].billing_codes == (FFRCT,)
    performed = replace(
        other_day,
        draft_orders=other_day.draft_orders[:1],
        performed=(
            PerformedStudy("Procedure/p", "procedure", frozenset({CCTA}), "completed", DOS),
        ),
    )
    assert assess(performed, data)["SR/ffr"].billing_codes == (FFRCT, CCTA)


def test_ffrct_missing_criterion_is_conditional_with_doc_needed(data: RuleData) -> None:
    f = facts("original-medicare", "original-medicare", order("SR/ffr", FFRCT))
    missing = Finding(topic="ffrct-symptoms-missing", order_refs=("SR/ffr",))
    got = assess(f, data, (missing,))["SR/ffr"]
    assert got.covered == "conditional"
    assert got.doc_needed == ("clinical",)
    assert got.doc_purpose == ("withorder",)
    assert got.info_needed == ("OTH",)
    assert "cardiac symptom" in got.reasons[0]
    info_only = Finding(topic="ffrct-bmi-missing", order_refs=("SR/ffr",))
    assert assess(f, data, (info_only,))["SR/ffr"].covered == "covered"


def test_order_select_never_asks_for_documentation(data: RuleData) -> None:
    f = facts("original-medicare", "original-medicare", order("SR/ffr", FFRCT))
    missing = Finding(topic="ffrct-symptoms-missing", order_refs=("SR/ffr",))
    got = assess(f, data, (missing,), hook="order-select")["SR/ffr"]
    assert got.covered == "conditional"
    assert got.doc_needed == () and got.doc_purpose == ()
    assert got.info_needed == ("OTH",) and got.reasons


def test_medicare_advantage_cac(data: RuleData) -> None:
    got = assess(facts("medicare-advantage", "medicare-advantage", order("SR/c", CAC)), data)
    assert got["SR/c"].covered == "conditional"
    assert got["SR/c"].info_needed == ("OTH",)
    assert "supplemental benefit" in got["SR/c"].reasons[0]


@pytest.mark.parametrize(
    ("state", "pa_needed"), [("WI", "auth-needed"), (None, "conditional"), ("MN", None)]
)
def test_prior_auth_values(data: RuleData, state: str | None, pa_needed: str | None) -> None:
    cac_order = order("SR/c", CAC, reasons=(Code("icd10cm", "E785"),))
    got = assess(facts("commercial", "anthem-aim", cac_order, state=state), data)["SR/c"]
    assert got.covered == "conditional"
    assert got.pa_needed == pa_needed
    assert got.info_needed == ("OTH",)  # conditional coverage (medical policy)


def test_evicore_ffrct_auth_needed(data: RuleData) -> None:
    got = assess(facts("commercial", "evicore-delegated", order("SR/f", FFRCT)), data)["SR/f"]
    assert (got.covered, got.pa_needed) == ("conditional", "auth-needed")


def test_screening_denial_is_not_covered_without_pa(data: RuleData) -> None:
    cac_order = order("SR/c", CAC, reasons=(Code("icd10cm", "Z136"),))
    got = assess(facts("commercial", "horizon-bcbs-nj", cac_order), data)["SR/c"]
    assert got.covered == "not-covered" and got.pa_needed is None


def test_no_coverage_no_assessment(data: RuleData) -> None:
    assert assess(facts(None, None, order("SR/c", CAC)), data) == {}


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"covered": "not-covered", "pa_needed": "auth-needed"}, "q2"),
        ({"covered": "conditional"}, "q3"),
        ({"covered": "covered", "pa_needed": "conditional"}, "q3"),
        ({"covered": "covered", "info_needed": ("OTH",)}, "q6"),
        ({"covered": "covered", "reasons": (" ",)}, "q7"),
        (
            {"covered": "covered", "doc_needed": ("clinical",), "doc_purpose": ("withorder",)},
            "q8",
        ),
        (
            {
                "covered": "covered",
                "pa_needed": "satisfied",
                "doc_needed": ("admin",),
                "doc_purpose": ("withpa",),
                "reasons": ("r",),
            },
            "q4",
        ),
    ],
)
def test_invariants_are_enforced(kwargs: dict[str, Any], rule: str) -> None:
    with pytest.raises(ValueError, match=rule):
        CoverageAssessment(order_ref="SR/x", coverage_ref="Coverage/c", **kwargs)


def draft(order_id: str, cpt: str, **extra: Any) -> dict[str, Any]:
    return {**service_request(order_id, cpt, patient="p1"), **extra}


def test_rendered_update_is_the_whole_order_plus_the_extension(data: RuleData) -> None:
    other_payer = {
        "url": COVERAGE_INFO_URL,
        "extension": [{"url": "coverage", "valueReference": {"reference": "Coverage/other"}}],
    }
    stale = {
        "url": COVERAGE_INFO_URL,
        "extension": [{"url": "coverage", "valueReference": {"reference": "Coverage/c1"}}],
    }
    raw = draft(
        "ffr",
        "75580",
        note=[{"text": "keep me"}],
        extension=[other_payer, stale, {"url": "http://example.org/x", "valueString": "y"}],
    )
    f = facts("original-medicare", "original-medicare", order("ServiceRequest/ffr", FFRCT))
    ids = (f"id-{i}" for i in itertools.count())
    actions, assertion_ids = coverage_actions(
        assess_coverage(f, [], data, hook=HOOKS["order-sign"]),
        {"ServiceRequest/ffr": raw},
        {"ServiceRequest/ffr": "FFR-CT"},
        data,
        today=DOS,
        new_uuid=lambda: next(ids),
    )
    assert assertion_ids == ["id-0"]
    action = actions[0].wire()
    assert action["type"] == "update"
    assert action["description"] == "Coverage information for FFR-CT: covered"
    resource = action["resource"]
    ServiceRequest.model_validate(resource)  # still valid R4
    assert {k: v for k, v in resource.items() if k != "extension"} == {
        k: v for k, v in raw.items() if k != "extension"
    }
    assert raw["extension"][1] is stale  # the input is not modified
    urls = [e["url"] for e in resource["extension"]]
    assert urls == [COVERAGE_INFO_URL, "http://example.org/x", COVERAGE_INFO_URL]
    ours = resource["extension"][-1]["extension"]
    assert [p["url"] for p in ours] == [
        "coverage",
        "covered",
        "pa-needed",
        "billingCode",
        "date",
        "coverage-assertion-id",
    ]
    assert ours[0] == {"url": "coverage", "valueReference": {"reference": "Coverage/c1"}}
    assert ours[3]["valueCoding"] == {"system": "http://www.ama-assn.org/go/cpt", "code": "75580"}
    assert ours[4] == {"url": "date", "valueDate": "2026-12-01"}
    assert ours[5] == {"url": "coverage-assertion-id", "valueString": "id-0"}


def test_rendered_conditional_has_text_reasons(data: RuleData) -> None:
    f = facts("medicare-advantage", "medicare-advantage", order("ServiceRequest/c", CAC))
    actions, _ = coverage_actions(
        assess_coverage(f, [], data, hook=HOOKS["order-sign"]),
        {"ServiceRequest/c": draft("c", "75571")},
        {},
        data,
        today=DOS,
        new_uuid=lambda: "only-id",
    )
    ext = actions[0].wire()["resource"]["extension"][0]["extension"]
    by_url = {p["url"]: p for p in ext}
    assert by_url["covered"]["valueCode"] == "conditional"
    assert by_url["info-needed"]["valueCode"] == "OTH"
    assert set(by_url["reason"]["valueCodeableConcept"]) == {"text"}
    ServiceRequest.model_validate(actions[0].wire()["resource"])


def test_not_covered_says_nothing_about_prior_auth(tmp_path: Any) -> None:
    (tmp_path / "site.yaml").write_text(
        """
payers:
  - id: strict-plan
    name: Strict Plan
    kind: commercial
    match: {names: ["Strict Plan"]}
    policies:
      cac: {position: conditional, screening_denied: true, prior_auth: true}
    sources: [{document: "Strict Plan policy", effective: 2026-01-01}]
""",
        encoding="utf-8",
    )
    site = load_rule_data(tmp_path)
    cac_order = order("SR/c", CAC, reasons=(Code("icd10cm", "Z136"),))
    got = assess(facts("commercial", "strict-plan", cac_order), site)["SR/c"]
    assert got.covered == "not-covered"
    assert got.pa_needed is None
    assert not any("authorization" in r for r in got.reasons)


def test_covered_is_not_asserted_when_checks_were_skipped(data: RuleData) -> None:
    gap = DataGap("conditions", "FHIR server answered 503")
    f = facts("original-medicare", "original-medicare", order("SR/ffr", FFRCT), gaps=(gap,))
    got = assess(f, data)["SR/ffr"]
    assert got.covered == "conditional"
    assert got.pa_needed == "no-auth"
    assert got.info_needed == ("OTH",)
    assert "conditions" in got.reasons[0]


# -- FFR-CT findings mapped by meaning (review M1, M2; rules.md §5; docs/design.md) --------------


# What the rules put in these findings' details (the coverage reason names it).
FINDING_DETAILS = {"ffrct-excluded-history": {"history": "a coronary stent (PCI)"}}


def ffr_assessment(
    data: RuleData, kind: PayerKind, profile: str | None, *topics: str
) -> CoverageAssessment:
    f = facts(kind, profile, order("SR/ffr", FFRCT))
    found = tuple(
        Finding(topic=t, order_refs=("SR/ffr",), details=FINDING_DETAILS.get(t, {})) for t in topics
    )
    return assess(f, data, found)["SR/ffr"]


@pytest.mark.parametrize(
    "topic",
    [
        "ffrct-symptoms-missing",
        "ffrct-ccta-missing",
        "ffrct-screening-use",
        "ffrct-stenosis-undocumented",  # M2: info card, but the LCD criterion is unchecked
    ],
)
def test_ffrct_missing_documentation_asks_for_it(data: RuleData, topic: str) -> None:
    got = ffr_assessment(data, "original-medicare", "original-medicare", topic)
    assert (got.covered, got.doc_needed, got.info_needed) == (
        "conditional",
        ("clinical",),
        ("OTH",),
    )
    assert "not documented" in got.reasons[0]


def test_ffrct_duplicate_is_not_covered_and_documentation_cannot_fix_it(data: RuleData) -> None:
    got = ffr_assessment(
        data, "original-medicare", "original-medicare", "ffrct-duplicate", "ffrct-symptoms-missing"
    )
    assert (got.covered, got.doc_needed, got.pa_needed) == ("not-covered", (), None)
    assert got.reasons == (
        "FFR-CT is paid once per CCTA: an FFR-CT for this CCTA is already on file or ordered",
    )


@pytest.mark.parametrize("topic", ["ffrct-excluded-history", "ffrct-stenosis-out-of-range"])
def test_ffrct_lcd_limitation_is_not_covered_for_medicare(data: RuleData, topic: str) -> None:
    for kind in ("original-medicare", "medicare-advantage"):
        got = ffr_assessment(data, kind, kind, topic)  # type: ignore[arg-type]
        assert (got.covered, got.doc_needed) == ("not-covered", ())
        assert "LCD" in got.reasons[0]
        if topic == "ffrct-excluded-history":
            assert "the record shows a coronary stent (PCI)" in got.reasons[0]
        # ABNs are for Original Medicare only (never Medicare Advantage).
        assert any("ABN" in r for r in got.reasons) is (kind == "original-medicare")


@pytest.mark.parametrize("topic", ["ffrct-excluded-history", "ffrct-stenosis-out-of-range"])
def test_ffrct_lcd_limitation_is_conditional_for_other_payers(data: RuleData, topic: str) -> None:
    got = ffr_assessment(data, "commercial", "bcbs-kansas", topic)
    assert (got.covered, got.doc_needed, got.info_needed) == ("conditional", (), ("OTH",))
    assert any("Check the payer's FFR-CT policy" in r for r in got.reasons)


def test_ffrct_legacy_code_is_a_coding_fix_not_a_documentation_gap(data: RuleData) -> None:
    got = ffr_assessment(data, "original-medicare", "original-medicare", "ffrct-legacy-code")
    assert (got.covered, got.pa_needed, got.doc_needed) == ("covered", "no-auth", ())
    assert got.billing_codes == (FFRCT,)
    assert "Bill CPT 75580" in got.reasons[0]


# -- calcium score: the answer follows the other findings (review M6) ---------------------------


def test_cac_bundled_with_a_same_day_ccta_is_not_covered(data: RuleData) -> None:
    f = facts(
        "commercial",
        "bcbs-kansas",
        order("SR/cac", CAC, reasons=(Code("icd10cm", "E785"),)),
        order("SR/ccta", CCTA),
    )
    got = assess(f, data)["SR/cac"]
    assert (got.covered, got.pa_needed) == ("not-covered", None)
    assert "bundled into CPT 75574" in got.reasons[0]


def test_cac_without_payer_policy_still_asks_for_the_risk_factor(data: RuleData) -> None:
    got = assess(facts("commercial", "commercial-other", order("SR/cac", CAC)), data)["SR/cac"]
    assert (got.covered, got.doc_needed) == ("conditional", ("clinical",))
    assert any("cardiovascular risk factor" in r for r in got.reasons)


def test_undetermined_primary_is_conditional_with_a_reason(data: RuleData) -> None:
    """M4: two coverages with no order: neither the ABN nor 'covered' is asserted."""
    for code in (CAC, FFRCT):
        got = assess(facts("undetermined", None, order("SR/x", code)), data)["SR/x"]
        assert (got.covered, got.info_needed) == ("conditional", ("OTH",))
        assert "confirm which plan is primary" in got.reasons[0]


def test_a_reason_placeholder_the_finding_lacks_never_fails_the_call(
    data: RuleData, caplog: pytest.LogCaptureFixture
) -> None:
    """A finding without the detail its coverage reason names (a site overlay's wording, a
    rule that changed): the rule's title stands in and the log says so, no exception."""
    f = facts("original-medicare", "original-medicare", order("SR/ffr", FFRCT))
    bare = Finding(topic="ffrct-excluded-history", order_refs=("SR/ffr",))
    got = assess(f, data, (bare,))["SR/ffr"]
    assert got.covered == "not-covered"
    title = data.rules["ffrct-excluded-history"].title
    assert got.reasons[0] == f"Not covered under the Medicare FFR-CT LCD: {title}"
    assert "cannot be filled" in caplog.text


def test_a_finding_counts_only_for_the_order_it_is_about(data: RuleData) -> None:
    """A bundling conflict names the calcium score first and the same-day CCTA second: the
    CCTA's own coverage answer is not 'remove this order'."""
    cac = order("SR/cac", CAC)
    ffr = order("SR/ffr", FFRCT)
    conflict = Finding(
        topic="cac-bundling-conflict",
        order_refs=("SR/cac", "SR/ffr"),
        details={"conflict_code": "75574"},
    )
    got = assess(facts("commercial", "bcbs-kansas", cac, ffr), data, (conflict,))
    assert got["SR/cac"].covered == "not-covered"
    assert not any("bundled" in r for r in got["SR/ffr"].reasons)
