"""Request builders for the protocol tests: a minimal valid order-sign / order-select call.

Every builder returns a fresh dict, so a test can break one member without touching the others.
"""

from __future__ import annotations

from typing import Any

from tests.support.fhir_json import PREFETCH_KEYS
from tests.support.fhir_json import service_request as draft_order

ORDER_SIGN_URL = "/cds-services/cardiac-ct-order-sign"
ORDER_SELECT_URL = "/cds-services/cardiac-ct-order-select"
PATIENT_ID = "pat-protocol"


def service_request(order_id: str, cpt: str, day: str = "2026-12-01") -> dict[str, Any]:
    return draft_order(order_id, cpt, patient=PATIENT_ID, day=day)


def draft_bundle(*resources: dict[str, Any], with_type: bool = True) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "entry": [{"resource": r} for r in resources],
    }
    if with_type:
        bundle["type"] = "collection"
    return bundle


def null_prefetch() -> dict[str, Any]:
    """Every key present and null: the EHR says it has no data, so nothing is fetched."""
    return dict.fromkeys(PREFETCH_KEYS)


def hook_request(
    *drafts: dict[str, Any],
    hook: str = "order-sign",
    selections: list[str] | None = None,
) -> dict[str, Any]:
    """A valid request; with no drafts, a lone 75571 calcium-score order."""
    orders = drafts or (service_request("cac-1", "75571"),)
    context: dict[str, Any] = {
        "userId": "Practitioner/dr-1",
        "patientId": PATIENT_ID,
        "draftOrders": draft_bundle(*orders),
    }
    if hook == "order-select":
        context["selections"] = selections or [f"ServiceRequest/{orders[0]['id']}"]
    return {
        "hook": hook,
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": context,
        "prefetch": null_prefetch(),
    }


def bundling_pair() -> tuple[dict[str, Any], dict[str, Any]]:
    """A calcium score and a CCTA on the same day: the NCCI bundling conflict."""
    return service_request("cac-1", "75571"), service_request("ccta-1", "75574")
