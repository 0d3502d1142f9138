"""Offline evaluation for the `evaluate` command: prefetch only, no network, no auth.

Also reads scenario files (fhir_fixtures/scenarios/*.json: a request wrapped with its title,
`today` and expectations) so a reviewer can run one and compare with what it expects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from service.cdshooks.discovery import ServiceRegistry
from service.cdshooks.hooks import RequestProblem, parse_hook_request
from service.config import Settings
from service.crd.extension import COVERAGE_INFO_URL
from service.pipeline import Knowledge
from service.runtime import Runtime
from service.security.auth import Authenticator, Caller


@dataclass(frozen=True)
class RequestFile:
    """A plain CDS Hooks request, or a scenario file (then `scenario` holds its other fields)."""

    request: dict[str, Any]
    scenario: dict[str, Any] | None = None

    @property
    def today(self) -> date | None:
        value = (self.scenario or {}).get("today")
        return date.fromisoformat(value) if isinstance(value, str) else None


def read_request_file(path: Path) -> RequestFile:
    try:
        raw = json.loads(path.read_bytes())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(raw, dict):
        raise ValueError("the file must hold a JSON object")
    if isinstance(raw.get("request"), dict):  # a scenario file wraps the request
        return RequestFile(raw["request"], {k: v for k, v in raw.items() if k != "request"})
    return RequestFile(raw)


async def evaluate_file(
    settings: Settings, path: Path, service_id: str | None, today: date | None = None
) -> dict[str, Any]:
    """Evaluate a request or scenario file; `today` defaults to the scenario's, else the clock."""
    file = read_request_file(path)  # blocking read: CLI only, one small local file
    services = ServiceRegistry()
    named = file.request.get("hook") if isinstance(file.request, dict) else None
    service = (
        services.get(service_id)
        if service_id
        else next((s for s in services.document.services if s.hook == named), None)
    )
    if service is None:
        raise ValueError(f"no service answers hook {named!r}")
    try:  # the same parse and checks as over HTTP
        request, _ = parse_hook_request(file.request, service)
    except RequestProblem as exc:
        raise ValueError(str(exc)) from None
    async with httpx.AsyncClient() as http:
        runtime = Runtime(
            settings,
            Knowledge.load(settings.rules.extra_data_dir),
            services,
            Authenticator(settings),
            http,
        )
        as_of = today or file.today
        if as_of is not None:
            runtime.today = lambda: as_of
        # No fhirServer access offline: the caller has an empty allowlist.
        evaluation = await runtime.answer(
            service, request, Caller(None, None, ()), size=0
        )  # one call, nothing else waits on this loop: evaluated inline
    return evaluation.response.wire()


def scenario_resources(request: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every resource in a request's prefetch values (Bundles unpacked, no duplicates).

    This is what a FHIR server must hold for the fetch path to see what the prefetch shows.
    """
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for value in (request.get("prefetch") or {}).values():
        if not isinstance(value, dict):
            continue
        if value.get("resourceType") == "Bundle":
            items = [e.get("resource") for e in value.get("entry") or [] if isinstance(e, dict)]
        else:
            items = [value]
        for item in items:
            if not isinstance(item, dict) or item.get("resourceType") == "OperationOutcome":
                continue
            found.setdefault((str(item.get("resourceType")), str(item.get("id"))), item)
    return list(found.values())


def _extension_value(extension: Mapping[str, Any]) -> Any:
    for key, value in extension.items():
        if not key.startswith("value"):
            continue
        if key == "valueReference":
            return value.get("reference")
        if key == "valueCoding":
            return value.get("code")
        if key == "valueCodeableConcept":
            return value.get("text") or next((c.get("code") for c in value.get("coding", [])), None)
        return value
    return None


def coverage_summary(response: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Order ref -> CRD coverage-information sub-extension values, from the systemActions.

    A sub-extension that occurs once gives its value (a Coding its code, a CodeableConcept its
    text, a Reference its reference); one that repeats gives the list of values.
    """
    summary: dict[str, dict[str, Any]] = {}
    for action in response.get("systemActions", []):
        resource = action.get("resource") or {}
        ref = f"{resource.get('resourceType')}/{resource.get('id')}"
        for ext in resource.get("extension", []):
            if ext.get("url") != COVERAGE_INFO_URL:
                continue
            values = summary.setdefault(ref, {})
            for sub in ext.get("extension", []):
                name, value = sub.get("url"), _extension_value(sub)
                if name not in values:
                    values[name] = value
                elif isinstance(values[name], list):
                    values[name].append(value)
                else:
                    values[name] = [values[name], value]
    return summary


def render_scenario(file: RequestFile, response: Mapping[str, Any], as_of: date) -> str:
    """The scenario's title and expectations next to what the service answered."""
    scenario = file.scenario or {}
    expect = scenario.get("expect") or {}
    got_topics = sorted(c["source"].get("topic", {}).get("code", "?") for c in response["cards"])
    lines = [
        f"Scenario: {scenario.get('title', '?')}",
        f"    topic: {scenario.get('topic', '?')}   kind: {scenario.get('kind', '?')}   "
        f"today: {as_of.isoformat()}",
        "",
        render_text(dict(response)).rstrip(),
        "",
    ]
    wanted = expect.get("topics")
    if wanted is not None:
        verdict = "as expected" if wanted == got_topics else f"EXPECTED {', '.join(wanted) or '-'}"
        lines.append(f"Card topics: {', '.join(got_topics) or '-'}   ({verdict})")
    actual = coverage_summary(response)
    for ref, values in (expect.get("coverage") or {}).items():
        got = None if values is None else {k: actual.get(ref, {}).get(k) for k in values}
        if values is None:
            ok = ref not in actual
        else:
            ok = ref in actual and got == values
        lines.append(
            f"Coverage {ref}: {'as expected' if ok else 'EXPECTED ' + json.dumps(values)}"
            + ("" if ok else f", got {json.dumps(actual.get(ref))}")
        )
    return "\n".join(lines) + "\n"


def render_text(response: dict[str, Any]) -> str:
    """A terminal rendering of cards and system actions, for people reviewing rules."""
    lines: list[str] = []
    cards = response.get("cards", [])
    if not cards:
        lines.append("No cards.")
    for card in cards:
        topic = card["source"].get("topic", {}).get("code", "?")
        lines.append(f"[{card['indicator'].upper()}] {card['summary']}")
        lines.append(f"    topic: {topic}   source: {card['source']['label']}")
        for suggestion in card.get("suggestions", []):
            kinds = ", ".join(a["type"] for a in suggestion.get("actions", []))
            lines.append(f"    suggestion: {suggestion['label']} ({kinds})")
        lines.append("")
    for action in response.get("systemActions", []):
        resource = action.get("resource", {})
        lines.append(
            f"system action: {action['type']} {resource.get('resourceType')}/{resource.get('id')}"
        )
        for ext in resource.get("extension", []):
            if ext.get("url") == COVERAGE_INFO_URL:
                values = {
                    sub["url"]: next((v for k, v in sub.items() if k.startswith("value")), None)
                    for sub in ext.get("extension", [])
                }
                for key in ("covered", "pa-needed", "doc-needed", "info-needed"):
                    if key in values:
                        lines.append(f"    {key}: {values[key]}")
    return "\n".join(lines).rstrip() + "\n"
