"""Reading codings as the rules compare them: (short system, normalised code).

Real charts spell one code system several ways (the CPT AMA URI or its OID, HCPCS for CPT,
no system at all); the rule data's alias table and a few unambiguous shapes settle it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from fhir.resources.R4B.codeableconcept import CodeableConcept

from service.knowledge.catalogue import RuleData
from service.knowledge.vocabulary import Code, CodeSet, normalise_code


class CodeReader:
    """Normalises codings to (short system, code) using the rule data's alias table."""

    def __init__(self, data: RuleData) -> None:
        self._systems = data.system_for_uri
        self._known = frozenset(self._systems.values())

    def coding_codes(self, codings: Iterable[Any] | None, *, diagnosis: bool = False) -> set[Code]:
        """With `diagnosis` (a reason or a Condition), a system-less ICD-10-CM-shaped code
        without its dot ("R079") is ICD-10-CM too: no other code system used there looks so."""
        return {
            self.code(coding.system, coding.code, diagnosis=diagnosis)
            for coding in codings or []
            if coding is not None and coding.code
        }

    def code(self, system_uri: str | None, value: str, *, diagnosis: bool = False) -> Code:
        """One coding, normalised (also for raw JSON, before any model is built)."""
        code = value.strip()
        system = self._systems.get(system_uri or "", system_uri or "")
        if not system and _looks_like_cpt(code):
            system = "cpt"  # seen in the wild: CPT codes sent without a system
        elif not system and _DOTTED_ICD10.match(code):
            system = "icd10cm"  # "R07.9" with no system: the dot makes it unambiguous
        elif not system and diagnosis and _UNDOTTED_ICD10.match(code.upper()):
            system = "icd10cm"
        elif system == "hcpcs" and _looks_like_cpt(code):
            system = "cpt"  # CPT is HCPCS Level I; Level II codes start with a letter
        return Code(system, normalise_code(system, code))

    def raw_concept(self, concept: Any, *, diagnosis: bool = False) -> list[Code] | None:
        """The codes of a CodeableConcept still in raw JSON, before any model is built; None
        when they cannot be read (no codings, a coding without a code string, a system that is
        not a string): then only validating the resource can say what it holds."""
        codings = concept.get("coding") if isinstance(concept, dict) else None
        if not isinstance(codings, list) or not codings:
            return None
        found = []
        for coding in codings:
            if not isinstance(coding, dict):
                return None
            value, system = coding.get("code"), coding.get("system")
            if not isinstance(value, str) or not value.strip():
                return None
            if system is not None and not isinstance(system, str):
                return None
            found.append(self.code(system, value, diagnosis=diagnosis))
        return found

    def concept(self, concept: CodeableConcept | None, *, diagnosis: bool = False) -> set[Code]:
        return self.coding_codes(concept.coding if concept else None, diagnosis=diagnosis)

    def concepts(
        self, concepts: Iterable[CodeableConcept] | None, *, diagnosis: bool = False
    ) -> CodeSet:
        found: set[Code] = set()
        for concept in concepts or []:
            found |= self.concept(concept, diagnosis=diagnosis)
        return frozenset(found)

    def any_unreadable(self, concepts: Iterable[CodeableConcept] | None) -> bool:
        """True when a concept says something (text or codes) but has no code in a known system:
        "Chest pain on exertion" as text only is a reason the rules cannot read, not no reason."""
        for concept in concepts or []:
            codes = self.concept(concept, diagnosis=True)
            if any(c.system in self._known for c in codes):
                continue
            if codes or (concept.text or "").strip():
                return True
        return False


# A dotted ICD-10-CM code ("R07.9", "I25.110"). Undotted forms are left alone: "S8092" is both
# a HCPCS code and ICD-10-CM S80.92.
_DOTTED_ICD10 = re.compile(r"^[A-TV-Z][0-9][0-9A-Z]\.[0-9A-Z]{1,4}$")
_UNDOTTED_ICD10 = re.compile(r"^[A-TV-Z][0-9][0-9A-Z][0-9A-Z]{0,4}$")


def _looks_like_cpt(code: str) -> bool:
    return len(code) == 5 and (code.isdigit() or (code[:4].isdigit() and code[4] in "TFU"))
