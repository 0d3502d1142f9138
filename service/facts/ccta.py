"""Which CCTA each FFR-CT draft order is for: worked out once, read by every FFR-CT check.

Source: shared/reference/rules.md §2 ("the CCTA the FFR-CT is derived from"); the seed's
"FFR-CT is billed once per CCTA".
"""

from __future__ import annotations

from dataclasses import replace

from service.facts.model import STANDING_ORDER_STATUSES, CctaTarget, Facts, Order
from service.knowledge.catalogue import RuleData


def with_ccta_targets(facts: Facts, data: RuleData) -> Facts:
    """The facts with the CCTA of each FFR-CT draft order. In this order of evidence:

    1. A CCTA on file the order links to (basedOn/supportingInfo naming its report, procedure,
       imaging study or the 75574 order it was based on).
    2. A 75574 order the order links to, in the same draft or on file and not yet read.
    3. A 75574 order in the same draft (the "CCTA with FFR-CT" workflow): the FFR-CT is for the
       new CCTA, which has no reading yet.
    4. The most recent of: the CCTAs on file, and the 75574 orders on file not yet read (an
       order on or after the latest CCTA's date is the newer CCTA).

    All drafts at once: the 75574 drafts and pending orders are listed once, so the cost is
    linear in the orders.
    """
    ccta = data.codes("ccta_order")
    new_cctas = [o for o in facts.draft_orders if ccta.any_in(o.codes)]
    pending = pending_ccta_orders(facts, data)
    targets = (
        (o.ref, _target(o, facts, new_cctas, pending))
        for o in facts.draft_orders
        if data.in_family("ffrct", o.codes)
    )
    return replace(facts, ccta_targets=tuple((ref, t) for ref, t in targets if t is not None))


def pending_ccta_orders(facts: Facts, data: RuleData) -> list[Order]:
    """75574 orders on file (active, on hold, completed) with no CCTA on file resulting from
    them yet: a CCTA that is ordered, or done with its report not received."""
    read = {a for c in facts.cctas for a in c.aliases | {c.ref}}
    return [
        o
        for o in facts.existing_orders
        if o.status in STANDING_ORDER_STATUSES
        and data.codes("ccta_order").any_in(o.codes)
        and o.ref not in read
    ]


def _target(
    order: Order, facts: Facts, ccta_drafts: list[Order], pending: list[Order]
) -> CctaTarget | None:
    linked = [c for c in facts.cctas if (c.aliases | {c.ref}) & order.linked_refs]
    if linked:
        return CctaTarget(ccta=linked[0])
    new_cctas = [o for o in ccta_drafts if o.ref != order.ref]
    linked_orders = [o for o in new_cctas + pending if o.ref in order.linked_refs]
    if linked_orders:
        return CctaTarget(draft=linked_orders[0])
    if new_cctas:
        return CctaTarget(draft=new_cctas[0])
    latest = facts.cctas[0] if facts.cctas else None
    newer = [
        o
        for o in pending
        if latest is None or latest.performed is None or o.service_date >= latest.performed
    ]
    if newer:
        return CctaTarget(draft=max(newer, key=lambda o: (o.service_date, o.ref)))
    return CctaTarget(ccta=latest) if latest is not None else None
