"""Build the facts from parsed FHIR: the one place that reads FHIR models for the rules.

Messy data is expected: a code may sit in any coding of a CodeableConcept, systems come in
legacy spellings, dates may be missing. When something cannot be determined it is recorded as
unknown (None / a DataGap), never guessed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.resource import Resource
from fhir.resources.R4B.servicerequest import ServiceRequest

from service.cdshooks.hooks import HookSpec
from service.facts.ccta import with_ccta_targets
from service.facts.clinical import ClinicalReader
from service.facts.codes import CodeReader
from service.facts.coverage import coverage_facts
from service.facts.dates import to_date
from service.facts.model import Facts, Order
from service.fhir.drafts import DraftOrder
from service.fhir.gaps import DataGap
from service.fhir.gather import GatheredData
from service.knowledge.catalogue import RuleData


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
    hook: HookSpec,
    context: Mapping[str, Any],
    drafts: list[DraftOrder],
    data: GatheredData,
    rule_data: RuleData,
    today: date,
    extra_gaps: Iterable[DataGap] = (),
) -> Facts:
    codes = CodeReader(rule_data)
    clinical = ClinicalReader(data, codes, rule_data)
    selections = hook.focus(context)
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
    facts = Facts(
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
        gaps=(*data.gaps, *extra_gaps, *insurance.gaps, *reason_gaps, *order_gaps),
    )
    return with_ccta_targets(facts, rule_data)
