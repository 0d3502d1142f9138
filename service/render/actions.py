"""Build the FHIR content of suggestion actions: delete, create (CCTA order, ABN task), update.

New resources are valid R4 with the patient, requester and reasons carried over from the order
they are about. Updates return the *whole* order (CDS Hooks: "the entire updated resource"),
starting from `ActionContext.drafts`: the pipeline passes the orders as the coverage-information
system action updates them, so accepting a suggestion never drops that extension.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.cdshooks.models import Action
from service.knowledge.catalogue import RuleData
from service.knowledge.vocabulary import Code, normalise_code
from service.render.cards import SuggestionTemplate
from service.rules.findings import Finding, ProposedAction


@dataclass(frozen=True)
class ActionContext:
    """What actions need from the hook call: the draft orders as sent, patient and user."""

    # "ServiceRequest/1" -> the order as received, or as the coverage system action updates it
    drafts: Mapping[str, dict[str, Any]]
    patient_id: str
    user_ref: str
    encounter_id: str | None


class ActionBuilder:
    def __init__(self, orders: ActionContext, rule_data: RuleData) -> None:
        self.orders = orders
        self.rule_data = rule_data

    def __call__(
        self, finding: Finding, template: SuggestionTemplate, description: str
    ) -> list[Action]:
        return [
            action
            for proposed in finding.actions
            if proposed.kind == template.action
            for action in [self._build(proposed, description)]
            if action is not None
        ]

    def _build(self, proposed: ProposedAction, description: str) -> Action | None:
        if proposed.kind == "delete-order":
            return Action(type="delete", description=description, resourceId=proposed.order_ref)
        base = self.orders.drafts.get(proposed.order_ref)
        if proposed.kind == "replace-order-code":
            if base is None or proposed.code is None:
                return None
            return Action(
                type="update", description=description, resource=self._recoded(base, proposed)
            )
        if proposed.kind == "create-order" and proposed.code is not None:
            return Action(
                type="create", description=description, resource=self._new_order(base, proposed)
            )
        if proposed.kind == "create-abn-task":
            return Action(
                type="create", description=description, resource=self._abn_task(base, proposed)
            )
        return None

    # -- resources ---------------------------------------------------------------------

    def _requester(self, base: Mapping[str, Any] | None) -> dict[str, Any]:
        if base and isinstance(base.get("requester"), dict):
            return copy.deepcopy(base["requester"])
        return {"reference": self.orders.user_ref}

    def _subject(self) -> dict[str, Any]:
        return {"reference": f"Patient/{self.orders.patient_id}"}

    def _coding(self, proposed: ProposedAction) -> dict[str, str]:
        if proposed.code is None:
            raise ValueError(f"{proposed.kind} needs a code")
        return {"system": self.rule_data.uri_for(proposed.code.system), "code": proposed.code.code}

    def _recoded(self, base: Mapping[str, Any], proposed: ProposedAction) -> dict[str, Any]:
        """The order with its code in the new code's system replaced; other codings (a local
        charge code) and code.text are kept."""
        updated = copy.deepcopy(dict(base))
        code: dict[str, Any] = updated["code"] if isinstance(updated.get("code"), dict) else {}
        codings = [c for c in code.get("coding") or [] if isinstance(c, dict)]
        replaced = [i for i, c in enumerate(codings) if self._same_system(c, proposed)]
        new = self._coding(proposed)
        at = replaced[0] if replaced else 0
        kept = [c for i, c in enumerate(codings) if i not in replaced]
        updated["code"] = {**code, "coding": [*kept[:at], new, *kept[at:]]}
        return updated

    def _same_system(self, coding: Mapping[str, Any], proposed: ProposedAction) -> bool:
        """A coding of the replacement's system, or a system-less code the rule data lists
        under that system ("0503T" with no system is CPT)."""
        target = proposed.code
        raw = coding.get("code")
        if target is None or not isinstance(raw, str):
            return False
        system = coding.get("system")
        if system:
            return self.rule_data.system_for_uri.get(system) == target.system
        known = Code(target.system, normalise_code(target.system, raw))
        return any(known in codes for codes in self.rule_data.code_lists.values())

    def _new_order(
        self, base: Mapping[str, Any] | None, proposed: ProposedAction
    ) -> dict[str, Any]:
        order: dict[str, Any] = {
            "resourceType": "ServiceRequest",
            "id": str(uuid.uuid4()),
            "status": "draft",
            "intent": "order",
            "code": {"coding": [self._coding(proposed)]},
            "subject": self._subject(),
            "requester": self._requester(base),
        }
        if self.orders.encounter_id:
            order["encounter"] = {"reference": f"Encounter/{self.orders.encounter_id}"}
        for carried in ("reasonCode", "reasonReference", "insurance", "occurrenceDateTime"):
            if base and base.get(carried):
                order[carried] = copy.deepcopy(base[carried])
        return order

    @staticmethod
    def _code_label(proposed: ProposedAction) -> str:
        if proposed.code is None:
            return "calcium scoring"
        return f"{proposed.code.system.upper()} {proposed.code.code}"

    def _abn_task(self, base: Mapping[str, Any] | None, proposed: ProposedAction) -> dict[str, Any]:
        task: dict[str, Any] = {
            "resourceType": "Task",
            "id": str(uuid.uuid4()),
            "status": "requested",
            "intent": "order",
            "priority": "asap",
            "code": {
                "text": "Obtain a signed Advance Beneficiary Notice of Noncoverage (CMS-R-131)"
            },
            "description": (
                "Give the patient the ABN (form CMS-R-131) before the calcium-score scan and "
                "keep the signed copy; Original Medicare does not cover "
                f"{self._code_label(proposed)}."
            ),
            "focus": {"reference": proposed.order_ref},
            "for": self._subject(),
            "requester": self._requester(base),
        }
        if self.orders.encounter_id:
            task["encounter"] = {"reference": f"Encounter/{self.orders.encounter_id}"}
        if base and base.get("reasonCode"):
            task["reasonCode"] = copy.deepcopy(base["reasonCode"][0])
        return task
