"""Error responses: every 4xx/5xx body is a FHIR OperationOutcome with a plain explanation.

CDS Hooks 2.0 leaves error bodies to the service ("MAY return other 4xx/5xx"); the 3.0 ballot
recommends OperationOutcome, which is what EHR integrators can read in their logs.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.cdshooks.models import describe_validation

log = logging.getLogger(__name__)

_ISSUE_CODE = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    413: "too-costly",
    415: "invalid",
    422: "invalid",
    412: "incomplete",
}


def outcome(status: int, diagnostics: str | None) -> JSONResponse:
    issue: dict[str, str] = {"severity": "error", "code": _ISSUE_CODE.get(status, "exception")}
    if diagnostics:
        issue["diagnostics"] = diagnostics
    return JSONResponse(
        {"resourceType": "OperationOutcome", "issue": [issue]},
        status_code=status,
        media_type="application/fhir+json" if status != 401 else "application/json",
        headers={"WWW-Authenticate": "Bearer"} if status == 401 else None,
    )


class ProblemError(Exception):
    """Raised by handlers to answer a 4xx with an explanation."""

    def __init__(self, status: int, diagnostics: str | None = None) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.diagnostics = diagnostics


def install(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(_: Request, exc: ProblemError) -> JSONResponse:
        return outcome(exc.status, exc.diagnostics)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return outcome(400, describe_validation(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else None
        response = outcome(exc.status_code, detail)
        allow = (exc.headers or {}).get("Allow")
        if exc.status_code == 405 and allow:
            response.headers["Allow"] = allow  # RFC 9110 §15.5.6: a 405 names what is allowed
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Never leak internals; the type name is enough to find it in the logs.
        log.error(
            "unhandled %s on %s %s",
            type(exc).__name__,
            request.method,
            request.url.path,
            exc_info=exc,
        )
        return outcome(500, "internal error")
