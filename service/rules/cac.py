"""Coronary calcium scoring (CPT 75571 / HCPCS S8092) rules.

Source unless noted: seeds/cac-cpt-75571-billing-guide.txt;
catalogue in shared/reference/rules.md §3.
"""

from __future__ import annotations

from collections.abc import Iterator

from service.facts.model import Facts, Order
from service.knowledge.catalogue import RuleData
from service.knowledge.vocabulary import Code
from service.rules.findings import Finding, ProposedAction
from service.rules.payers import (
    cost_text,
    order_label,
    payer_kind,
    payer_label,
    payer_policy,
    policy_owner,
)


def _first_code(order: Order, data: RuleData, list_name: str) -> str | None:
    found = data.codes(list_name).matches(sorted(order.codes))
    return found[0].code if found else None


def bundling_conflict(facts: Facts, data: RuleData) -> Iterator[Finding]:
    """75571 on the same date of service as 75572-75574 (AMA/NCCI: CO-97 if billed together).

    The conflict may be another draft order or an order/procedure already on file for that date.
    """
    calcium_score = data.codes("cac_bundled")
    contrast = data.codes("cardiac_ct_with_contrast")
    for order in _cac_orders(facts, data):
        billed = _cac_billed(facts, data, order)[0]  # S8092 is billed to Medicare as 75571
        if not calcium_score.any_in([*order.codes, billed]):
            continue
        partners = [
            (other.ref, _first_code(other, data, "cardiac_ct_with_contrast"))
            for other in (*facts.draft_orders, *facts.existing_orders)
            if other.ref != order.ref
            and other.service_date == order.service_date
            and contrast.any_in(other.codes)
        ]
        partners += [
            (study.ref, contrast.matches(sorted(study.codes))[0].code)
            for study in facts.performed
            if study.performed == order.service_date and contrast.any_in(study.codes)
        ]
        if not partners:
            continue
        conflict_ref, conflict_code = partners[0]
        yield Finding(
            topic="cac-bundling-conflict",
            order_refs=(order.ref, conflict_ref),
            details={
                "order": order_label(order, data),
                "conflict_code": conflict_code or "75572-75574",
                "date": order.service_date.isoformat(),
            },
            actions=(ProposedAction(kind="delete-order", order_ref=order.ref),),
        )


def _cac_orders(facts: Facts, data: RuleData) -> list[Order]:
    """Calcium-score orders (75571 or S8092) among the orders decision support is about."""
    cac = data.codes("cac")
    return [order for order in facts.focus_orders if cac.any_in(order.codes)]


def _cac_billed(facts: Facts, data: RuleData, order: Order) -> tuple[Code, str]:
    """The code the claim carries for this order's payer (S8092 is never billed to Medicare:
    75571 instead), and a sentence saying so when it differs from the order's code."""
    found = data.codes("cac").matches(sorted(order.codes))
    ordered = found[0] if found else Code("cpt", "75571")
    billed, crosswalk = data.billed_as(ordered, payer_kind(facts, order))
    if crosswalk is None:
        return billed, ""
    return billed, (
        f"The order uses {ordered.system.upper()} {ordered.code}; "
        f"{crosswalk.note}: the claim carries {billed.system.upper()} {billed.code}."
    )


def abn_required(facts: Facts, data: RuleData) -> Iterator[Finding]:
    """Original Medicare primary: CAC is a non-covered screening service, so an ABN comes first.

    Only a positively identified Original Medicare primary (on the order's date of service)
    fires (SOPT 12/121/129, the payor names in payers.yaml, or a Medigap secondary). SOPT 1
    alone is "medicare-unknown": no ABN is asserted; the facts record a `coverage-type` gap and
    the CRD answer is `conditional`. The claim modifier depends on why Medicare denies it
    (research/clinical-rules.md §4.1): screening is statutorily excluded (GY, GX with the
    voluntary ABN); a diagnostic order (a cardiac symptom documented) is denied as not
    reasonable and necessary, where the ABN is what lets the practice bill the patient (GA).
    """
    for order in _cac_orders(facts, data):
        if payer_kind(facts, order) != "original-medicare":
            continue
        policy = payer_policy(facts, data, order, "cac")
        if policy is not None and not policy.abn_required:
            continue
        self_pay = cost_text(policy) if policy and policy.cost else None
        billed, code_note = _cac_billed(facts, data, order)
        diagnostic = symptomatic(supporting_codes(facts, order), data)
        if diagnostic:
            modifiers = _DIAGNOSTIC_MODIFIERS
        elif _reasons_unreadable(order):
            modifiers = _UNKNOWN_REASON_MODIFIERS
        else:
            modifiers = _SCREENING_MODIFIERS
        yield Finding(
            topic="cac-abn-required",
            order_refs=(order.ref,),
            details={
                "order": order_label(order, data),
                "code": billed.code,
                "code_note": code_note,
                "self_pay": self_pay or "the practice's self-pay rate",
                "modifiers": modifiers,
            },
            actions=(
                ProposedAction(
                    kind="create-abn-task",
                    order_ref=order.ref,
                    code=billed,
                ),
            ),
        )


