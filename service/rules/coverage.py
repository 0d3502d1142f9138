"""Payer rules: prior authorization, missing coverage, cost estimate.

Contract: shared/reference/rules.md §4-5. What a finding means for the Da Vinci CRD coverage
information is decided in service.crd, from each topic's `coverage` entry in the rule data.
"""

from __future__ import annotations

from collections.abc import Iterator

from service.facts.model import Facts
from service.knowledge.catalogue import RuleData
from service.rules.findings import Finding
from service.rules.payers import (
    cost_text,
    in_scope_orders,
    order_label,
    payer_label,
    payer_policy,
    policy_owner,
    prior_auth_applies,
)


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
                "family": data.families[family].label,
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
