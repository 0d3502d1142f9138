"""Da Vinci CRD coverage information as a CDS Hooks `systemActions` update.

CRD STU2 (https://hl7.org/fhir/us/davinci-crd/STU2.1/cards.html#coverage-information): one
`update` per in-scope order carrying the WHOLE order as received (same id) plus the
`ext-coverage-information` extension; it is never a card (resp-25). Sub-extension names and
cardinalities follow the StructureDefinition; the invariants are checked by
service.crd.assessment.CoverageAssessment before anything is built here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

from service.cdshooks.models import Action
from service.crd.assessment import CoverageAssessment
from service.knowledge.catalogue import RuleData

COVERAGE_INFO_URL = (
    "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
)
_COVERED_TEXT = {
    "covered": "covered",
    "not-covered": "not covered",
    "conditional": "covered if conditions are met",
}


def coverage_extension(
    assessment: CoverageAssessment, rule_data: RuleData, *, today: date, assertion_id: str
) -> dict[str, Any]:
    """The complex extension, sub-extensions in StructureDefinition order."""
    parts: list[dict[str, Any]] = [
        {"url": "coverage", "valueReference": {"reference": assessment.coverage_ref}},
        {"url": "covered", "valueCode": assessment.covered},
    ]
    if assessment.pa_needed:
        parts.append({"url": "pa-needed", "valueCode": assessment.pa_needed})
    parts += [{"url": "doc-needed", "valueCode": c} for c in assessment.doc_needed]
    parts += [{"url": "doc-purpose", "valueCode": c} for c in assessment.doc_purpose]
    parts += [{"url": "info-needed", "valueCode": c} for c in assessment.info_needed]
    parts += [
        {
            "url": "billingCode",
            "valueCoding": {"system": rule_data.uri_for(code.system), "code": code.code},
        }
        for code in assessment.billing_codes
    ]
    parts += [{"url": "reason", "valueCodeableConcept": {"text": r}} for r in assessment.reasons]
    parts += [
        {"url": "date", "valueDate": today.isoformat()},
        {"url": "coverage-assertion-id", "valueString": assertion_id},
    ]
    return {"url": COVERAGE_INFO_URL, "extension": parts}


def _same_coverage(extension: Any, coverage_ref: str) -> bool:
    if not isinstance(extension, dict) or extension.get("url") != COVERAGE_INFO_URL:
        return False
    return any(
        isinstance(part, dict)
        and part.get("url") == "coverage"
        and (part.get("valueReference") or {}).get("reference") == coverage_ref
        for part in extension.get("extension") or []
    )


def coverage_action(
    assessment: CoverageAssessment,
    order: Mapping[str, Any],
    rule_data: RuleData,
    *,
    today: date,
    assertion_id: str,
    order_label: str,
) -> Action:
    """The `update` system action: the order as received, with our extension replacing any
    earlier coverage information for the same Coverage (other payers' entries are kept)."""
    resource = copy.deepcopy(dict(order))
    kept = [
        ext
        for ext in resource.get("extension") or []
        if not _same_coverage(ext, assessment.coverage_ref)
    ]
    kept.append(coverage_extension(assessment, rule_data, today=today, assertion_id=assertion_id))
    resource["extension"] = kept
    description = f"Coverage information for {order_label}: {_COVERED_TEXT[assessment.covered]}"
    if assessment.pa_needed == "auth-needed":
        description += "; prior authorization needed"
    return Action(type="update", description=description, resource=resource)


def updated_orders(actions: list[Action]) -> dict[str, dict[str, Any]]:
    """The orders as the coverage system actions update them, by reference: suggestions that
    update the same order start from these, so accepting one keeps the coverage extension."""
    found: dict[str, dict[str, Any]] = {}
    for action in actions:
        resource = action.resource
        if isinstance(resource, dict) and resource.get("resourceType") and resource.get("id"):
            found[f"{resource['resourceType']}/{resource['id']}"] = resource
    return found


def coverage_actions(
    assessments: list[CoverageAssessment],
    drafts: Mapping[str, Mapping[str, Any]],
    labels: Mapping[str, str],
    rule_data: RuleData,
    *,
    today: date,
    new_uuid: Callable[[], str],
) -> tuple[list[Action], list[str]]:
    """System actions for the assessed orders, and their coverage-assertion ids (for audit)."""
    actions: list[Action] = []
    assertion_ids: list[str] = []
    for assessment in assessments:
        order = drafts.get(assessment.order_ref)
        if order is None:
            continue
        assertion_id = new_uuid()
        actions.append(
            coverage_action(
                assessment,
                order,
                rule_data,
                today=today,
                assertion_id=assertion_id,
                order_label=labels.get(assessment.order_ref, assessment.order_ref),
            )
        )
        assertion_ids.append(assertion_id)
    return actions, assertion_ids
