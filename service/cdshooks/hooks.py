"""The hooks this service answers, each described once: what its context holds, which draft
orders are in focus, what a request must satisfy, and what CRD may send back on it.

Every layer that differs by hook (the API, the offline evaluator, the pipeline, facts, card
text, CRD) asks the hook's spec instead of comparing hook names. Adding a hook is a spec here,
its context model in `models.py` and a service in `discovery.yaml`.

Spec: https://cds-hooks.hl7.org/2.0/#hooks ; order-sign 1.0 / order-select 1.0 from the CDS Hooks
library (https://cds-hooks.org/hooks/order-sign/, https://cds-hooks.org/hooks/order-select/).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from service.cdshooks.models import (
    HookRequest,
    OrderContext,
    ServiceDefinition,
    describe_validation,
)


class RequestProblem(Exception):
    """The request is not a valid call of this hook; the message names what is wrong."""


@dataclass(frozen=True)
class HookSpec:
    name: str
    context_model: type[BaseModel]
    # The context member holding the orders, a FHIR Bundle (`draftOrders` on both order hooks).
    orders_key: str
    # order-select: the orders being entered are `context.selections`; the other draft orders
    # are already on the list. None: every draft order is in focus.
    selections_key: str | None
    # Da Vinci CRD STU2 hook-19: no documentation requests (doc-needed) on order-select.
    asks_for_documentation: bool
    # How card text says what the clinician is doing with the order ("{ordering}").
    ordering: str

    def orders(self, context: Mapping[str, Any]) -> Mapping[str, Any]:
        """The Bundle of orders in the context (validated by `check`)."""
        bundle: Mapping[str, Any] = context[self.orders_key]
        return bundle

    def focus(self, context: Mapping[str, Any]) -> set[str] | None:
        """The references of the draft orders in focus; None when every draft order is."""
        if self.selections_key is None:
            return None
        return set(context.get(self.selections_key) or [])

    def check(self, request: HookRequest) -> None:
        """Validate the context for this hook; RequestProblem says what is wrong."""
        try:
            self.context_model.model_validate(request.context)
        except ValidationError as exc:
            raise RequestProblem(describe_validation(exc.errors())) from None
        if self.selections_key is not None and not request.context.get(self.selections_key):
            raise RequestProblem(f"context.{self.selections_key} is required for {self.name}")


HOOKS: Mapping[str, HookSpec] = {
    "order-sign": HookSpec(
        name="order-sign",
        context_model=OrderContext,
        orders_key="draftOrders",
        selections_key=None,
        asks_for_documentation=True,
        ordering="being signed",
    ),
    "order-select": HookSpec(
        name="order-select",
        context_model=OrderContext,
        orders_key="draftOrders",
        selections_key="selections",
        asks_for_documentation=False,
        ordering="being entered",
    ),
}


def hook_spec(name: str) -> HookSpec:
    """The spec of a hook this service answers (KeyError for any other: a programming error,
    since requests are matched to a discovered service first)."""
    return HOOKS[name]


def parse_hook_request(raw: Any, service: ServiceDefinition) -> tuple[HookRequest, HookSpec]:
    """The one parse and validation path for a hook call, over HTTP and offline alike."""
    if not isinstance(raw, dict):
        raise RequestProblem("request body must be a JSON object")
    try:
        request = HookRequest.model_validate(raw)
    except ValidationError as exc:
        raise RequestProblem(describe_validation(exc.errors())) from None
    if request.hook != service.hook:
        raise RequestProblem(
            f"service {service.id!r} answers hook {service.hook!r}, not {request.hook!r}"
        )
    spec = hook_spec(service.hook)
    spec.check(request)
    return request, spec
