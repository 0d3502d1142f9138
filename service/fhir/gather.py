"""Gather the patient data a hook call needs: prefetch first, the FHIR server for the rest.

CDS Hooks 2.0 prefetch semantics (https://cds-hooks.hl7.org/2.0/#prefetch-template):
- key present with a resource or Bundle: use it (a `next` link means the client paginated);
- key present with ``null``: the client has no data. Do not refetch;
- key present with an OperationOutcome: the client's prefetch failed. Fetch it ourselves if we
  may, otherwise record a gap;
- key absent: fetch it from ``fhirServer`` (when allowed), otherwise record a gap.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.resource import Resource

from service.cdshooks.models import HookRequest
from service.config import FhirAccessSettings, FhirServerAllowance
from service.fhir.client import FhirClient, FhirEndpoint, FhirFetchError, is_read
from service.fhir.gaps import DataGap
from service.fhir.linked import LinkedResults, resolve_linked_results
from service.fhir.parse import Skipped, bundle_resources, parse_resource, unreadable_entries

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Resource)

KeySource = Literal["prefetch", "fetched", "null", "unavailable"]

_TOKEN = re.compile(r"\{\{\s*([^}]+?)\s*\}\}")

# The CCTA reports, and the key their result Observations are added under when read by id.
REPORTS_KEY = "cctaReports"
RESULTS_KEY = "cctaResults"


@dataclass
class GatheredData:
    """Parsed resources per prefetch key, where each came from, and what is missing."""

    resources: dict[str, list[Resource]] = field(default_factory=dict)
    provenance: dict[str, KeySource] = field(default_factory=dict)
    gaps: list[DataGap] = field(default_factory=list)
    # Which raw resources are worth validating into models (None: all). Validation is most of
    # the cost of a call; a problem list of 200 entries holds a handful the checks can read.
    keep: Callable[[dict[str, Any]], bool] | None = None
    passed_over: int = 0  # resources not validated because `keep` said no

    def of_type(self, model: type[R]) -> list[R]:
        """Every parsed resource of a model class, across keys, without duplicates (by id)."""
        seen: set[str] = set()
        found: list[R] = []
        for resources in self.resources.values():
            for res in resources:
                if not isinstance(res, model):
                    continue
                key = res.id or f"#{id(res)}"
                if key not in seen:
                    seen.add(key)
                    found.append(res)
        return found


# CDS Hooks 2.0 prefetch tokens (https://cds-hooks.hl7.org/2.0/#prefetch-tokens): the context
# fields order-sign/order-select mark "Prefetch Token = Yes", and the user identifier tokens.
CONTEXT_TOKENS = ("userId", "patientId", "encounterId")
USER_TOKEN_KINDS = ("Practitioner", "PractitionerRole", "Patient", "RelatedPerson")


def fill_template(template: str, context: Mapping[str, Any], user_id: str | None) -> str | None:
    """Replace 2.0 prefetch tokens; None if a token is unknown or has no value (cannot fetch).

    Values are percent-encoded: they are data, and an id like `../x` or `1&_id=2` must not
    change the URL's meaning.
    """
    values: dict[str, str] = {
        f"context.{name}": context[name]
        for name in CONTEXT_TOKENS
        if isinstance(context.get(name), str) and context[name]
    }
    if user_id and "/" in user_id:
        kind, ident = user_id.split("/", 1)
        if kind in USER_TOKEN_KINDS and ident:
            values[f"user{kind}Id"] = ident
    missing = False

    def substitute(match: re.Match[str]) -> str:
        nonlocal missing
        value = values.get(match.group(1))
        if value is None or value in (".", ".."):
            missing = True
            return ""
        return quote(value, safe="/" if match.group(1) == "context.userId" else "")

    filled = _TOKEN.sub(substitute, template)
    return None if missing else filled


def is_operation_outcome(value: Any) -> bool:
    return isinstance(value, dict) and value.get("resourceType") == "OperationOutcome"


def parse_key(key: str, value: dict[str, Any], data: GatheredData) -> list[dict[str, Any]]:
    """Parse a prefetch/fetch result into `data.resources[key]`; return `next` link objects."""
    is_bundle = value.get("resourceType") == "Bundle"
    if is_bundle and unreadable_entries(value):
        # An answer whose entries cannot be read says nothing about the patient: a gap, never
        # "no resources" (which would be read as "no coverage", "no CCTA" ...).
        data.gaps.append(DataGap(key, "the search answer's entries could not be read"))
    raws = bundle_resources(value) if is_bundle else [value]
    parsed: list[Resource] = []
    skipped: list[Skipped] = []
    for raw in raws:
        if data.keep is not None and isinstance(raw, dict) and not data.keep(raw):
            data.passed_over += 1
            continue
        result = parse_resource(raw)
        if isinstance(result, Skipped):
            skipped.append(result)
        elif result.get_resource_type() != "OperationOutcome":
            parsed.append(result)
    data.resources.setdefault(key, []).extend(parsed)
    if skipped:
        kinds = sorted({s.resource_type for s in skipped})
        data.gaps.append(
            DataGap(key, f"{len(skipped)} {'/'.join(kinds)} resource(s) could not be read")
        )
    links = value.get("link") if value.get("resourceType") == "Bundle" else None
    if not isinstance(links, list):
        return []
    return [link for link in links if isinstance(link, dict) and link.get("relation") == "next"]


def gather_prefetch(
    templates: Mapping[str, str],
    prefetch: Mapping[str, dict[str, Any] | None] | None,
    keep: Callable[[dict[str, Any]], bool] | None = None,
) -> tuple[GatheredData, list[str]]:
    """Take what the client prefetched; return the data and the keys still to fetch."""
    data = GatheredData(keep=keep)
    to_fetch: list[str] = []
    prefetch = prefetch or {}
    for key in templates:
        if key not in prefetch:
            to_fetch.append(key)
            continue
        value = prefetch[key]
        if value is None:
            data.provenance[key] = "null"
            data.resources[key] = []
        elif is_operation_outcome(value):
            to_fetch.append(key)
        else:
            data.provenance[key] = "prefetch"
            if parse_key(key, value, data):
                to_fetch.append(key)  # paginated by the client: the rest is on the server
    return data, to_fetch


@dataclass(frozen=True)
class _Plan:
    """One key to fetch: where to start and whether it continues a client-paginated prefetch."""

    key: str
    url: httpx.URL
    read: bool
    continuation: bool


def _lead(key: str, prefetch: Mapping[str, Any], continuation: bool) -> str:
    """How a key came to need fetching, in plain words, to start its gap reason."""
    if continuation:
        return "only part was prefetched"
    if is_operation_outcome(prefetch.get(key)):
        return "the EHR's prefetch failed"
    return "not prefetched"


def _endpoint(
    request: HookRequest, allowance: FhirServerAllowance | None
) -> tuple[FhirEndpoint | None, str]:
    """The FHIR server this call may read, or None and why not (for the gap reason)."""
    if not request.fhirServer:
        return None, "the request named no FHIR server"
    if allowance is None:
        return None, "the FHIR server is not on this client's allowlist"
    token = request.fhirAuthorization.access_token if request.fhirAuthorization else None
    if token is None and not allowance.allow_without_token:
        return None, "the request carried no FHIR access token"
    return FhirEndpoint(allowance.base_url, token), ""


def _mark_failed(data: GatheredData, key: str, pages_read: int, reason: str) -> None:
    """Record a gap; keep what was already read (provenance then stays as it was)."""
    if pages_read:
        data.gaps.append(DataGap(key, f"only part could be read: {reason}"))
        return
    data.provenance[key] = "unavailable"
    data.resources.setdefault(key, [])
    data.gaps.append(DataGap(key, reason))


async def _fetch_key(
    plan: _Plan,
    client: FhirClient,
    data: GatheredData,
    max_pages: int,
    pages: dict[str, int],
) -> None:
    """Read a key page by page into `data`, counting pages in `pages` as they arrive."""
    url = plan.url
    while True:
        if pages[plan.key] >= max_pages:
            data.gaps.append(
                DataGap(
                    plan.key, f"more than {max_pages} page(s) of results; the rest was not read"
                )
            )
            return
        body = await client.get(url, key=plan.key, read=plan.read)
        if body is None:  # a read that found nothing: no data, not a gap
            data.provenance[plan.key] = "fetched"
            data.resources.setdefault(plan.key, [])
            return
        if not plan.read and body["resourceType"] != "Bundle":
            raise FhirFetchError("FHIR server answered a search with something other than a Bundle")
        links = parse_key(plan.key, body, data)
        pages[plan.key] += 1
        data.provenance.setdefault(plan.key, "fetched")
        if not links:
            return
        url = client.endpoint.follow(str(links[0].get("url", "")))


async def _fetch_all(
    plans: list[_Plan],
    client: FhirClient,
    data: GatheredData,
    settings: FhirAccessSettings,
    deadline: float,
) -> None:
    """All keys in parallel under ONE deadline; a key still running at the deadline is a gap."""
    pages = {p.key: 1 if p.continuation else 0 for p in plans}

    async def fetch(plan: _Plan) -> None:
        try:
            await _fetch_key(plan, client, data, settings.max_pages, pages)
        except FhirFetchError as exc:
            log.info("FHIR %s: gap (%s)", plan.key, exc.reason)
            _mark_failed(data, plan.key, pages[plan.key], exc.reason)
        except Exception as exc:  # a fetch must degrade the answer, never break it
            log.error("FHIR %s: unexpected %s while fetching", plan.key, type(exc).__name__)
            _mark_failed(data, plan.key, pages[plan.key], "an unexpected error stopped reading it")

    tasks = {asyncio.create_task(fetch(plan)): plan for plan in plans}
    _, pending = await asyncio.wait(tasks, timeout=max(deadline - time.monotonic(), 0))
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in pending:
        plan = tasks[task]
        log.info("FHIR %s: deadline reached after %d page(s)", plan.key, pages[plan.key])
        _mark_failed(
            data,
            plan.key,
            pages[plan.key],
            f"FHIR server did not answer within {settings.deadline_seconds:g} s",
        )


async def gather(
    *,
    templates: Mapping[str, str],
    request: HookRequest,
    allowance: FhirServerAllowance | None,
    http: httpx.AsyncClient,
    settings: FhirAccessSettings,
    keep: Callable[[dict[str, Any]], bool] | None = None,
    offload: bool = True,
) -> GatheredData:
    """Prefetch, then fetch what is missing from the (allowlisted) FHIR server, then read the
    CCTA reports' results that neither brought. One deadline for all of it. Never raises.

    Spec: https://cds-hooks.hl7.org/2.0/#prefetch-template ("the CDS Service's responsibility
    to check prefetched data against its template ... and to programmatically retrieve any
    additional necessary data").
    """
    deadline = time.monotonic() + settings.deadline_seconds
    # Validating the prefetch is CPU-bound: off the event loop (unless the caller knows it is
    # small), so other calls go on meanwhile.
    if offload:
        data, to_fetch = await asyncio.to_thread(gather_prefetch, templates, request.prefetch, keep)
    else:
        data, to_fetch = gather_prefetch(templates, request.prefetch, keep)
    endpoint, refusal = _endpoint(request, allowance)
    if to_fetch:
        if request.fhirServer and allowance is None:
            data.gaps.append(
                DataGap("fhirServer", "the FHIR server is not on this client's allowlist")
            )
        plans = _plans(to_fetch, templates, request, (endpoint, refusal), data)
        if plans and endpoint is not None:
            await _fetch_plans(plans, endpoint, http, settings, data, deadline)
    if RESULTS_KEY in templates and data.resources.get(REPORTS_KEY):
        client = FhirClient(http, endpoint, settings.max_response_bytes) if endpoint else None
        await _read_linked_results(data, client, refusal, settings, deadline)
    return data


def _plans(
    to_fetch: list[str],
    templates: Mapping[str, str],
    request: HookRequest,
    server: tuple[FhirEndpoint | None, str],
    data: GatheredData,
) -> list[_Plan]:
    """What to fetch for the keys prefetch did not answer; a gap for each that cannot be."""
    endpoint, refusal = server
    prefetch: Mapping[str, Any] = request.prefetch or {}
    user_id = request.context.get("userId")
    plans: list[_Plan] = []
    for key in to_fetch:
        continuation = key in data.provenance  # the client paginated: the rest is on the server
        lead = _lead(key, prefetch, continuation)
        try:
            if endpoint is None:
                raise FhirFetchError(refusal)
            if continuation:
                link = next_link(prefetch[key])
                plans.append(_Plan(key, endpoint.follow(link), read=False, continuation=True))
                continue
            query = fill_template(
                templates[key], request.context, user_id if isinstance(user_id, str) else None
            )
            if query is None:
                raise FhirFetchError("the request lacks a value its query needs")
            plans.append(_Plan(key, endpoint.url_for(query), is_read(query), continuation=False))
        except FhirFetchError as exc:
            reason = f"{lead}, and {exc.reason}"
            if continuation:  # the prefetched page is kept
                data.gaps.append(DataGap(key, reason))
            else:
                _mark_failed(data, key, 0, reason)
    return plans


async def _fetch_plans(
    plans: list[_Plan],
    endpoint: FhirEndpoint,
    http: httpx.AsyncClient,
    settings: FhirAccessSettings,
    data: GatheredData,
    deadline: float,
) -> None:
    started = time.perf_counter()
    client = FhirClient(http, endpoint, settings.max_response_bytes)
    await _fetch_all(plans, client, data, settings, deadline)
    log.info(
        "FHIR fetch: %d key(s), %d resource(s), %d gap(s), %.0f ms",
        len(plans),
        sum(len(data.resources.get(p.key, [])) for p in plans),
        len(data.gaps),
        (time.perf_counter() - started) * 1000,
    )


async def _read_linked_results(
    data: GatheredData,
    client: FhirClient | None,
    refusal: str,
    settings: FhirAccessSettings,
    deadline: float,
) -> None:
    """Add the CCTA reports' missing results under `cctaResults`, in the time left; one gap
    (with a count, no patient data) for what stays unread."""
    remaining = deadline - time.monotonic()
    if client is not None and remaining <= 0:
        client, refusal = None, f"no time was left within {settings.deadline_seconds:g} s"
    gathered = {f"Observation/{o.id}": o for o in data.of_type(Observation) if o.id}
    out = LinkedResults()
    try:
        async with asyncio.timeout(remaining if client is not None else None):
            await resolve_linked_results(
                data.resources[REPORTS_KEY], gathered, (client, refusal), settings.max_pages, out
            )
    except TimeoutError:
        log.info("FHIR %s: deadline reached reading linked results", RESULTS_KEY)
        out.fail(out.pending, f"FHIR server did not answer within {settings.deadline_seconds:g} s")
    except Exception as exc:  # reading more must degrade the answer, never break it
        log.error("FHIR %s: unexpected %s reading linked results", RESULTS_KEY, type(exc).__name__)
        out.fail(out.pending, "an unexpected error stopped reading them")
    if out.found:
        data.resources.setdefault(RESULTS_KEY, []).extend(out.found)
        data.provenance.setdefault(RESULTS_KEY, "fetched")
        log.info("FHIR %s: %d linked result(s) read by id", RESULTS_KEY, len(out.found))
    reason = out.gap_reason()
    if reason:
        data.gaps.append(DataGap(RESULTS_KEY, reason))


def next_link(bundle: Any) -> str:
    """The `next` paging link of a searchset Bundle ('' when it has none)."""
    links = bundle.get("link") if isinstance(bundle, dict) else None
    for link in links if isinstance(links, list) else []:
        if isinstance(link, dict) and link.get("relation") == "next":
            return str(link.get("url") or "")
    return ""
