"""Lenient FHIR R4 parsing with fhir.resources' R4B models (R4-compatible for what we read).

Real EHR payloads carry members the models forbid (vendor fields, typos). We drop the members
the model calls "extra" and try once more; anything still invalid is skipped and reported,
never allowed to sink the request.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError


@dataclass(frozen=True)
class Skipped:
    """A resource that could not be read, described without PHI."""

    resource_type: str
    reason: str


def _drop(data: Any, loc: tuple[int | str, ...]) -> bool:
    node = data
    for part in loc[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    if isinstance(node, dict) and loc and loc[-1] in node:
        del node[loc[-1]]
        return True
    return False


@lru_cache(maxsize=256)  # bounded: unknown types raise and are not cached anyway
def _model_class(resource_type: str) -> type[Resource]:
    """The R4B model class for a resource type, looked up once (the lookup imports a module)."""
    return cast(type[Resource], get_fhir_model_class(resource_type))


def parse_resource(raw: Any) -> Resource | Skipped:
    """Parse one resource JSON object into its R4B model, tolerating unknown members."""
    if not isinstance(raw, dict) or not isinstance(raw.get("resourceType"), str):
        return Skipped("unknown", "not a FHIR resource (no resourceType)")
    resource_type = raw["resourceType"]
    try:
        model = _model_class(resource_type)
    except (KeyError, ValueError):
        return Skipped(resource_type, "unknown resource type")
    try:
        return model.model_validate(raw)
    except RecursionError:
        return Skipped(resource_type, "nested too deeply to read")
    except ValidationError as first:
        extras = [e["loc"] for e in first.errors() if e["type"] == "extra_forbidden"]
        if not extras or len(extras) != first.error_count():
            return Skipped(resource_type, _summary(first))
    cleaned = copy.deepcopy(raw)
    for loc in extras:
        _drop(cleaned, tuple(loc))
    try:
        return model.model_validate(cleaned)
    except RecursionError:
        return Skipped(resource_type, "nested too deeply to read")
    except ValidationError as second:
        return Skipped(resource_type, _summary(second))


def _summary(exc: ValidationError) -> str:
    # Field paths only: values may be PHI.
    paths = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})
    shown = ", ".join(paths[:3]) + (" ..." if len(paths) > 3 else "")
    return f"invalid {shown}"


def bundle_resources(bundle: dict[str, Any]) -> list[Any]:
    """The raw `entry[].resource` objects of a Bundle (no Bundle-level validation)."""
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return []  # absent, or malformed (a number, an object): nothing to read
    return [e.get("resource") for e in entries if isinstance(e, dict) and e.get("resource")]


def unreadable_entries(bundle: dict[str, Any]) -> bool:
    """True when `bundle_resources` would pass something over: `entry` present but not a list,
    or an entry that is not an object holding a resource."""
    entries = bundle.get("entry")
    if entries is None:
        return False
    if not isinstance(entries, list):
        return True
    return any(not isinstance(e, dict) or not isinstance(e.get("resource"), dict) for e in entries)


def ref_key(reference: str | None) -> str | None:
    """How references are matched to resources, whatever the host or version:
    "http://x/fhir/Condition/1/_history/2" -> "Condition/1"; "#c1" stays "#c1"."""
    if not reference:
        return None
    if reference.startswith("#"):
        return reference
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else None
