"""Rule data: code systems, code lists, rule parameters with sources, payer directory.

All of it is YAML under ``service/rules/data/`` (plus an optional site overlay directory whose
files extend the bundled ones), validated here at startup: an unknown code system, a topic code
typo or a rule without a source stops the service with a message naming the file and entry.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from service.rules.codes import CodeList

BUNDLED_DATA_DIR = Path(__file__).with_name("data")

# The contract EHR integrators configure against (`source.topic.code`); see README.
TopicCode = Literal[
    "ffrct-symptoms-missing",
    "ffrct-screening-use",
    "ffrct-ccta-missing",
    "ffrct-stenosis-out-of-range",
    "ffrct-stenosis-undocumented",
    "ffrct-bmi-missing",
    "ffrct-duplicate",
    "ffrct-legacy-code",
    "ffrct-excluded-history",
    "cac-bundling-conflict",
    "cac-abn-required",
    "cac-medicare-advantage",
    "cac-risk-factor-missing",
    "cac-screening-not-covered",
    "prior-auth-required",
    "coverage-missing",
    "data-incomplete",
    "cost-estimate",
]
TOPICS: tuple[str, ...] = get_args(TopicCode)
TOPIC_SYSTEM = "https://cardiac-ct-cds.org/fhir/CodeSystem/card-topic"

# Da Vinci CRD card types used as configuration options (davinci-crd.configuration-options).
CrdCardType = Literal[
    "appropriate-use", "claim", "duplicate-therapy", "insurance", "cost", "data-incomplete"
]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceRef(_Data):
    """Where a rule or payer row comes from: a seed document or a public policy, dated."""

    document: str = Field(min_length=3)
    section: str | None = None
    url: str | None = None
    effective: date  # the date the cited text took effect (or was published/read)


class RuleEntry(_Data):
    topic: TopicCode
    title: str
    trigger: str  # one line, for the README topic table and the rule owner
    card_type: CrdCardType
    sources: list[SourceRef] = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class RuleData(_Data):
    """Everything the rules read besides the facts."""

    version: str
    systems: dict[str, list[str]]  # short name -> URIs (canonical first)
    code_lists: dict[str, CodeList]
    rules: dict[str, RuleEntry]
    payers: list[dict[str, Any]] = Field(default_factory=list)

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    @field_validator("rules")
    @classmethod
    def _every_topic_once(cls, rules: dict[str, RuleEntry]) -> dict[str, RuleEntry]:
        missing = set(TOPICS) - set(rules)
        if missing:
            raise ValueError(f"rules.yaml has no entry for topic(s): {sorted(missing)}")
        return rules

    def system_for_uri(self) -> dict[str, str]:
        """URI -> short name, for normalising codings."""
        return {uri: short for short, uris in self.systems.items() for uri in uris}

    def uri_for(self, short: str) -> str:
        return self.systems[short][0]

    def codes(self, name: str) -> CodeList:
        return self.code_lists[name]

    def param(self, topic: str, name: str) -> Any:
        return self.rules[topic].params[name]


class RuleDataError(Exception):
    """Rule data failed validation; the message names the file and the entry."""


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RuleDataError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise RuleDataError(f"{path}: expected a mapping at the top level")
    return loaded


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Site overlay: mappings merge key by key, lists of payers append, scalars replace."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        elif isinstance(value, list) and isinstance(merged.get(key), list) and key == "payers":
            merged[key] = [*merged[key], *value]
        else:
            merged[key] = value
    return merged


def _load_raw(dirs: list[Path]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for directory in dirs:
        for path in sorted(directory.glob("*.yaml")):
            raw = _merge(raw, _read_yaml(path))
    return raw


def load_rule_data(extra_dir: Path | None = None) -> RuleData:
    """Load and validate the bundled rule data plus an optional site overlay."""
    dirs = [BUNDLED_DATA_DIR] + ([extra_dir] if extra_dir else [])
    for directory in dirs:
        if not directory.is_dir():
            raise RuleDataError(f"rule data directory not found: {directory}")
    raw = _load_raw(dirs)
    systems: dict[str, list[str]] = raw.get("systems", {})
    try:
        lists = {
            name: CodeList.parse(name, entries)
            for name, entries in (raw.get("code_lists") or {}).items()
        }
    except ValueError as exc:
        raise RuleDataError(f"code_lists: {exc}") from exc
    for code_list in lists.values():
        unknown = code_list.systems - set(systems)
        if unknown:
            raise RuleDataError(
                f"code list {code_list.name!r} uses unknown code system(s) {sorted(unknown)}; "
                f"known: {sorted(systems)}"
            )
    rules = raw.get("rules") or {}
    for topic, entry in rules.items():
        if isinstance(entry, dict):
            entry.setdefault("topic", topic)
    try:
        data = RuleData(
            version=str(raw.get("version", "unversioned")),
            systems=systems,
            code_lists=lists,
            rules=rules,
            payers=raw.get("payers") or [],
        )
    except ValidationError as exc:
        raise RuleDataError(_explain(exc)) from exc
    for topic, entry in data.rules.items():
        if topic != entry.topic:
            raise RuleDataError(f"rules.{topic}: topic field says {entry.topic!r}")
    return data


def _explain(exc: ValidationError) -> str:
    lines = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
    return "rule data is invalid:\n  " + "\n  ".join(lines)
