"""Coronary calcium scoring (CPT 75571 / HCPCS S8092) rules.

Source unless noted: seeds/cac-cpt-75571-billing-guide.txt;
catalogue in shared/reference/rules.md §3.
"""

from __future__ import annotations

from collections.abc import Iterator

from service.facts.model import Code, Facts, Order
from service.rules.catalogue import RuleData
from service.rules.coverage import (
    cost_text,
    order_label,
    payer_label,
    payer_policy,
    policy_owner,
)
from service.rules.findings import Finding, ProposedAction


def _first_code(order: Order, data: RuleData, list_name: str) -> str | None:
    found = data.codes(list_name).matches(sorted(order.codes))
    return found[0].code if found else None


def bundling_conflict(facts: Facts, data: RuleData) -> Iterator[Finding]:
    """75571 on the same date of service as 75572-75574 (AMA/NCCI: CO-97 if billed together).

    The conflict may be another draft order or an order/procedure already on file for that date.
    """
    calcium_score = data.codes("cac_bundled")
    contrast = data.codes("cardiac_ct_with_contrast")
    for order in facts.focus_orders:
        if not calcium_score.any_in(order.codes):
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
                "order": order.display or order.ref,
                "conflict_code": conflict_code or "a contrast cardiac CT",
                "date": order.service_date.isoformat(),
            },
            actions=(ProposedAction(kind="delete-order", order_ref=order.ref),),
        )


def _cac_orders(facts: Facts, data: RuleData) -> list[Order]:
    """Calcium-score orders (75571 or S8092) among the orders decision support is about."""
    cac = data.codes("cac")
    return [order for order in facts.focus_orders if cac.any_in(order.codes)]


def _cac_code(order: Order, data: RuleData) -> str:
    return _first_code(order, data, "cac") or "75571"


def abn_required(facts: Facts, data: RuleData) -> Iterator[Finding]:
    """Original Medicare primary: CAC is a non-covered screening service, so an ABN comes first.

    Only a positively identified Original Medicare primary fires (SOPT 12/121/129, the payor
    names in payers.yaml, or a Medigap secondary). SOPT 1 alone is "medicare-unknown": no ABN
    is asserted; the facts record a `coverage-type` gap and the CRD answer is `conditional`.
    """
    if facts.coverage is None or facts.coverage.payer_kind != "original-medicare":
        return
    policy = payer_policy(facts, data, "cac")
    if policy is not None and not policy.abn_required:
        return
    self_pay = cost_text(policy) if policy and policy.cost else None
    for order in _cac_orders(facts, data):
        yield Finding(
            topic="cac-abn-required",
            order_refs=(order.ref,),
            details={
                "order": order_label(order),
                "code": _cac_code(order, data),
                "self_pay": self_pay or "the practice's self-pay rate",
            },
            actions=(ProposedAction(kind="create-abn-task", order_ref=order.ref),),
        )


def medicare_advantage(facts: Facts, data: RuleData) -> Iterator[Finding]:
    """Medicare Advantage primary: CAC may be a supplemental benefit; no ABN for MA plans."""
    if facts.coverage is None or facts.coverage.payer_kind != "medicare-advantage":
        return
    for order in _cac_orders(facts, data):
        yield Finding(
            topic="cac-medicare-advantage",
            order_refs=(order.ref,),
            details={
                "order": order_label(order),
                "code": _cac_code(order, data),
                "payer": payer_label(facts, data),
            },
        )


def _supporting_codes(facts: Facts, order: Order) -> list[Code]:
    return [*order.reason_codes, *(code for d in facts.diagnoses for code in d.codes)]


def risk_factor_missing(facts: Facts, data: RuleData) -> Iterator[Finding]:
    """Commercial coverage and no risk-factor diagnosis on the order or the active problems.

    Commercial payers want intermediate risk with a risk factor (CO-50 / N115 otherwise). A
    payer row can opt out (`requires_supporting_diagnosis: false`). When the order has no such
    reason and the conditions could not be read (or a reasonReference could not be resolved),
    the check is skipped rather than guessed; the data-incomplete card names it.
    """
    if facts.coverage is None or facts.coverage.payer_kind != "commercial":
        return
    policy = payer_policy(facts, data, "cac")
    if policy is not None and policy.requires_supporting_diagnosis is False:
        return
    supporting = data.codes("cac_supporting_diagnoses")
    for order in _cac_orders(facts, data):
        if supporting.any_in(_supporting_codes(facts, order)):
            continue
        if facts.unavailable("conditions") or order.reasons_unresolved:
            continue
        yield Finding(
            topic="cac-risk-factor-missing",
            order_refs=(order.ref,),
            details={
                "order": order_label(order),
                "code": _cac_code(order, data),
                "payer": payer_label(facts, data),
            },
        )


def screening_not_covered(facts: Facts, data: RuleData) -> Iterator[Finding]:
    """The payer denies screening CAC (Horizon BCBS NJ) and the order looks like screening.

    "Looks like screening": no cardiac symptom on the order or among the active conditions, and
    either a screening reason (Z13.6, Z00.0x) is stated or the conditions were read (so the
    absence of symptoms is known, not assumed).
    """
    if facts.coverage is None:
        return
    policy = payer_policy(facts, data, "cac")
    if policy is None or not policy.screening_denied:
        return
    symptoms = data.codes("cardiac_symptoms")
    screening = data.codes("screening_reasons")
    for order in _cac_orders(facts, data):
        if symptoms.any_in(_supporting_codes(facts, order)):
            continue
        stated = screening.any_in(order.reason_codes)
        if not stated and facts.unavailable("conditions"):
            continue
        yield Finding(
            topic="cac-screening-not-covered",
            order_refs=(order.ref,),
            details={
                "order": order_label(order),
                "code": _cac_code(order, data),
                "payer": policy_owner(facts, data),
                "why": "the stated reason is screening"
                if stated
                else "no cardiac symptom is documented",
            },
        )
