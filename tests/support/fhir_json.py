"""FHIR JSON that tests in several folders start from: the prefetch keys and a draft order.

Written out here rather than read from the service, so a test still notices when the service's
prefetch keys or parsing change. Every builder returns a fresh dict.
"""

from __future__ import annotations

from typing import Any

CPT = "http://www.ama-assn.org/go/cpt"
PREFETCH_KEYS = (
    "patient",
    "coverage",
    "conditions",
    "bmi",
    "cctaReports",
    "cctaResults",
    "procedures",
    "imagingStudies",
    "cardiacOrders",
)


def service_request(
    order_id: str,
    cpt: str,
    *,
    patient: str,
    day: str = "2026-12-01",
    status: str = "draft",
) -> dict[str, Any]:
    """A ServiceRequest for one CPT code on one day, the shape an EHR puts in `draftOrders`."""
    return {
        "resourceType": "ServiceRequest",
        "id": order_id,
        "status": status,
        "intent": "order",
        "code": {"coding": [{"system": CPT, "code": cpt}]},
        "subject": {"reference": f"Patient/{patient}"},
        "occurrenceDateTime": day,
    }
