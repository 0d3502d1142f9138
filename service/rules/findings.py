"""What a rule says: a topic, the orders it is about, and what could be done.

The card layer is the only reader of findings; it turns them into CDS Hooks cards and actions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from service.knowledge.vocabulary import Code

ActionKind = Literal["delete-order", "create-order", "replace-order-code", "create-abn-task"]


@dataclass(frozen=True)
class ProposedAction:
    """A change the clinician can accept; rendered into a CDS Hooks suggestion action."""

    kind: ActionKind
    order_ref: str  # the order acted on, or the order a new one is based on
    code: Code | None = None  # the code to create / replace with


@dataclass(frozen=True)
class Finding:
    topic: str  # a topic code from the rule catalogue, e.g. "cac-bundling-conflict"
    order_refs: tuple[str, ...] = ()
    # Values for the card text placeholders ({order}, {conflict_code}, ...). Plain strings.
    details: dict[str, str] = field(default_factory=dict)
    actions: tuple[ProposedAction, ...] = ()
