"""Offline evaluation for the `evaluate` command: prefetch only, no network, no auth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from service.cdshooks.discovery import ServiceRegistry
from service.cdshooks.models import HookRequest, OrderContext
from service.config import Settings
from service.pipeline import Knowledge
from service.runtime import Runtime
from service.security.auth import Authenticator, Caller


async def evaluate_file(settings: Settings, path: Path, service_id: str | None) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_bytes())  # noqa: ASYNC240 - CLI, one small local file
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(str(exc)) from None
    raw = raw.get("request", raw) if isinstance(raw, dict) else raw  # fixture files wrap it
    try:
        request = HookRequest.model_validate(raw)
        OrderContext.model_validate(request.context)
    except ValidationError as exc:
        raise ValueError(str(exc)) from None
    services = ServiceRegistry()
    service = (
        services.get(service_id)
        if service_id
        else next((s for s in services.document.services if s.hook == request.hook), None)
    )
    if service is None or service.hook != request.hook:
        raise ValueError(f"no service answers hook {request.hook!r}")
    async with httpx.AsyncClient() as http:
        runtime = Runtime(
            settings,
            Knowledge.load(settings.rules.extra_data_dir),
            services,
            Authenticator(settings),
            http,
        )
        # No fhirServer access offline: the caller has an empty allowlist.
        evaluation = await runtime.answer(service, request, Caller(None, None, ()))
    return evaluation.response.wire()


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
            if ext.get("url", "").endswith("ext-coverage-information"):
                values = {
                    sub["url"]: next((v for k, v in sub.items() if k.startswith("value")), None)
                    for sub in ext.get("extension", [])
                }
                for key in ("covered", "pa-needed", "doc-needed", "info-needed"):
                    if key in values:
                        lines.append(f"    {key}: {values[key]}")
    return "\n".join(lines).rstrip() + "\n"
