"""Build the facts from parsed FHIR: the one place that reads FHIR models for the rules.

Messy data is expected: a code may sit in any coding of a CodeableConcept, systems come in
legacy spellings, dates may be missing. When something cannot be determined it is recorded as
unknown (None / a DataGap), never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.resource import Resource
from fhir.resources.R4B.servicerequest import ServiceRequest

from service.facts.clinical import ClinicalReader
from service.facts.coverage import coverage_facts
from service.facts.dates import to_date
from service.facts.model import Code, CodeSet, DataGap, Facts, Order
from service.fhir.gather import GatheredData
from service.rules.catalogue import RuleData
from service.rules.codes import normalise_code

REQUEST_TYPES = frozenset(
    {"ServiceRequest", "MedicationRequest", "DeviceRequest", "NutritionOrder", "VisionPrescription"}
)


@dataclass(frozen=True)
class DraftOrder:
    """A draft order as parsed, with its raw JSON kept for `update` actions (whole resource)."""

    ref: str
    raw: dict[str, Any]
    model: Resource


def focus_selections(hook: str, context: Mapping[str, Any]) -> set[str] | None:
    """The draft orders decision support is about on order-select (`context.selections`);
    None on order-sign, where every draft order is."""
    return set(context.get("selections") or []) if hook == "order-select" else None


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


def order_from_model(
    model: Resource, codes: CodeReader, *, origin: str, today: date, selected: bool = True
) -> Order:
    code_attr = getattr(model, "code", None)
    order_codes = codes.concept(code_attr) if isinstance(code_attr, CodeableConcept) else set()
    scheduled = to_date(
        getattr(model, "occurrenceDateTime", None) or getattr(model, "occurrencePeriod", None)
    )
    if scheduled is None and origin == "existing":
        # An order on file with no date of service: its authoring date is the best evidence.
        scheduled = to_date(getattr(model, "authoredOn", None))
    display = None
    if isinstance(code_attr, CodeableConcept):
        display = code_attr.text or next(
            (c.display for c in code_attr.coding or [] if c and c.display), None
        )
    return Order(
        ref=f"{model.get_resource_type()}/{model.id}",
        codes=frozenset(order_codes),
        reason_codes=codes.concepts(getattr(model, "reasonCode", None), diagnosis=True),
        reasons_uncoded=codes.any_unreadable(getattr(model, "reasonCode", None)),
        status=getattr(model, "status", None),
        origin="draft" if origin == "draft" else "existing",
        service_date=scheduled or today,
        selected=selected,
        display=display,
    )


def build_facts(
    *,
    hook: str,
    context: Mapping[str, Any],
    drafts: list[DraftOrder],
    data: GatheredData,
    rule_data: RuleData,
    today: date,
    extra_gaps: Iterable[DataGap] = (),
) -> Facts:
    codes = CodeReader(rule_data)
    clinical = ClinicalReader(data, codes, rule_data)
    selections = focus_selections(hook, context)
    draft_orders = tuple(
        clinical.with_clinical_links(
            order_from_model(
                d.model,
                codes,
                origin="draft",
                today=today,
                selected=selections is None or d.ref in selections,
            ),
            d.model,
        )
        for d in drafts
    )
    order_gaps = clinical.order_gaps(draft_orders)  # text-only reasons, unseen linked studies
    draft_refs = {o.ref for o in draft_orders}
    # An unresolved reasonReference may be the very symptom or risk factor a check looks for:
    # those checks stay silent, and this gap makes the data-incomplete card say so.
    reason_gaps: tuple[DataGap, ...] = (
        (DataGap("reasonReference", "a reason the order refers to could not be found"),)
        if any(o.selected and o.reasons_unresolved for o in draft_orders)
        else ()
    )
    existing = tuple(
        clinical.with_clinical_links(order_from_model(m, codes, origin="existing", today=today), m)
        for m in data.of_type(ServiceRequest)
        if f"ServiceRequest/{m.id}" not in draft_refs
        and getattr(m, "status", None) in {"active", "on-hold", "completed", "draft"}
    )
    performed = clinical.performed_studies()  # Procedures and DiagnosticReports on file
    insurance = coverage_facts(
        data,
        rule_data,
        patient_id=str(context.get("patientId")),
        draft_orders=draft_orders,
        today=today,
    )
    return Facts(
        hook="order-select" if hook == "order-select" else "order-sign",
        today=today,
        patient_ref=f"Patient/{context.get('patientId')}",
        patient_state=insurance.patient_state,
        draft_orders=draft_orders,
        existing_orders=existing,
        performed=performed,
        diagnoses=clinical.diagnoses(),
        inactive_diagnoses=clinical.diagnoses(active=False),
        cctas=clinical.cctas(),
        on_file_refs=clinical.on_file_refs(),
        has_bmi=clinical.has_bmi(bmi_unavailable=any(g.key == "bmi" for g in data.gaps)),
        coverage=insurance.primary,
        coverage_by_date=insurance.by_date,
        coverage_known=insurance.known,
        other_coverages=insurance.others,
        ffrct_stenosis_range=insurance.ffrct_stenosis_range,
        gaps=(*data.gaps, *extra_gaps, *insurance.gaps, *reason_gaps, *order_gaps),
    )
