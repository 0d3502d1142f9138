"""One audit record per CDS service call, answered or rejected (Da Vinci CRD: log every hook
call and response). Pure ASGI middleware, so 4xx answers from anywhere (401, 404, 413, 400)
are recorded too; the route adds what it learns on the way (issuer, ids, cards) to a note.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.pipeline import Evaluation
from service.storage.store import AuditCard, AuditRecord

_SERVICE_CALL = re.compile(r"^/cds-services/([^/]+)$")
_STATE_KEY = "audit_note"
_MAX_ID = 200  # column widths (hook: 100); longer values are junk or attacks, truncated


def _short(value: Any, limit: int = _MAX_ID) -> str | None:
    """A client-given id as the audit stores it: cut to the column, and storable as UTF-8 (a
    lone surrogate such as "\ud800" becomes "?", or the database would refuse the record)."""
    if not isinstance(value, str) or not value:
        return None
    return value[:limit].encode("utf-8", "replace").decode("utf-8")


@dataclass
class CallNote:
    """What is known about a call so far. Ids and codes only: minimum necessary PHI."""

    service_id: str
    hook: str | None = None
    hook_instance: str | None = None
    client_iss: str | None = None
    patient_id: str | None = None
    order_ids: tuple[str, ...] = ()
    evaluation: Evaluation | None = None

    def read_request(self, raw: Any) -> None:
        """Take ids from the raw body, before validation, so a rejected call has them too."""
        if not isinstance(raw, dict):
            return
        self.hook = _short(raw.get("hook"), 100)
        self.hook_instance = _short(raw.get("hookInstance"))
        context = raw.get("context")
        if isinstance(context, dict):
            self.patient_id = _short(context.get("patientId"))
            self.order_ids = _draft_order_ids(context.get("draftOrders"))

    def record(self, status: int, received_at: datetime, latency_ms: float) -> AuditRecord:
        evaluation = self.evaluation
        cards: tuple[AuditCard, ...] = ()
        if evaluation is not None:
            cards = tuple(
                AuditCard(
                    c.uuid, c.topic, c.indicator, c.order_refs, evaluation.payer_profile, c.mode
                )
                for c in evaluation.issued
            )
        return AuditRecord(
            id=str(uuid.uuid4()),
            received_at=received_at,
            service_id=self.service_id[:_MAX_ID],
            status=status,
            latency_ms=round(latency_ms, 2),
            hook=self.hook,
            hook_instance=self.hook_instance,
            client_iss=self.client_iss,
            patient_id=self.patient_id,
            order_ids=self.order_ids,
            data_sources=dict(evaluation.data_sources) if evaluation else {},
            coverage_assertion_ids=evaluation.coverage_assertion_ids if evaluation else (),
            payer_profile=evaluation.payer_profile if evaluation else None,
            cards=cards,
        )


def _draft_order_ids(bundle: Any) -> tuple[str, ...]:
    entries = bundle.get("entry") if isinstance(bundle, dict) else None
    ids: list[str] = []
    for entry in entries if isinstance(entries, list) else []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict):
            kind, rid = _short(resource.get("resourceType")), _short(resource.get("id"))
            if kind and rid:
                ids.append(f"{kind}/{rid}")
    return tuple(ids)


def call_note(request: Request) -> CallNote:
    """This call's note; a detached one when the middleware is not installed."""
    note = request.scope.get("state", {}).get(_STATE_KEY)
    return note if isinstance(note, CallNote) else CallNote(service_id="")


class AuditTrail:
    """Records every POST /cds-services/{id} through `sink` (which must not block)."""

    def __init__(self, app: ASGIApp, sink: Callable[[AuditRecord], None]) -> None:
        self.app = app
        self.sink = sink

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _SERVICE_CALL.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        note = CallNote(service_id=match[1])
        scope.setdefault("state", {})[_STATE_KEY] = note
        received_at = datetime.now(UTC)
        started = time.perf_counter()
        status = 500  # if the app fails before answering

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            self.sink(note.record(status, received_at, elapsed_ms))
