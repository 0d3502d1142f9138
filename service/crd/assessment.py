"""Da Vinci CRD coverage information: what the payer would say about each in-scope order.

Contract: shared/reference/rules.md §5; CRD STU2 `ext-coverage-information`
(https://hl7.org/fhir/us/davinci-crd/STU2.1/StructureDefinition-ext-coverage-information.html).
What a finding means for coverage is data: each topic's `coverage` entry in rules.yaml (an
effect and the reason the payer answer gives), never the card's indicator. The assessment is a
plain value per order; service.crd.extension turns it into the `systemActions` update. Its
invariants (q1-q9 that apply) are enforced on construction, so an inconsistent assessment is a
bug that fails loudly in tests, never a bad payload.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from service.cdshooks.hooks import HookSpec
from service.facts.model import Facts, Order
from service.knowledge.catalogue import CoverageEffectKind, FamilyPolicy, RuleData
from service.knowledge.vocabulary import Code
from service.rules.findings import Finding
from service.rules.payers import in_scope_orders, payer_kind, payer_policy, prior_auth_applies

log = logging.getLogger(__name__)

Covered = Literal["covered", "not-covered", "conditional"]
PaNeeded = Literal["no-auth", "auth-needed", "satisfied", "performpa", "conditional"]
# Gaps that do not silence a coverage criterion of a "covered" answer: the Medicare plan type
# only matters for the calcium-score ABN, an undetermined primary is answered on its own, and
# an unreachable fhirServer is reported per key too.
NOT_CLINICAL_GAPS = frozenset({"coverage-type", "coverage-primary", "fhirServer"})
MEDICARE_LCD_KINDS = frozenset({"original-medicare", "medicare-advantage"})


@dataclass(frozen=True)
class CoverageAssessment:
    """The values of one `ext-coverage-information` for one order (CRD STU2)."""

    order_ref: str
    coverage_ref: str
    covered: Covered
    pa_needed: PaNeeded | None = None
    doc_needed: tuple[str, ...] = ()
    doc_purpose: tuple[str, ...] = ()
    info_needed: tuple[str, ...] = ()
    billing_codes: tuple[Code, ...] = ()
    reasons: tuple[str, ...] = ()  # plain text: none of our reasons is in the CRD value set

    def __post_init__(self) -> None:
        problems = invariant_problems(self)
        if problems:
            raise ValueError(f"coverage information for {self.order_ref}: {'; '.join(problems)}")


def invariant_problems(a: CoverageAssessment) -> list[str]:
    """The CRD invariants that apply to what we send (q1, q5 concern fields we never set)."""
    problems = []
    if a.covered == "not-covered" and a.pa_needed is not None:
        problems.append("q2: not-covered must not carry pa-needed")
    conditional = "conditional" in (a.covered, a.pa_needed, *a.doc_needed)
    if conditional and not a.info_needed:
        problems.append("q3: a conditional answer needs info-needed")
    if a.pa_needed == "satisfied" and "withpa" in a.doc_purpose:
        problems.append("q4: pa satisfied excludes doc-purpose withpa")
    if "OTH" in a.info_needed and not a.reasons:
        problems.append("q6: info-needed OTH needs a reason")
    if any(not r.strip() for r in a.reasons):
        problems.append("q7: a reason outside the value set needs text")
    if a.doc_purpose and not a.reasons:
        problems.append("q8: doc-purpose needs a reason")
    if a.doc_purpose and not a.doc_needed:
        problems.append("doc-purpose without doc-needed")
    return problems


@dataclass
class _Draft:
    covered: Covered
    pa_needed: PaNeeded | None = None
    doc_needed: list[str] | None = None
    info_needed: list[str] | None = None
    reasons: list[str] | None = None

    def need_info(self, reason: str) -> None:
        self.info_needed = self.info_needed or []
        if "OTH" not in self.info_needed:
            self.info_needed.append("OTH")
        self.add_reason(reason)

    def add_reason(self, reason: str) -> None:
        self.reasons = self.reasons or []
        if reason not in self.reasons:
            self.reasons.append(reason)


@dataclass(frozen=True)
class _Effects:
    """The findings about one order (it is their first order: the one the finding is about;
    others it names are context, such as the same-day CCTA of a bundling conflict), by
    coverage effect, as the reasons the answer gives, in the order the rules ran."""

    reasons: Mapping[CoverageEffectKind, list[str]]

    @classmethod
    def of(cls, order_ref: str, found: Iterable[Finding], data: RuleData) -> _Effects:
        reasons: dict[CoverageEffectKind, list[str]] = {}
        for finding in found:
            effect = data.rules[finding.topic].coverage
            if finding.order_refs[:1] != (order_ref,) or effect.reason is None:
                continue
            text = _reason_text(effect.reason, finding, data)
            if text not in reasons.setdefault(effect.effect, []):
                reasons[effect.effect].append(text)
        return cls(reasons)

    def __getitem__(self, kind: CoverageEffectKind) -> list[str]:
        return self.reasons.get(kind, [])


def _reason_text(reason: str, finding: Finding, data: RuleData) -> str:
    """The reason filled from the finding; a placeholder the finding does not carry (a site
    overlay's wording, a rule that changed) must not fail the call: the rule's title stands
    in, and the log says which."""
    try:
        return reason.format_map(finding.details)
    except (KeyError, ValueError, IndexError) as exc:
        log.error("coverage reason of %s cannot be filled (%r)", finding.topic, exc)
        return data.rules[finding.topic].title


Assessor = Callable[[Facts, RuleData, Order, _Effects], _Draft]


def assess_coverage(
    facts: Facts, findings: Iterable[Finding], data: RuleData, *, hook: HookSpec
) -> list[CoverageAssessment]:
    """One assessment per in-scope focus order that has a Coverage (for its date) to reference.

    `findings` are all findings before configuration filtering: switching a card type off must
    not change what the payer is told.
    """
    by_order: dict[str, list[Finding]] = {}
    for finding in findings:
        for ref in finding.order_refs:
            by_order.setdefault(ref, []).append(finding)
    assessments = []
    for order, family in in_scope_orders(facts, data):
        coverage = facts.coverage_for(order)
        if coverage is None:
            continue
        assess = assessor(family)
        if coverage.payer_kind == "undetermined":
            draft = _Draft("conditional")
            draft.need_info(
                "Several coverages are in force and none is marked primary: confirm which plan "
                "is primary before scheduling"
            )
        else:
            effects = _Effects.of(order.ref, by_order.get(order.ref, []), data)
            draft = assess(facts, data, order, effects)
        unread = sorted({g.key for g in facts.gaps} - NOT_CLINICAL_GAPS)
        if draft.covered == "covered" and unread:
            # Checks were skipped for want of data: "covered" would be a guess.
            draft.covered = "conditional"
            draft.need_info(
                f"Some patient data could not be read ({', '.join(unread)}), so not every "
                "coverage criterion was checked"
            )
        if draft.covered != "not-covered":  # CRD q2: no pa-needed on a not-covered answer
            _add_prior_auth(draft, payer_policy(facts, data, order, family), facts.patient_state)
        doc_needed = tuple(draft.doc_needed or ())
        if not hook.asks_for_documentation:
            doc_needed = ()  # CRD hook-19: no documentation requests on order-select
        assessments.append(
            CoverageAssessment(
                order_ref=order.ref,
                coverage_ref=coverage.ref,
                covered=draft.covered,
                pa_needed=draft.pa_needed,
                doc_needed=doc_needed,
                doc_purpose=("withorder",) if doc_needed else (),
                info_needed=tuple(draft.info_needed or ()),
                billing_codes=billing_codes(facts, data, order, family),
                reasons=tuple(draft.reasons or ()),
            )
        )
    return assessments


def assessor(family: str) -> Assessor:
    """The coverage assessment of an order family; an unknown family is a configuration error
    (`check_assessments` runs at startup), never a silent default."""
    try:
        return ASSESSORS[family]
    except KeyError:
        raise ValueError(f"no coverage assessment for order family {family!r}") from None


def check_assessments(data: RuleData) -> None:
    """At startup: every order family has an assessment, and every topic's coverage effect is
    one the assessment of its family applies (a topic is a family's when its code starts with
    the family's name and a hyphen: `ffrct-duplicate`); a topic of no family has no effect.
    Otherwise a finding would be silently left out of the payer answer."""
    for name in data.families:
        assessor(name)
    for topic, entry in data.rules.items():
        owner = next((f for f in data.families if topic.startswith(f + "-")), None)
        handled = HANDLED_EFFECTS.get(owner, frozenset()) if owner else frozenset()
        if entry.coverage.effect not in handled | {"none"}:
            raise ValueError(
                f"rules.{topic}.coverage: effect {entry.coverage.effect!r} is not one the "
                f"{owner or 'no-family'} coverage assessment applies ({sorted(handled)})"
            )


def _policy_draft(policy: FamilyPolicy | None, what: str, *, note: bool = True) -> _Draft:
    """The payer's own position on the family, or `conditional` when none is on file."""
    if policy is None:
        draft = _Draft("conditional")
        draft.need_info(f"No {what} policy is on file for this payer: verify benefits")
        return draft
    draft = _Draft(policy.position)
    if draft.covered == "conditional" and note:
        draft.need_info(policy.note or "Coverage depends on the payer's medical policy criteria")
    return draft


def _assess_cac(facts: Facts, data: RuleData, order: Order, effects: _Effects) -> _Draft:
    kind = payer_kind(facts, order)
    if effects["not-payable"]:
        # AMA/NCCI: never paid with a same-day 75572-75574, whoever the payer is (CO-97).
        draft = _Draft("not-covered")
        for reason in effects["not-payable"]:
            draft.add_reason(reason)
        return draft
    if kind == "original-medicare":
        draft = _Draft("not-covered")
        draft.add_reason(
            "Original Medicare does not cover calcium scoring (screening; no NCD): obtain a "
            "signed ABN (CMS-R-131) before the scan"
        )
        return draft
    if kind == "medicare-advantage":
        draft = _Draft("conditional")
        draft.need_info(
            "Verify the Medicare Advantage plan's supplemental benefit for calcium scoring "
            "(Evidence of Coverage); use an organization determination, not an ABN"
        )
        return draft
    if kind == "medicare-unknown":
        draft = _Draft("conditional")
        draft.need_info(
            "The coverage does not say whether this is Original Medicare (not covered; ABN "
            "needed) or a Medicare Advantage plan (verify the supplemental benefit)"
        )
        return draft
    if effects["payer-denial"]:
        draft = _Draft("not-covered")
        for reason in effects["payer-denial"]:
            draft.add_reason(reason)
        return draft
    undocumented = effects["undocumented"]
    policy = payer_policy(facts, data, order, "cac")
    draft = _policy_draft(policy, "calcium-score", note=not undocumented)
    if undocumented:
        draft.covered = "conditional"
        draft.doc_needed = ["clinical"]
        for reason in undocumented:
            draft.need_info(reason)
    return draft


def _assess_ffrct(facts: Facts, data: RuleData, order: Order, effects: _Effects) -> _Draft:
    """Worst first: not payable, an LCD limitation under Medicare, the payer's policy, then
    what documentation could fix and what the claim must say."""
    if effects["not-payable"]:
        draft = _Draft("not-covered")
        for reason in effects["not-payable"]:
            draft.add_reason(reason)
        return draft
    kind = payer_kind(facts, order)
    limits = effects["limitation"]
    if limits and kind in MEDICARE_LCD_KINDS:
        draft = _Draft("not-covered")
        for text in limits:
            draft.add_reason(f"Not covered under the Medicare FFR-CT LCD: {text}")
        if kind == "original-medicare":
            # An LCD denial is "not reasonable and necessary": only a signed ABN shifts liability.
            draft.add_reason("To bill the patient, obtain a signed ABN (CMS-R-131) first")
        return draft
    draft = _policy_draft(payer_policy(facts, data, order, "ffrct"), "FFR-CT")
    for text in limits:
        # Not a Medicare LCD payer: its own policy decides; say what the record shows.
        draft.covered = "conditional"
        draft.need_info(f"Check the payer's FFR-CT policy: {text}")
    undocumented = effects["undocumented"]
    if undocumented:
        draft.covered = "conditional"
        draft.doc_needed = ["clinical"]
        draft.need_info(f"FFR-CT coverage criterion not documented: {'; '.join(undocumented)}")
    for reason in effects["coding"]:
        draft.add_reason(reason)
    return draft


ASSESSORS: Mapping[str, Assessor] = {"cac": _assess_cac, "ffrct": _assess_ffrct}
# The coverage effects each assessment reads (check_assessments holds the rule data to them).
HANDLED_EFFECTS: Mapping[str, frozenset[CoverageEffectKind]] = {
    "cac": frozenset({"not-payable", "payer-denial", "undocumented"}),
    "ffrct": frozenset({"not-payable", "limitation", "undocumented", "coding"}),
}


def _add_prior_auth(draft: _Draft, policy: FamilyPolicy | None, state: str | None) -> None:
    if policy is None or policy.prior_auth is None:
        return
    applies = prior_auth_applies(policy, state)
    if applies is True:
        draft.pa_needed = "auth-needed"
        reviewer = f" through {policy.prior_auth_by}" if policy.prior_auth_by else ""
        draft.add_reason(f"Prior authorization required{reviewer} before scheduling")
    elif applies is None:
        draft.pa_needed = "conditional"
        draft.need_info(
            "Prior authorization depends on the patient's state, which is not on file "
            f"(required in {', '.join(policy.prior_auth_states or [])})"
        )
    elif policy.prior_auth is False:
        draft.pa_needed = "no-auth"


def billing_codes(facts: Facts, data: RuleData, order: Order, family: str) -> tuple[Code, ...]:
    """The codes the claim must carry, from the family's data: its billing codes (75580 for an
    FFR-CT whatever code was ordered), else the order's own family code as the payer kind
    accepts it (S8092 is 75571 for Medicare: rules.md §1); plus a same-day code when an order
    or study of that code list has the same date of service (75574 with its FFR-CT)."""
    spec = data.families[family]
    if spec.billing_codes:
        codes = [Code.parse(c) for c in spec.billing_codes]
    else:
        ordered = data.family_codes(family, order.codes)[:1]
        codes = [data.billed_as(code, payer_kind(facts, order))[0] for code in ordered]
    for list_name, code in spec.same_day_billing.items():
        same_day = data.codes(list_name)
        same_day_order = any(
            other.ref != order.ref
            and other.service_date == order.service_date
            and same_day.any_in(other.codes)
            for other in (*facts.draft_orders, *facts.existing_orders)
        )
        same_day_study = any(
            study.performed == order.service_date and same_day.any_in(study.codes)
            for study in facts.performed
        )
        if same_day_order or same_day_study:
            codes.append(Code.parse(code))
    return tuple(codes)
