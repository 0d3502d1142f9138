"""The `data-incomplete` rule: say which data could not be read and which checks it silenced.

Rules that lack data stay silent rather than guess (``facts.unavailable``); without this card the
clinician could not tell "nothing wrong" from "not checked". Which checks each data source feeds
is rule data (rules.yaml, ``data-incomplete.params.sources``), so it changes with the rules, not
the code. Catalogue: shared/reference/rules.md §4.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

from pydantic import BaseModel, ConfigDict, Field

from service.facts.model import Facts, Order
from service.fhir.gaps import DataGap
from service.knowledge.catalogue import RuleData
from service.rules.cac import order_or_problem_list, supporting_codes, symptomatic
from service.rules.findings import Finding
from service.rules.payers import payer_kind, payer_policy

TOPIC = "data-incomplete"
# Gaps about what an order gives as its reason (text only, or a reference not found).
REASON_GAP_KEYS = frozenset({"reasonText", "reasonReference"})


def without_moot_reason_gaps(facts: Facts, data: RuleData) -> Facts:
    """Drop the reason gaps when no check depended on the unreadable reason.

    A reason the service cannot read silences a check only when the answer could turn on it:
    always for FFR-CT (the excluded-history check reads the reason: unstable angina, a recent
    MI); for a calcium score, no risk factor documented elsewhere under a commercial payer, a
    payer that denies screening, or Original Medicare with no symptom on record (the ABN card's
    claim-modifier advice depends on whether the order is screening or diagnostic). Otherwise
    the card would say a check was skipped that ran, and CRD would downgrade a `covered` answer
    for nothing.
    """
    if not any(g.key in REASON_GAP_KEYS for g in facts.gaps):
        return facts
    unreadable = [o for o in facts.focus_orders if o.reasons_uncoded or o.reasons_unresolved]
    if any(_reason_matters(order, facts, data) for order in unreadable):
        return facts
    return replace(facts, gaps=tuple(g for g in facts.gaps if g.key not in REASON_GAP_KEYS))


def _reason_matters(order: Order, facts: Facts, data: RuleData) -> bool:
    family = data.family_of(order.codes)
    if family == "ffrct":
        # The excluded-history check reads the order's reasons (unstable angina, acute MI, a
        # stent stated as the reason): an unreadable reason always leaves it unanswered.
        return True
    if family == "cac":
        policy = payer_policy(facts, data, order, "cac")
        kind = payer_kind(facts, order)
        needs_risk_factor = kind == "commercial" and (
            policy is None or policy.requires_supporting_diagnosis is not False
        )
        on_record = order_or_problem_list(facts, order)
        if needs_risk_factor and not data.codes("cac_supporting_diagnoses").any_in(on_record):
            return True
        symptom = symptomatic(supporting_codes(facts, order), data)
        if kind == "original-medicare" and not symptom:
            return True  # screening (GY/GX) or diagnostic (GA/GZ): the reason decides
        return policy is not None and policy.screening_denied and not symptom
    # Out of scope, nothing reads it; a family added later: its checks may, keep the gap.
    return family is not None


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Check(_Params):
    """A check a data source feeds; `orders` limits it to orders of these code families."""

    name: str = Field(min_length=1)
    orders: list[str] | None = None  # None: a check on any in-scope order


class GapSource(_Params):
    label: str = Field(min_length=1)  # mid-sentence words for the card: "insurance coverage"
    checks: list[str | Check] = Field(default_factory=list)

    def check_names(self, families: set[str]) -> list[str]:
        names = []
        for check in self.checks:
            if isinstance(check, str):
                names.append(check)
            elif check.orders is None or families.intersection(check.orders):
                names.append(check.name)
        return names


class DataIncompleteParams(_Params):
    # Gap key (a prefetch key, or `fhirServer`, `draftOrders` ...) -> label and checks.
    sources: dict[str, GapSource] = Field(min_length=1)
    # For a gap key the table does not know: named as the key itself, no checks listed.
    unlisted_checks: str = Field(min_length=1)

    @classmethod
    def of(cls, data: RuleData) -> DataIncompleteParams:
        params = cls.model_validate(data.rules[TOPIC].params)
        for key, source in params.sources.items():
            for check in source.checks:
                if isinstance(check, Check) and set(check.orders or ()) - set(data.families):
                    raise ValueError(
                        f"sources.{key}: check {check.name!r} names an order family not in "
                        f"codes.yaml ({sorted(data.families)})"
                    )
        return params


def data_incomplete(facts: Facts, data: RuleData) -> Iterator[Finding]:
    """One info card when data was missing for an order this service checks."""
    if not facts.gaps:
        return
    families = {f for o in facts.focus_orders if (f := data.family_of(o.codes)) is not None}
    unreadable_draft = facts.unavailable("draftOrders")
    if not families and not unreadable_draft:
        return  # no FFR-CT / calcium-score order: the missing data silenced nothing
    params = DataIncompleteParams.of(data)
    reasons = _reasons_by_key(facts.gaps, params)
    labels: list[str] = []
    # Sources failing for the same reason(s) share one line: a refused token is one problem.
    lines: dict[str, list[str]] = {}
    checks: list[str] = []
    for key, key_reasons in reasons.items():
        source = params.sources.get(key)
        label = source.label if source else key
        labels.append(label)
        lines.setdefault("; ".join(key_reasons), []).append(f"**{label[:1].upper()}{label[1:]}**")
        names = source.check_names(families) if source else [params.unlisted_checks]
        checks.extend(n for n in names if n not in checks)
    yield Finding(
        topic=TOPIC,
        order_refs=tuple(o.ref for o in facts.focus_orders),
        details={
            "sources": _join(labels),
            "source_lines": "\n".join(
                f"- {', '.join(names)}: {why}" for why, names in lines.items()
            ),
            "checks": "; ".join(checks) if checks else "none for these orders",
        },
    )


def _reasons_by_key(gaps: Sequence[DataGap], params: DataIncompleteParams) -> dict[str, list[str]]:
    """Reasons grouped by gap key: known sources in table order, then others as they came."""
    grouped: dict[str, list[str]] = {}
    for gap in gaps:
        reasons = grouped.setdefault(gap.key, [])
        if gap.reason not in reasons:
            reasons.append(gap.reason)
    order = {key: i for i, key in enumerate(params.sources)}
    return dict(sorted(grouped.items(), key=lambda item: order.get(item[0], len(order))))


def _join(labels: list[str]) -> str:
    """Labels for the one-line summary: at most three named, the rest counted."""
    if len(labels) <= 2:
        return " and ".join(labels)
    if len(labels) == 3:
        return f"{labels[0]}, {labels[1]} and {labels[2]}"
    return f"{labels[0]}, {labels[1]} and {len(labels) - 2} other sources"