_SCREENING_MODIFIERS = (
    "No cardiac symptom is documented, so Medicare would treat this as **screening**, which it "
    "does not cover (statutory exclusion, §1862(a)(7)); a claim would be denied **CO-96**. The "
    "ABN is voluntary here and tells the patient before the scan that they will pay. If a claim "
    "is submitted (for example, at the patient's request), use modifier **GY**, plus **GX** "
    "when the voluntary ABN was given."
)
_UNKNOWN_REASON_MODIFIERS = (
    "The order's reason could not be read, so whether Medicare would treat this as "
    "**screening** (statutory exclusion; claim modifier **GY**, plus **GX** with a voluntary "
    "ABN) or as **not reasonable and necessary** (modifier **GA** with the signed ABN, **GZ** "
    "without one) depends on the documented indication. Code the reason on the order."
)
_DIAGNOSTIC_MODIFIERS = (
    "A cardiac symptom is documented, so Medicare would deny the scan as **not reasonable and "
    "necessary** (§1862(a)(1)(A)) unless the MAC's policy covers the diagnosis; only a signed "
    "ABN lets the practice bill the patient. If a claim is submitted, use modifier **GA** when "
    "the signed ABN is on file (**GZ** when none was obtained; the patient cannot then be billed)."
)


def medicare_advantage(facts: Facts, data: RuleData) -> Iterator[Finding]:
    """Medicare Advantage primary: CAC may be a supplemental benefit; no ABN for MA plans."""
    for order in _cac_orders(facts, data):
        if payer_kind(facts, order) != "medicare-advantage":
            continue
        yield Finding(
            topic="cac-medicare-advantage",
            order_refs=(order.ref,),
            details={
                "order": order_label(order, data),
                "code": _cac_billed(facts, data, order)[0].code,
                "code_note": _cac_billed(facts, data, order)[1],
                "payer": payer_label(facts, data, order),
            },
        )


def _reasons_unreadable(order: Order) -> bool:
    """A reason we could not read (a reference not found, or text with no code) may be the
    symptom or the risk factor: skip rather than guess; the facts carry the gap."""
    return order.reasons_unresolved or order.reasons_uncoded


def symptomatic(codes: list[Code], data: RuleData) -> bool:
    """A cardiac symptom, stable or not (unstable angina and ACS are symptoms too)."""
    return any(data.codes(name).any_in(codes) for name in ("cardiac_symptoms", "acute_coronary"))


def order_or_problem_list(facts: Facts, order: Order) -> list[Code]:
    """The risk-factor check reads the order and the problem list (rules.md §3: "no supporting
    diagnosis on the order or the problem list"); a Condition without a category counts as a
    problem. An encounter diagnosis alone is not documentation on the order or problem list."""
    charted = (d for d in facts.diagnoses if d.category != "encounter-diagnosis")
    return [*order.reason_codes, *(code for d in charted for code in d.codes)]


def supporting_codes(facts: Facts, order: Order) -> list[Code]:
    return [*order.reason_codes, *(code for d in facts.diagnoses for code in d.codes)]


def risk_factor_missing(facts: Facts, data: RuleData) -> Iterator[Finding]:
    """Commercial coverage and no risk-factor diagnosis on the order or the active problems.

    Commercial payers want intermediate risk with a risk factor (CO-50 / N115 otherwise). A
    payer row can opt out (`requires_supporting_diagnosis: false`). When the order has no such
    reason and the conditions could not be read (or a reasonReference could not be resolved),
    the check is skipped rather than guessed; the facts record the gap (`conditions`,
    `reasonReference`, `reasonText`) and the data-incomplete card names the check.
    """
    supporting = data.codes("cac_supporting_diagnoses")
    for order in _cac_orders(facts, data):
        if payer_kind(facts, order) != "commercial":
            continue
        policy = payer_policy(facts, data, order, "cac")
        if policy is not None and policy.requires_supporting_diagnosis is False:
            continue
        if supporting.any_in(order_or_problem_list(facts, order)):
            continue
        if facts.unavailable("conditions") or _reasons_unreadable(order):
            continue
        yield Finding(
            topic="cac-risk-factor-missing",
            order_refs=(order.ref,),
            details={
                "order": order_label(order, data),
                "code": _cac_billed(facts, data, order)[0].code,
                "payer": payer_label(facts, data, order),
            },
        )


def screening_not_covered(facts: Facts, data: RuleData) -> Iterator[Finding]:
    """The payer denies screening CAC (Horizon BCBS NJ) and the documentation says screening.

    The seed: denied "when documentation indicates the service was performed for CAD screening"
    in asymptomatic members. So it fires only on positive evidence: a screening reason on the
    order (Z13.6, Z00.0x) or the patient documented asymptomatic, and no cardiac symptom on the
    order or among the active conditions. No reason at all is not screening. A reasonReference
    that could not be resolved, or a reason given only as text, may be the symptom: the check is
    skipped (the facts record a `reasonReference`/`reasonText` gap; the data-incomplete card
    names it).
    """
    screening = data.codes("screening_reasons")
    asymptomatic = data.codes("asymptomatic")
    for order in _cac_orders(facts, data):
        policy = payer_policy(facts, data, order, "cac")
        if policy is None or not policy.screening_denied:
            continue
        supporting = supporting_codes(facts, order)
        if symptomatic(supporting, data) or _reasons_unreadable(order):
            continue
        stated = screening.any_in(order.reason_codes)
        if not stated and not asymptomatic.any_in(supporting):
            continue
        if not stated and facts.unavailable("conditions"):
            continue  # "asymptomatic" without the problem list: a symptom may be there
        yield Finding(
            topic="cac-screening-not-covered",
            order_refs=(order.ref,),
            details={
                "order": order_label(order, data),
                "code": _cac_billed(facts, data, order)[0].code,
                "payer": policy_owner(facts, data, order),
                "why": "the stated reason is screening"
                if stated
                else "the patient is documented as asymptomatic",
            },
        )
