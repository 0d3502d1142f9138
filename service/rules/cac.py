"""Coronary calcium scoring (CPT 75571 / HCPCS S8092) rules.

Source unless noted: seeds/cac-cpt-75571-billing-guide.txt;
catalogue in shared/reference/rules.md §3.
"""

from __future__ import annotations

from collections.abc import Iterator

from service.facts.model import Facts, Order
from service.rules.catalogue import RuleData
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
