"""Run every rule over the facts; return findings in catalogue order.

A rule is a plain function ``(facts, rule_data) -> Iterable[Finding]``: no I/O, no HTTP, no FHIR
JSON. The registry below maps each topic code to its function; startup validation checks that
the registry, the rule data and the card catalogue name the same topics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from service.facts.model import Facts
from service.knowledge.catalogue import RuleData, RuleDataError
from service.rules import cac, coverage, data_quality, ffrct
from service.rules.findings import Finding

Rule = Callable[[Facts, RuleData], Iterable[Finding]]

RULES: Mapping[str, Rule] = {
    "ffrct-symptoms-missing": ffrct.symptoms_missing,
    "ffrct-screening-use": ffrct.screening_use,
    "ffrct-ccta-missing": ffrct.ccta_missing,
    "ffrct-stenosis-out-of-range": ffrct.stenosis_out_of_range,
    "ffrct-stenosis-undocumented": ffrct.stenosis_undocumented,
    "ffrct-bmi-missing": ffrct.bmi_missing,
    "ffrct-duplicate": ffrct.duplicate,
    "ffrct-legacy-code": ffrct.legacy_code,
    "ffrct-excluded-history": ffrct.excluded_history,
    "cac-bundling-conflict": cac.bundling_conflict,
    "cac-abn-required": cac.abn_required,
    "cac-medicare-advantage": cac.medicare_advantage,
    "cac-risk-factor-missing": cac.risk_factor_missing,
    "cac-screening-not-covered": cac.screening_not_covered,
    "prior-auth-required": coverage.prior_auth_required,
    "coverage-missing": coverage.coverage_missing,
    "data-incomplete": data_quality.data_incomplete,
    "cost-estimate": coverage.cost_estimate,
}


# Rule parameters with a schema, checked at startup: a broken table stops the service there,
# not on the first request that needs it.
PARAM_SCHEMAS: Mapping[str, Callable[[RuleData], object]] = {
    "data-incomplete": data_quality.DataIncompleteParams.of,
}


def check_topics(data: RuleData, rules: Mapping[str, Rule] = RULES) -> None:
    """A topic is registered once, here: the rule data must describe exactly these topics."""
    missing = sorted(set(rules) - set(data.rules))
    if missing:
        raise RuleDataError(f"rules.yaml has no entry for topic(s): {missing}")
    unknown = sorted(set(data.rules) - set(rules))
    if unknown:
        raise RuleDataError(f"rules.yaml describes topic(s) no rule emits: {unknown}")


def check_params(data: RuleData) -> None:
    for topic, validate in PARAM_SCHEMAS.items():
        try:
            validate(data)
        except ValueError as exc:  # pydantic's ValidationError is one
            raise RuleDataError(f"rules.yaml: {topic}.params: {exc}") from exc


def evaluate(facts: Facts, data: RuleData, rules: Mapping[str, Rule] = RULES) -> list[Finding]:
    findings: list[Finding] = []
    for rule in rules.values():
        findings.extend(rule(facts, data))
    return findings
