"""Payer rules (prior auth, missing coverage, cost) and the Da Vinci CRD coverage assessment.

Contract: shared/reference/rules.md §3-5; CRD STU2 `ext-coverage-information`
(https://hl7.org/fhir/us/davinci-crd/STU2.1/StructureDefinition-ext-coverage-information.html).
The assessment is a plain value per in-scope order; service/render/coverage_info.py turns it into
the `systemActions` update. Its invariants (q1-q9 that apply) are enforced on construction, so
an inconsistent assessment is a bug that fails loudly in tests, never a bad payload.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from service.cdshooks.hooks import hook_spec
from service.facts.model import Facts, Order
from service.knowledge.catalogue import CODE_FAMILY_LISTS, FamilyPolicy, PayerRow, RuleData
from service.knowledge.vocabulary import Code
from service.rules.findings import Finding

Covered = Literal["covered", "not-covered", "conditional"]
PaNeeded = Literal["no-auth", "auth-needed", "satisfied", "performpa", "conditional"]
FAMILY_LABELS = {"cac": "calcium score", "ffrct": "FFR-CT"}  # mid-sentence
FAMILY_TITLES = {"cac": "Calcium score", "ffrct": "FFR-CT"}  # at the start of an order label
# Gaps that do not silence a coverage criterion of a "covered" answer: the Medicare plan type
# only matters for the calcium-score ABN, an undetermined primary is answered on its own, and
# an unreachable fhirServer is reported per key too.
NOT_CLINICAL_GAPS = frozenset({"coverage-type", "coverage-primary", "fhirServer"})
MEDICARE_LCD_KINDS = frozenset({"original-medicare", "medicare-advantage"})

# What each FFR-CT finding means for coverage (rules.md §5; CRD invariants, davinci-crd.md
# §1.2; docs/design.md "CRD coverage information"). Documentation can fix a MISSING criterion
# (conditional + doc-needed); it cannot fix a duplicate (billed once per CCTA) or an LCD
# limitation the record shows (stent, bypass, recent MI, stenosis outside the range). A legacy
# code is a coding fix: the claim carries 75580 (billingCode) whatever the order says.
FFRCT_UNDOCUMENTED = {
    "ffrct-symptoms-missing": "no stable cardiac symptom is documented",
    "ffrct-screening-use": "the stated reason is screening; FFR-CT is for symptomatic patients",
    "ffrct-ccta-missing": "no CCTA is on file or ordered",
    "ffrct-stenosis-undocumented": (
        "the CCTA's percent stenosis is not documented, so the stenosis criterion is unchecked"
    ),
}
FFRCT_LIMITATIONS = {
    "ffrct-excluded-history": "the record shows {history} (LCD limitation)",  # from the finding
    "ffrct-stenosis-out-of-range": "the CCTA's stenosis is outside the covered range",
}
FFRCT_DUPLICATE = "ffrct-duplicate"
FFRCT_NOT_COVERAGE = frozenset({"ffrct-legacy-code", "ffrct-bmi-missing"})


# -- shared helpers (also used by service.rules.cac) -------------------------------------------


def family_of(order: Order, data: RuleData) -> str | None:
    """The code family a payer policy is written for: "cac", "ffrct" or None (not in scope)."""
    for family, lists in CODE_FAMILY_LISTS.items():
        if any(data.codes(name).any_in(order.codes) for name in lists):
            return family
    return None


def in_scope_orders(facts: Facts, data: RuleData) -> list[tuple[Order, str]]:
    found = []
    for order in facts.focus_orders:
        family = family_of(order, data)
        if family is not None:
            found.append((order, family))
    return found


def payer_row(facts: Facts, data: RuleData, order: Order) -> PayerRow | None:
    """The payer directory row of the primary coverage on the order's date of service."""
    coverage = facts.coverage_for(order)
    profile = coverage.payer_profile if coverage else None
    return data.payer(profile) if profile else None


def payer_policy(facts: Facts, data: RuleData, order: Order, family: str) -> FamilyPolicy | None:
    row = payer_row(facts, data, order)
    return row.policy(family) if row else None


def payer_kind(facts: Facts, order: Order) -> str | None:
    coverage = facts.coverage_for(order)
    return coverage.payer_kind if coverage else None


def payer_label(facts: Facts, data: RuleData, order: Order) -> str:
    """The payer as the coverage names it ("Humana Gold Plus HMO"), else the directory row."""
    row = payer_row(facts, data, order)
    coverage = facts.coverage_for(order)
    if coverage and coverage.payer_name:
        return coverage.payer_name
    return row.name if row else "the patient's plan"


def policy_owner(facts: Facts, data: RuleData, order: Order) -> str:
    """Whose policy a card cites: the directory row with the policy (the payor display may be
    an employer trust or a TPA), else the payer as the coverage names it."""
    row = payer_row(facts, data, order)
    return row.name if row is not None and row.policies else payer_label(facts, data, order)


