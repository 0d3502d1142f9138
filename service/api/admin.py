"""Operations endpoints: health (open, no PHI) and override analytics (JWT, like the hooks)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from service.api.errors import ProblemError
from service.api.feedback_items import persistence
from service.api.routes import _authenticate
from service.storage.report import build_report, period
from service.storage.service import utc_now

log = logging.getLogger("service.api")

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    """200 while hooks can be answered; storage "degraded" means audit records are queuing
    (or being dropped, see auditDropped) and feedback is refused with 503."""
    storage = await persistence(request).health()
    body = {"status": "ok" if storage.ok else "degraded", "storage": storage.wire()}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.get("/analytics/overrides")
async def override_analytics(
    request: Request, since: str | None = None, until: str | None = None
) -> JSONResponse:
    caller = await _authenticate(request)
    try:
        start, end = period(since, until, utc_now())
    except ValueError as exc:
        raise ProblemError(400, f"since/until: {exc}") from None
    # CRD: access to the audit data is itself logged.
    log.info("override analytics read by issuer %s (%s to %s)", caller.issuer, start, end)
    store = persistence(request)
    try:
        report = await asyncio.to_thread(build_report, store.storage, start, end)
    except (SQLAlchemyError, OSError) as exc:
        log.error("analytics unavailable (%s)", type(exc).__name__)
        raise ProblemError(503, "analytics storage unavailable; retry later") from None
    return JSONResponse(report.wire(), headers={"Cache-Control": "no-store"})
