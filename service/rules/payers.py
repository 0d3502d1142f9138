"""What every rule reads about an order and its payer: the order family, the primary coverage's
directory row and policy on the order's own date of service, and how card text names both.

Shared by the FFR-CT, calcium-score and payer rules and by the CRD coverage assessment.
Source: shared/reference/rules.md §1 (families), §4 (coverage and payer directory).
"""

from __future__ import annotations

from service.facts.model import Facts, Order
from service.knowledge.catalogue import FamilyPolicy, PayerRow, RuleData


def in_scope_orders(facts: Facts, data: RuleData) -> list[tuple[Order, str]]:
    """The focus orders this service checks, each with its order family ("ffrct", "cac")."""
    found = []
    for order in facts.focus_orders:
        family = data.family_of(order.codes)
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
    family = data.family_of(order.codes)
    if family is not None:
        codes = data.family_codes(family, order.codes)
        return f"{data.families[family].title} ({codes[0].code})"
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