def order_label(order: Order, data: RuleData) -> str:
    """How card text names an order: a short label a clinician reads at a glance ("FFR-CT
    (75580)", "Calcium score (S8092)"), never the long CPT descriptor, never a bare id."""
    family = family_of(order, data)
    if family is not None:
        codes = [
            c
            for name in CODE_FAMILY_LISTS[family]
            for c in data.codes(name).matches(sorted(order.codes))
        ]
        return f"{FAMILY_TITLES[family]} ({codes[0].code})"
    billing = sorted(c for c in order.codes if c.system in {"cpt", "hcpcs"})
    if billing:
        return f"the {billing[0].system.upper()} {billing[0].code} order"
    return order.display or order.ref


def prior_auth_applies(policy: FamilyPolicy | None, state: str | None) -> bool | None:
    """True/False when known; None when the policy depends on a state we do not know."""
    if policy is None or policy.prior_auth is not True:
        return False
    if policy.prior_auth_states is None:
        return True
    if state is None:
        return None
    return state in policy.prior_auth_states


def money(amount: float) -> str:
    return f"${amount:,.2f}".replace(".00", "")


def cost_text(policy: FamilyPolicy) -> str | None:
    cost = policy.cost
    if cost is None:
        return None
    parts = []
    if cost.expected_payment is not None:
        parts.append(f"expected payment {money(cost.expected_payment)}")
    if cost.minimum_copayment is not None:
        parts.append(f"minimum patient co-payment {money(cost.minimum_copayment)}")
    if cost.self_pay_low is not None and cost.self_pay_high is not None:
        parts.append(
            f"patient self-pay typically {money(cost.self_pay_low)}-{money(cost.self_pay_high)}"
        )
    return "; ".join(parts) if parts else None


# -- rules -----------------------------------------------------------------------------------


def prior_auth_required(facts: Facts, data: RuleData) -> Iterator[Finding]:
    """The payer (or its profile) requires prior auth for the order's code family.

    A state-limited policy (Anthem/AIM: Wisconsin) fires only when the patient's home state is
    known and listed; with no state on file the card is not shown (the CRD coverage information
    says `pa-needed=conditional` instead).
    """
    for order, family in in_scope_orders(facts, data):
        policy = payer_policy(facts, data, order, family)
        if prior_auth_applies(policy, facts.patient_state) is not True or policy is None:
            continue
        yield Finding(
            topic="prior-auth-required",
            order_refs=(order.ref,),
            details={
                "order": order_label(order, data),
                "payer": policy_owner(facts, data, order),
                "reviewer": policy.prior_auth_by or policy_owner(facts, data, order),
                "family": FAMILY_LABELS[family],
            },
        )


def coverage_missing(facts: Facts, data: RuleData) -> Iterator[Finding]:
    """Coverage data was obtained and no active Coverage covers an order's date of service.

    When the coverage data could not be obtained (`coverage_known` is False) the data-incomplete
    card speaks instead; orders outside this service's scope never trigger it.
    """
    if not facts.coverage_known:
        return
    orders = [(o, f) for o, f in in_scope_orders(facts, data) if facts.coverage_for(o) is None]
    if not orders:
        return
    yield Finding(
        topic="coverage-missing",
        order_refs=tuple(o.ref for o, _ in orders),
        details={"orders": ", ".join(order_label(o, data) for o, _ in orders)},
    )


def cost_estimate(facts: Facts, data: RuleData) -> Iterator[Finding]:
    """Expected payment / patient share when the payer row carries figures (option `cost`)."""
    for order, family in in_scope_orders(facts, data):
        policy = payer_policy(facts, data, order, family)
        text = cost_text(policy) if policy else None
        if policy is None or policy.cost is None or text is None:
            continue
        yield Finding(
            topic="cost-estimate",
            order_refs=(order.ref,),
            details={
                "order": order_label(order, data),
                "payer": payer_label(facts, data, order),
                "estimate": text,
                "basis": policy.cost.basis,
            },
        )


# -- CRD coverage assessment -----------------------------------------------------------------


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


