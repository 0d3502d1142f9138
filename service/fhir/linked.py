"""The CCTA reports' result Observations that prefetch and fetch did not bring: read them by id.

The discovery templates stay inside the CDS Hooks 2.0 recommended query subset, so they cannot
`_include` a report's results. `cctaResults` (US Core imaging results) finds most of them; a
result filed without the imaging category is found here instead: the `result` references of the
reports gathered under `cctaReports`, then the `hasMember` references of those Observations (up
to `MAX_LEVELS` levels), that are neither contained in the report nor already gathered, are read
with `Observation?_id=a,b,...` from the call's allowlisted FHIR server.

Only references that name an Observation on that server are read: relative `Observation/x`, or
an absolute URL under the same base. A reference to any other host is never contacted (SSRF,
README "Security model"). Whatever stays unread is reported as a count and a plain reason, never
with patient data.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.resource import Resource

from service.fhir.client import FhirClient, FhirEndpoint, FhirFetchError
from service.fhir.parse import bundle_resources, parse_resource, ref_key

log = logging.getLogger(__name__)

MAX_LEVELS = 3  # the report's results, their members, the members' members
CHUNK_SIZE = 50  # ids per `_id` search: keeps the URL short on every server
# https://hl7.org/fhir/R4/datatypes.html#id
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# A void report's results are read by no check: missing ones are no gap.
_VOID_REPORT_STATUSES = frozenset({"entered-in-error", "cancelled"})


@dataclass
class LinkedResults:
    """What resolving the linked results produced: the Observations read and what was not."""

    found: list[Observation] = field(default_factory=list)
    unresolved: set[str] = field(default_factory=set)  # reference keys, for counting only
    pending: set[str] = field(default_factory=set)  # being read now (unresolved if cut short)
    causes: list[str] = field(default_factory=list)  # plain reasons, no patient data

    def fail(self, keys: Iterable[str], cause: str) -> None:
        self.unresolved.update(keys)
        if cause not in self.causes:
            self.causes.append(cause)

    def gap_reason(self) -> str | None:
        """One plain sentence for the `cctaResults` gap, or None when everything was read."""
        if not self.unresolved:
            return None
        return (
            f"{len(self.unresolved)} result(s) of a CCTA report could not be read"
            f" ({'; '.join(self.causes)})"
        )


@dataclass(frozen=True)
class _Link:
    """One reference to follow, with the `contained` resources it may point into."""

    reference: str
    contained: Mapping[str, Resource]


def observation_id(reference: str, endpoint: FhirEndpoint | None) -> str | None:
    """The id of the Observation a reference names on the call's FHIR server, else None.

    `Observation/x` (optionally `/_history/n`) is on the server by definition; an absolute URL
    only when it lies under the allowlisted base URL (same scheme, host, port and base path).
    """
    path = reference.split("/_history/", 1)[0]
    if "://" in path:
        if endpoint is None:
            return None
        try:
            url = httpx.URL(path)
            endpoint.check_owned(url)
        except (httpx.InvalidURL, FhirFetchError):
            return None
        path = url.path[len(httpx.URL(endpoint.base_url + "/").path) :]
    kind, _, ident = path.partition("/")
    return ident if kind == "Observation" and _ID.fullmatch(ident) else None


def _members(observation: Observation, contained: Mapping[str, Resource]) -> Iterator[_Link]:
    for member in observation.hasMember or []:
        if member is not None and member.reference:
            yield _Link(member.reference, contained)


def _contained(resource: DiagnosticReport | Observation) -> dict[str, Resource]:
    return {f"#{c.id}": c for c in resource.contained or [] if c.id}


def _report_links(reports: Iterable[Resource]) -> list[_Link]:
    links = []
    for report in reports:
        if isinstance(report, DiagnosticReport) and report.status not in _VOID_REPORT_STATUSES:
            contained = _contained(report)
            links += [_Link(r.reference, contained) for r in report.result or [] if r.reference]
    return links


async def resolve_linked_results(
    reports: Sequence[Resource],
    gathered: Mapping[str, Observation],
    server: tuple[FhirClient | None, str],
    max_pages: int,
    out: LinkedResults,
) -> None:
    """Read the reports' missing results (and their members) into `out`. Never raises.

    `gathered`: every Observation already at hand, by `Observation/id`. `server`: the client of
    the call's allowlisted FHIR server, or None and why it may not be read. The caller bounds
    the time this takes; when it cuts it short, `out.pending` holds what was being read.
    """
    client, refusal = server
    endpoint = client.endpoint if client else None
    known = dict(gathered)
    seen: set[str] = set()
    level = _report_links(reports)
    for _ in range(MAX_LEVELS):
        members: list[_Link] = []
        wanted: dict[str, str] = {}  # id -> reference key
        for link in level:
            local = link.reference.startswith("#")
            key = (
                f"{id(link.contained)}{link.reference}"
                if local
                else ref_key(link.reference) or link.reference
            )
            if key in seen:
                continue
            seen.add(key)
            target = link.contained.get(link.reference) if local else known.get(key)
            if isinstance(target, Observation):
                members += _members(target, link.contained)
            elif local:
                out.fail([key], "a reference names no Observation in the report")
            elif (ident := observation_id(link.reference, endpoint)) is not None:
                wanted[ident] = key
            elif client is None:
                out.fail([key], refusal)
            else:
                out.fail(
                    [key], "a reference is not to an Observation on the FHIR server; not followed"
                )
        if not wanted:
            level = members
            continue
        if client is None:
            out.fail(wanted.values(), refusal)
            level = members
            continue
        out.pending = set(wanted.values())
        observations, failure = await _read_by_id(client, sorted(wanted), max_pages)
        for observation in observations:
            key = f"Observation/{observation.id}"
            if observation.id in wanted and key not in known:
                known[key] = observation
                out.found.append(observation)
                members += _members(observation, _contained(observation))
        out.pending = set()
        missing = [key for key in wanted.values() if key not in known]
        if missing:
            out.fail(missing, failure or "the FHIR server did not return them")
        level = members


async def _read_by_id(
    client: FhirClient, ids: list[str], max_pages: int
) -> tuple[list[Observation], str | None]:
    """`Observation?_id=...` in chunks; what was read and why a chunk failed (if one did)."""
    found: list[Observation] = []
    failure: str | None = None
    for start in range(0, len(ids), CHUNK_SIZE):
        try:
            found += await _search(client, ids[start : start + CHUNK_SIZE], max_pages)
        except FhirFetchError as exc:
            log.info("FHIR cctaResults: linked results not read (%s)", exc.reason)
            failure = exc.reason
    return found, failure


async def _search(client: FhirClient, ids: list[str], max_pages: int) -> list[Observation]:
    url = client.endpoint.url_for(f"Observation?_id={','.join(ids)}&_count={len(ids)}")
    found: list[Observation] = []
    for _ in range(max_pages):
        body: Any = await client.get(url, key="cctaResults", read=False)
        if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
            raise FhirFetchError("FHIR server answered a search with something other than a Bundle")
        found += [
            r for r in map(parse_resource, bundle_resources(body)) if isinstance(r, Observation)
        ]
        link = next(
            (
                x.get("url")
                for x in body.get("link") or []
                if isinstance(x, dict) and x.get("relation") == "next"
            ),
            None,
        )
        if not link:
            return found
        url = client.endpoint.follow(str(link))
    return found
