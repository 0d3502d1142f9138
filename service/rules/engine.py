"""Run every rule over the facts; return findings in catalogue order.

A rule is a plain function ``(facts, rule_data) -> Iterable[Finding]``: no I/O, no HTTP, no FHIR
JSON. The registry below maps each topic code to its function; startup validation checks that
the registry, the rule data and the card catalogue name the same topics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from service.facts.model import Facts
from service.rules import cac
from service.rules.catalogue import RuleData
from service.rules.findings import Finding

Rule = Callable[[Facts, RuleData], Iterable[Finding]]

RULES: Mapping[str, Rule] = {
    "cac-bundling-conflict": cac.bundling_conflict,
}


def evaluate(facts: Facts, data: RuleData, rules: Mapping[str, Rule] = RULES) -> list[Finding]:
    findings: list[Finding] = []
    for rule in rules.values():
        findings.extend(rule(facts, data))
    return findings