def assess_coverage(
    facts: Facts,
    findings: Iterable[Finding],
    data: RuleData,
    is_warning: Callable[[str], bool],
) -> list[CoverageAssessment]:
    """One assessment per in-scope focus order that has a Coverage (for its date) to reference.

    `findings` are all findings before configuration filtering: switching a card type off must
    not change what the payer is told. `is_warning(topic)` says whether a topic's card is a
    warning: an FFR-CT topic missing from the tables above counts as a missing criterion when
    it is a warning.
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
        mine = by_order.get(order.ref, [])
        if coverage.payer_kind == "undetermined":
            draft = _Draft("conditional")
            draft.need_info(
                "Several coverages are in force and none is marked primary: confirm which plan "
                "is primary before scheduling"
            )
        elif family == "cac":
            draft = _assess_cac(facts, data, order, mine)
        else:
            draft = _assess_ffrct(facts, data, order, mine, is_warning)
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
        if not hook_spec(facts.hook).asks_for_documentation:
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


def _assess_cac(facts: Facts, data: RuleData, order: Order, found: list[Finding]) -> _Draft:
    topics = {f.topic for f in found}
    policy = payer_policy(facts, data, order, "cac")
    kind = payer_kind(facts, order)
    bundled = [
        f for f in found if f.topic == "cac-bundling-conflict" and f.order_refs[0] == order.ref
    ]
    if bundled:
        # AMA/NCCI: never paid with a same-day 75572-75574, whoever the payer is (CO-97).
        draft = _Draft("not-covered")
        draft.add_reason(
            f"Calcium scoring is bundled into CPT {bundled[0].details['conflict_code']} on the "
            "same date of service (CO-97): remove this order"
        )
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
    if "cac-screening-not-covered" in topics:
        draft = _Draft("not-covered")
        draft.add_reason("The payer denies calcium scoring for asymptomatic screening")
        return draft
    if policy is None:
        draft = _Draft("conditional")
        draft.need_info("No calcium-score policy is on file for this payer: verify benefits")
    else:
        draft = _Draft(policy.position)
        if draft.covered == "conditional" and "cac-risk-factor-missing" not in topics:
            draft.need_info(
                policy.note or "Coverage depends on the payer's medical policy criteria"
            )
    if "cac-risk-factor-missing" in topics:
        draft.covered = "conditional"
        draft.doc_needed = ["clinical"]
        draft.need_info(
            "If the patient has a cardiovascular risk factor (e.g. hyperlipidemia, family "
            "history of ischemic heart disease, diabetes, hypertension), document it on the order"
        )
    return draft


def _assess_ffrct(
    facts: Facts,
    data: RuleData,
    order: Order,
    found: list[Finding],
    is_warning: Callable[[str], bool],
) -> _Draft:
    """FFR-CT findings mapped by meaning (FFRCT_* tables above), worst first."""
    topics = {f.topic for f in found if f.topic.startswith("ffrct-")}
    if FFRCT_DUPLICATE in topics:
        draft = _Draft("not-covered")
        draft.add_reason(
            "FFR-CT is paid once per CCTA: an FFR-CT for this CCTA is already on file or ordered"
        )
        return draft
    kind = payer_kind(facts, order)
    details = {f.topic: f.details for f in found}
    limits = [
        text.format(history=details[topic].get("history") or "an excluded history")
        if topic == "ffrct-excluded-history"
        else text
        for topic, text in FFRCT_LIMITATIONS.items()
        if topic in topics
    ]
    if limits and kind in MEDICARE_LCD_KINDS:
        draft = _Draft("not-covered")
        for text in limits:
            draft.add_reason(f"Not covered under the Medicare FFR-CT LCD: {text}")
        if kind == "original-medicare":
            # An LCD denial is "not reasonable and necessary": only a signed ABN shifts liability.
            draft.add_reason("To bill the patient, obtain a signed ABN (CMS-R-131) first")
        return draft
    undocumented = [text for topic, text in FFRCT_UNDOCUMENTED.items() if topic in topics]
    undocumented += [
        data.rules[t].title
        for t in sorted(topics)
        if t not in FFRCT_UNDOCUMENTED
        and t not in FFRCT_LIMITATIONS
        and t not in FFRCT_NOT_COVERAGE
        and t != FFRCT_DUPLICATE
        and is_warning(t)
    ]
    policy = payer_policy(facts, data, order, "ffrct")
    if policy is None:
        draft = _Draft("conditional")
        draft.need_info("No FFR-CT policy is on file for this payer: verify benefits")
    else:
        draft = _Draft(policy.position)
        if draft.covered == "conditional":
            draft.need_info(
                policy.note or "Coverage depends on the payer's medical policy criteria"
            )
    for text in limits:
        # Not a Medicare LCD payer: its own policy decides; say what the record shows.
        draft.covered = "conditional"
        draft.need_info(f"Check the payer's FFR-CT policy: {text}")
    if undocumented:
        draft.covered = "conditional"
        draft.doc_needed = ["clinical"]
        draft.need_info(f"FFR-CT coverage criterion not documented: {'; '.join(undocumented)}")
    if "ffrct-legacy-code" in topics:
        draft.add_reason("Bill CPT 75580: the order uses a Category III code deleted on 2024-01-01")
    return draft


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
    """The codes the claim must carry: the order's CAC code as the payer accepts it (S8092 is
    75571 for Medicare: rules.md §1); 75580 (+ 75574 the same day)."""
    if family == "cac":
        ordered = data.codes("cac").matches(sorted(order.codes))[:1]
        return tuple(data.billed_as(code, payer_kind(facts, order))[0] for code in ordered)
    codes = [Code("cpt", "75580")]
    ccta = data.codes("ccta_order")
    same_day_order = any(
        other.ref != order.ref
        and other.service_date == order.service_date
        and ccta.any_in(other.codes)
        for other in (*facts.draft_orders, *facts.existing_orders)
    )
    same_day_study = any(
        study.performed == order.service_date and ccta.any_in(study.codes)
        for study in facts.performed
    )
    if same_day_order or same_day_study:
        codes.append(Code("cpt", "75574"))
    return tuple(codes)
