"""Which raw resources are worth validating: a cheap look at the codes before the models.

Validating a resource into its FHIR model costs far more than the checks themselves, and most of
a real chart is beside the point: a problem list of two hundred entries, a surgical history of
fifty procedures, of which a handful are symptoms, risk factors, a CCTA, a stent or a bypass.
A Condition or Procedure whose codes are all readable and outside every code list of the rule
data is passed over. Anything the look cannot judge (no codes, a malformed coding) is kept, so
it is validated and, if broken, reported as before; a Condition an order names as its reason is
always kept. Other resource types are always kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from service.facts.codes import CodeReader
from service.knowledge.catalogue import RuleData

# Resource types judged by their `code`; `diagnosis`: read codes the way Conditions are read.
_JUDGED = {"Condition": True, "Procedure": False}


class RelevanceFilter:
    """`filter(raw) -> bool`: validate this resource (True) or pass it over (False)."""

    def __init__(self, rule_data: RuleData, referenced: Iterable[str] = ()) -> None:
        self._codes = CodeReader(rule_data)
        self._lists = tuple(rule_data.code_lists.values())
        self._referenced = frozenset(referenced)  # "Condition/x" the draft orders point at

    def __call__(self, raw: dict[str, Any]) -> bool:
        kind = raw.get("resourceType")
        if kind not in _JUDGED:
            return True
        if f"{kind}/{raw.get('id')}" in self._referenced:
            return True
        codes = self._codes.raw_concept(raw.get("code"), diagnosis=_JUDGED[str(kind)])
        if codes is None:
            return True  # cannot tell: validate it (and report it if it is broken)
        return any(code_list.any_in(codes) for code_list in self._lists)
