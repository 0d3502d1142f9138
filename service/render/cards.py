"""Turn findings into CDS Hooks cards, using the card content in ``cards/`` (YAML, one per topic).

This is the only place cards are built. Card text is data: a rule owner edits ``cards/*.yaml``
and the service validates every file at startup (known topic, indicator, placeholder syntax,
actions).

Placeholders are filled from the finding's ``details`` (what the rule found: ``{order}``,
``{code}``, ...) and from values the renderer supplies to every card (``RENDERER_PLACEHOLDERS``),
such as ``{ordering}``: "being signed" on order-sign, "being entered" on order-select, so card
text matches the hook the clinician is in.
"""

from __future__ import annotations

import string
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.cdshooks.hooks import HookSpec
from service.cdshooks.models import Card, Coding, Link, Source, Suggestion
from service.knowledge.catalogue import TOPIC_SYSTEM, RuleData
from service.knowledge.text import check_placeholders
from service.rules.findings import ActionKind, Finding
from service.yamlfile import read_mapping

IdFactory = Callable[[], str]

SUMMARY_LIMIT = 139  # CDS Hooks: "<140-character"

# Placeholders the renderer fills for every card, whatever the rule, from the hook's spec.
RENDERER_PLACEHOLDERS = frozenset({"ordering"})


def _hook_values(hook: HookSpec) -> dict[str, str]:
    return {"ordering": hook.ordering}


def new_id() -> str:
    return str(uuid.uuid4())


def _cards_dir() -> Path:
    """`cards/` beside the package (editable installs, a checkout) or bundled into the wheel."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package.parent / "cards", package / "_bundled" / "cards"):
        if candidate.is_dir():
            return candidate
    raise CardCatalogueError("card content directory 'cards/' not found")


class _Content(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SuggestionTemplate(_Content):
    label: str = Field(min_length=1)
    action: ActionKind
    description: str = Field(min_length=1)
    recommended: bool = False


class LinkTemplate(_Content):
    label: str
    url: str


class SourceTemplate(_Content):
    label: str
    url: str


class CardTemplate(_Content):
    topic: str
    indicator: Literal["info", "warning", "critical"]
    summary: str = Field(min_length=1)
    detail: str | None = None
    source: SourceTemplate
    suggestions: list[SuggestionTemplate] = Field(default_factory=list)
    selection_behavior: Literal["at-most-one", "any"] = "at-most-one"
    links: list[LinkTemplate] = Field(default_factory=list)


class OverrideReason(_Content):
    code: str
    display: str


class SharedContent(_Content):
    override_reason_system: str
    override_reasons: list[OverrideReason] = Field(min_length=1)
    source_label: str


class CardCatalogueError(Exception):
    """Card content failed validation; the message names the file."""


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def template_texts(template: CardTemplate) -> list[tuple[str, str]]:
    """(field, text) for every text of a card template that takes placeholders."""
    texts = [("summary", template.summary)]
    if template.detail:
        texts.append(("detail", template.detail))
    for i, s in enumerate(template.suggestions):
        texts += [
            (f"suggestions[{i}].label", s.label),
            (f"suggestions[{i}].description", s.description),
        ]
    return texts


class _Strict(dict[str, str]):
    def __missing__(self, key: str) -> str:
        raise KeyError(key)


def _fill(text: str, values: Mapping[str, str]) -> str:
    return text.format_map(_Strict(values))


class CardCatalogue:
    """All card templates, by topic, validated on load."""

    def __init__(self, templates: Mapping[str, CardTemplate], shared: SharedContent) -> None:
        self.templates = dict(templates)
        self.shared = shared

    @classmethod
    def load(cls, directory: Path | None = None) -> CardCatalogue:
        directory = directory or _cards_dir()
        templates: dict[str, CardTemplate] = {}
        shared: SharedContent | None = None
        for path in sorted(directory.glob("*.yaml")):
            raw = read_mapping(path, CardCatalogueError)
            try:
                if path.name == "_shared.yaml":
                    shared = SharedContent.model_validate(raw)
                    continue
                template = CardTemplate.model_validate(raw)
            except ValidationError as exc:
                raise CardCatalogueError(f"{path}: {exc}") from exc
            if path.stem != template.topic:
                raise CardCatalogueError(f"{path}: file name must be the topic code")
            for where, text in template_texts(template):
                try:
                    check_placeholders(text)
                except ValueError as exc:
                    raise CardCatalogueError(f"{path}: {where}: {exc}") from None
            templates[template.topic] = template
        if shared is None:
            raise CardCatalogueError(f"{directory}/_shared.yaml is missing")
        return cls(templates, shared)

    def check_against(self, rule_data: RuleData, rule_topics: set[str]) -> None:
        """Every topic the rules can emit has a card, and every card a rule."""
        missing = rule_topics - set(self.templates)
        if missing:
            raise CardCatalogueError(f"no card content for topic(s) {sorted(missing)}")
        orphans = set(self.templates) - set(rule_data.rules)
        if orphans:
            raise CardCatalogueError(f"card content for unknown topic(s) {sorted(orphans)}")


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1].rstrip() + "…"


def render_card(
    finding: Finding,
    catalogue: CardCatalogue,
    rule_data: RuleData,
    render_actions: Callable[[Finding, SuggestionTemplate, str], list[Any]],
    new_uuid: IdFactory = new_id,
    *,
    hook: HookSpec,
) -> Card:
    """One card for one finding. `render_actions` builds the CDS Hooks actions (FHIR JSON).

    `hook` picks the wording of the renderer's own placeholders (`{ordering}`); they take
    precedence over a rule detail of the same name."""
    template = catalogue.templates[finding.topic]
    values = {**finding.details, **_hook_values(hook)}
    rule = rule_data.rules[finding.topic]
    suggestions = [
        Suggestion(
            label=_fill(s.label, values),
            uuid=new_uuid(),
            isRecommended=True if s.recommended else None,
            actions=render_actions(finding, s, _fill(s.description, values)) or None,
        )
        for s in template.suggestions
        if any(a.kind == s.action for a in finding.actions)
    ]
    return Card(
        uuid=new_uuid(),
        summary=_shorten(_fill(template.summary, values)),
        detail=_fill(template.detail, values).strip() if template.detail else None,
        indicator=template.indicator,
        source=Source(
            label=template.source.label,
            url=template.source.url,
            topic=Coding(system=TOPIC_SYSTEM, code=finding.topic, display=rule.title),
        ),
        suggestions=suggestions or None,
        selectionBehavior=template.selection_behavior if suggestions else None,
        overrideReasons=[
            Coding(system=catalogue.shared.override_reason_system, code=r.code, display=r.display)
            for r in catalogue.shared.override_reasons
        ]
        if template.indicator != "info"
        else None,
        links=[Link(label=link.label, url=link.url, type="absolute") for link in template.links]
        or None,
    )
