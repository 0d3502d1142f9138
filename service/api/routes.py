"""HTTP routes: discovery, service invocation, feedback. Transport only.

Each handler parses and authenticates, then hands over to the data layer and the pipeline.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from service.api.audit_trail import call_note
from service.api.errors import ProblemError
from service.api.feedback_items import store_feedback
from service.api.limits import shape_problem
from service.cdshooks.hooks import HookSpec, RequestProblem, hook_spec, parse_hook_request
from service.cdshooks.models import FeedbackRequest, describe_validation
from service.runtime import Runtime
from service.security.auth import Caller, Unauthorized

log = logging.getLogger("service.api")

router = APIRouter()

_LONG_DIGITS = re.compile(rb"[0-9]{19}")


class _FastJSONResponse(JSONResponse):
    """The hook answer serialised by orjson: same JSON, a fraction of the stdlib encoder's time."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def _authenticate(request: Request) -> Caller:
    runtime = _runtime(request)
    audience = runtime.settings.service_url(request.url.path)
    try:
        return await runtime.authenticator.authenticate(
            request.headers.get("authorization"), audience
        )
    except Unauthorized as exc:
        log.info("401 on %s: %s", request.url.path, exc)
        raise ProblemError(401) from None


async def _json_body(request: Request) -> Any:
    body = await request.body()
    if not body:
        raise ProblemError(400, "request body is empty; expected JSON")
    if _LONG_DIGITS.search(body) is None:  # orjson would turn integers past 64 bits into floats
        try:
            return orjson.loads(body)  # fast path: well-formed JSON, the usual case
        except orjson.JSONDecodeError:
            pass  # the standard decoder decides, with the messages the API has always given
    try:
        return json.loads(body, parse_float=_finite_float, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProblemError(
            400, f"request body is not valid JSON: {exc.__class__.__name__}"
        ) from None
    except RecursionError:
        # Nesting deeper than the decoder's stack: far past limits.max_json_depth.
        raise ProblemError(
            413, "request body too large: JSON nested deeper than limits.max_json_depth"
        ) from None
    except ValueError:
        # An integer longer than Python's conversion limit (4,300 digits), a non-finite number.
        raise ProblemError(
            400, "request body holds a number that is not finite or has too many digits"
        ) from None


def _finite_float(text: str) -> float:
    """JSON numbers only: 1e999 would become infinity and be sent back as null (FHIR JSON and
    CDS Hooks allow neither)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("a number too large to represent")
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _check_shape(raw: Any, runtime: Runtime) -> None:
    limits = runtime.settings.limits
    problem = shape_problem(raw, max_depth=limits.max_json_depth, max_items=limits.max_array_items)
    if problem is not None:
        raise ProblemError(413, f"request body too large: {problem}")


def _check_order_count(raw: dict[str, Any], hook: HookSpec, runtime: Runtime) -> None:
    context = raw.get("context")
    drafts = context.get(hook.orders_key) if isinstance(context, dict) else None
    entries = drafts.get("entry") if isinstance(drafts, dict) else None
    limit = runtime.settings.limits.max_draft_orders
    if isinstance(entries, list) and len(entries) > limit:
        raise ProblemError(413, f"more draft orders than limits.max_draft_orders ({limit})")


# Discovery: https://cds-hooks.hl7.org/2.0/#discovery
@router.get("/cds-services")
async def discovery(request: Request) -> JSONResponse:
    await _authenticate(request)
    return JSONResponse(_runtime(request).services.document.wire())


# Calling a CDS Service: https://cds-hooks.hl7.org/2.0/#calling-a-cds-service
@router.post("/cds-services/{service_id}")
async def invoke(service_id: str, request: Request) -> JSONResponse:
    started = time.perf_counter()
    runtime = _runtime(request)
    caller = await _authenticate(request)  # first: unauthenticated callers learn no service ids
    service = runtime.services.get(service_id)
    if service is None:
        raise ProblemError(404, f"no CDS service with id {service_id!r}")
    note = call_note(request)  # the audit record of this call
    note.client_iss = caller.issuer
    raw = await _json_body(request)
    note.read_request(raw)
    if isinstance(raw, dict):
        _check_shape(raw, runtime)
        _check_order_count(raw, hook_spec(service.hook), runtime)
    try:
        hook_request, _ = parse_hook_request(raw, service)
    except RequestProblem as exc:
        raise ProblemError(400, str(exc)) from None
    size = len(await request.body())  # read once already; starlette keeps it
    evaluation = await runtime.answer(service, hook_request, caller, size=size)
    note.evaluation = evaluation
    # Most calls are out of scope (an EHR calls for every order signed): the audit has them.
    log.log(
        logging.INFO if evaluation.in_scope else logging.DEBUG,
        "hook=%s service=%s cards=%d topics=%s ms=%.1f",
        hook_request.hook,
        service_id,
        len(evaluation.response.cards),
        ",".join(c.topic for c in evaluation.issued) or "-",
        (time.perf_counter() - started) * 1000,
    )
    return _FastJSONResponse(evaluation.response.wire())


# Feedback: https://cds-hooks.hl7.org/2.0/#feedback
@router.post("/cds-services/{service_id}/feedback")
async def feedback(service_id: str, request: Request) -> JSONResponse:
    runtime = _runtime(request)
    caller = await _authenticate(request)  # first: unauthenticated callers learn no service ids
    if runtime.services.get(service_id) is None:
        raise ProblemError(404, f"no CDS service with id {service_id!r}")
    raw = await _json_body(request)
    if not isinstance(raw, dict):
        raise ProblemError(400, "request body must be a JSON object with a feedback array")
    _check_shape(raw, runtime)
    items = raw.get("feedback")
    limit = runtime.settings.limits.max_feedback_items
    if isinstance(items, list) and len(items) > limit:
        raise ProblemError(413, f"more feedback items than limits.max_feedback_items ({limit})")
    try:
        parsed = FeedbackRequest.model_validate(raw)
    except ValidationError as exc:
        raise ProblemError(400, describe_validation(exc.errors())) from None
    # Answered only once the items are committed (503 if the database cannot take them).
    stored = await store_feedback(request, service_id, caller.issuer, parsed)
    return JSONResponse({"received": len(parsed.feedback), **stored})
