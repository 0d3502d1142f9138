"""Gather the patient data a hook call needs: prefetch first, the FHIR server for the rest.

CDS Hooks 2.0 prefetch semantics (https://cds-hooks.hl7.org/2.0/#prefetch-template):
- key present with a resource or Bundle: use it (a `next` link means the client paginated);
- key present with ``null``: the client has no data. Do not refetch;
- key present with an OperationOutcome: the client's prefetch failed. Fetch it ourselves if we
  may, otherwise record a gap;
- key absent: fetch it from ``fhirServer`` (when allowed), otherwise record a gap.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import httpx
from fhir.resources.R4B.resource import Resource

from service.cdshooks.models import HookRequest
from service.config import FhirAccessSettings, FhirServerAllowance
from service.facts.model import DataGap
from service.fhir.parse import Skipped, bundle_resources, parse_resource

R = TypeVar("R", bound=Resource)

KeySource = Literal["prefetch", "fetched", "null", "unavailable"]

_TOKEN = re.compile(r"\{\{\s*([^}]+?)\s*\}\}")


@dataclass
class GatheredData:
    """Parsed resources per prefetch key, where each came from, and what is missing."""

    resources: dict[str, list[Resource]] = field(default_factory=dict)
    provenance: dict[str, KeySource] = field(default_factory=dict)
    gaps: list[DataGap] = field(default_factory=list)

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


def fill_template(template: str, context: Mapping[str, Any], user_id: str | None) -> str | None:
    """Replace 2.0 prefetch tokens; None if a token has no value (the key cannot be fetched)."""
    values: dict[str, str] = {
        f"context.{k}": v for k, v in context.items() if isinstance(v, str) and v
    }
    if user_id and "/" in user_id:
        kind, ident = user_id.split("/", 1)
        values[f"user{kind}Id"] = ident
    missing = False

    def substitute(match: re.Match[str]) -> str:
        nonlocal missing
        value = values.get(match.group(1))
        if value is None:
            missing = True
            return ""
        return value

    filled = _TOKEN.sub(substitute, template)
    return None if missing else filled


def is_operation_outcome(value: Any) -> bool:
    return isinstance(value, dict) and value.get("resourceType") == "OperationOutcome"


def parse_key(key: str, value: dict[str, Any], data: GatheredData) -> list[dict[str, Any]]:
    """Parse a prefetch/fetch result into `data.resources[key]`; return `next` link objects."""
    raws = bundle_resources(value) if value.get("resourceType") == "Bundle" else [value]
    parsed: list[Resource] = []
    skipped: list[Skipped] = []
    for raw in raws:
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
    links = value.get("link") or [] if value.get("resourceType") == "Bundle" else []
    return [link for link in links if isinstance(link, dict) and link.get("relation") == "next"]


def gather_prefetch(
    templates: Mapping[str, str], prefetch: Mapping[str, dict[str, Any] | None] | None
) -> tuple[GatheredData, list[str]]:
    """Take what the client prefetched; return the data and the keys still to fetch."""
    data = GatheredData()
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


async def gather(
    *,
    templates: Mapping[str, str],
    request: HookRequest,
    allowance: FhirServerAllowance | None,
    http: httpx.AsyncClient,
    settings: FhirAccessSettings,
) -> GatheredData:
    """Prefetch, then fetch what is missing from the (allowlisted) FHIR server."""
    data, to_fetch = gather_prefetch(templates, request.prefetch)
    for key in to_fetch:
        if key in data.provenance:
            continue  # client paginated: keep the first page (following `next` comes later)
        data.provenance[key] = "unavailable"
        data.resources.setdefault(key, [])
        data.gaps.append(DataGap(key, "not prefetched and the FHIR server was not queried"))
    return data
