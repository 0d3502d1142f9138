"""The draft orders of a hook call, parsed resource by resource before any patient data is read.

A bad draft ServiceRequest is reported (a gap: the order could not be checked); other bad
resources and request types this service never checks are left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B.resource import Resource

from service.fhir.gaps import DataGap
from service.fhir.parse import Skipped, bundle_resources, parse_resource

# The FHIR request resources an order-sign / order-select draftOrders Bundle carries.
REQUEST_TYPES = frozenset(
    {"ServiceRequest", "MedicationRequest", "DeviceRequest", "NutritionOrder", "VisionPrescription"}
)
# Those whose code can be a procedure this service checks: the out-of-scope fast path skips
# the others without a look at their codes.
PROCEDURE_ORDER_TYPES = frozenset({"ServiceRequest"})


@dataclass(frozen=True)
class DraftOrder:
    """A draft order as parsed, with its raw JSON kept for `update` actions (whole resource)."""

    ref: str
    raw: dict[str, Any]
    model: Resource


def parse_drafts(draft_bundle: Mapping[str, Any]) -> tuple[list[DraftOrder], list[DataGap]]:
    """Parse draft orders one by one; a bad ServiceRequest is reported, other bad ones ignored."""
    drafts: list[DraftOrder] = []
    gaps: list[DataGap] = []
    for raw in bundle_resources(dict(draft_bundle)):
        parsed = parse_resource(raw)
        if isinstance(parsed, Skipped):
            if parsed.resource_type == "ServiceRequest":
                gaps.append(
                    DataGap(
                        "draftOrders", f"a draft ServiceRequest could not be read ({parsed.reason})"
                    )
                )
            continue
        if parsed.get_resource_type() not in REQUEST_TYPES or not parsed.id:
            continue
        drafts.append(DraftOrder(f"{parsed.get_resource_type()}/{parsed.id}", raw, parsed))
    return drafts, gaps
