"""The discovery document, loaded from discovery.yaml and validated as CDS Hooks 2.0."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from service.cdshooks.hooks import HOOKS
from service.cdshooks.models import DiscoveryResponse, ServiceDefinition

DISCOVERY_FILE = Path(__file__).with_name("discovery.yaml")
CONFIGURATION_OPTIONS = "davinci-crd.configuration-options"


class ServiceRegistry:
    """The hosted services by id, plus the CRD configuration defaults they advertise."""

    def __init__(self, path: Path = DISCOVERY_FILE) -> None:
        raw: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
        self.document = DiscoveryResponse.model_validate({"services": raw["services"]})
        self.by_id = {s.id: s for s in self.document.services}
        unknown = sorted({s.hook for s in self.document.services} - set(HOOKS))
        if unknown:
            raise ValueError(f"{path.name}: no HookSpec for hook(s) {unknown} (cdshooks/hooks.py)")

    def get(self, service_id: str) -> ServiceDefinition | None:
        return self.by_id.get(service_id)

    @cached_property
    def option_defaults(self) -> dict[str, Any]:
        """code -> default of every configuration option (the same on every service)."""
        defaults: dict[str, Any] = {}
        for service in self.document.services:
            for option in (service.extension or {}).get(CONFIGURATION_OPTIONS, []):
                defaults[option["code"]] = option["default"]
        return defaults
