"""The evaluation pipeline: request -> facts -> rules -> cards and system actions.

Knows nothing of HTTP or authentication (the API layer does that) and nothing of how data was
fetched (service.fhir.gather does that). Everything here is synchronous and pure given its
inputs, which is what makes it fast and testable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from service.cdshooks.hooks import HookSpec
from service.cdshooks.models import Action, Card, HookRequest, HookResponse
from service.crd.assessment import assess_coverage, check_assessments
from service.crd.extension import coverage_actions, updated_orders
from service.facts.build import build_facts
from service.facts.codes import CodeReader
from service.facts.relevance import RelevanceFilter
from service.fhir.drafts import PROCEDURE_ORDER_TYPES, DraftOrder, parse_drafts
from service.fhir.gaps import DataGap
from service.fhir.gather import GatheredData
from service.fhir.parse import ref_key
from service.knowledge.catalogue import RuleData, load_rule_data
from service.render.actions import ActionBuilder, ActionContext
from service.render.cards import CardCatalogue, IdFactory, new_id, render_card
from service.rules.data_quality import without_moot_reason_gaps
from service.rules.engine import RULES, Rule, check_params, check_topics, evaluate
from service.rules.findings import Finding
from service.rules.payers import order_label

_SEVERITY = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Knowledge:
    """Rule data, rule functions and card content, loaded and cross-checked once at startup."""

    rule_data: RuleData
    cards: CardCatalogue
    rules: Mapping[str, Rule]

    @classmethod
    def load(cls, extra_rule_dir: Path | None = None, cards_dir: Path | None = None) -> Knowledge:
        rule_data = load_rule_data(extra_rule_dir)
        cards = CardCatalogue.load(cards_dir)
        check_topics(rule_data)
        cards.check_against(rule_data, set(RULES))
        check_params(rule_data)
        check_assessments(rule_data)  # every family assessed, every coverage effect applied
        return cls(rule_data, cards, RULES)


@dataclass(frozen=True)
class Options:
    """The request's `davinci-crd.configuration`, with unknown or ill-typed entries ignored."""

    enabled: Mapping[str, bool] = field(default_factory=dict)
    max_cards: int = 10

    @classmethod
    def from_request(
        cls, extension: Mapping[str, Any] | None, defaults: Mapping[str, Any]
    ) -> Options:
        given = (extension or {}).get("davinci-crd.configuration")
        given = given if isinstance(given, dict) else {}
        enabled = {
            code: given[code] if isinstance(given.get(code), bool) else bool(default)
            for code, default in defaults.items()
            if code != "max-cards"
        }
        max_cards = given.get("max-cards")
        if not isinstance(max_cards, int) or isinstance(max_cards, bool) or max_cards < 0:
            max_cards = int(defaults.get("max-cards", 10))
        return cls(enabled, max_cards)

    def allows(self, card_type: str) -> bool:
        return self.enabled.get(card_type, True)


@dataclass(frozen=True)
class IssuedCard:
    """What the audit trail keeps about a card: shown (active), or silent (rendered for the
    audit trail only, never returned)."""

    uuid: str
    topic: str
    indicator: str
    order_refs: tuple[str, ...]
    mode: str = "active"


def check_topic_modes(
    modes: Mapping[str, str],
    service_modes: Mapping[str, Mapping[str, str]],
    knowledge: Knowledge,
    services: Iterable[str],
) -> None:
    """At startup: every topic and service a mode names exists (a typo would leave a card on)."""
    known = set(services)
    named = set(modes)
    for service_id, per_topic in service_modes.items():
        if service_id not in known:
            raise ValueError(f"rules.service_topic_modes: no CDS service {service_id!r}")
        named |= set(per_topic)
    unknown = sorted(named - set(knowledge.rules))
    if unknown:
        raise ValueError(f"rules topic modes: unknown topic(s) {unknown}")


@dataclass(frozen=True)
class Evaluation:
    response: HookResponse
    issued: tuple[IssuedCard, ...]
    coverage_assertion_ids: tuple[str, ...] = ()
    # For the audit trail: the payer directory row of the primary coverage, and where each
    # prefetch key's data came from ("prefetch" | "fetched" | "null" | "unavailable").
    payer_profile: str | None = None
    data_sources: Mapping[str, str] = field(default_factory=dict)
    in_scope: bool = True  # False: no order this service checks (answered without facts)


def without_nulls(value: Any) -> Any:
    """A draft order as it may be sent back (update actions): FHIR JSON has no `null` and no
    empty object or array, so members the EHR sent as null or empty are left out."""
    if isinstance(value, dict):
        cleaned = {k: without_nulls(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v is not None and v != {} and v != []}
    if isinstance(value, list):
        items = [without_nulls(v) for v in value]
        return [v for v in items if v is not None and v != {} and v != []]
    return value


@dataclass(frozen=True)
class ParsedDrafts:
    """The draft orders of a hook call, parsed before any patient data is read."""

    drafts: list[DraftOrder]
    gaps: list[DataGap]
    in_scope: bool  # a focus order (a selection, on order-select) is FFR-CT or calcium score

    def relevance(self, knowledge: Knowledge) -> RelevanceFilter:
        """Which prefetched or fetched resources are worth validating for these orders."""
        reasons = {
            key
            for d in self.drafts
            for r in getattr(d.model, "reasonReference", None) or []
            if r is not None and (key := ref_key(r.reference)) is not None
        }
        return RelevanceFilter(knowledge.rule_data, reasons)


def drafts_out_of_scope(hook: HookSpec, request: HookRequest, knowledge: Knowledge) -> bool:
    """True when a look at the raw draft orders shows no focus order this service checks.

    Cheaper than validating them: an EHR calls for every order signed. False whenever the look
    cannot judge (a focus order whose code is missing or malformed): the full path decides.
    """
    entries = hook.orders(request.context).get("entry")
    if not isinstance(entries, list):
        return False
    selections = hook.focus(request.context)
    codes = CodeReader(knowledge.rule_data)
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            return False
        kind = resource["resourceType"]
        if kind not in PROCEDURE_ORDER_TYPES:
            continue  # medication, device, diet, vision orders: no procedure code in scope
        if selections is not None and f"{kind}/{resource.get('id')}" not in selections:
            continue
        found = codes.raw_concept(resource.get("code"))
        if found is None or knowledge.rule_data.in_scope(found):
            return False  # in scope, or the look cannot judge
    return True


def read_drafts(hook: HookSpec, request: HookRequest, knowledge: Knowledge) -> ParsedDrafts:
    """Parse the draft orders and say whether any focus order is one this service checks.

    An EHR calls the service for every order signed, most of them out of scope (a chest X-ray,
    a statin): those are answered without reading the prefetch or building facts. A draft that
    cannot be read counts as in scope: the full path reports it (data-incomplete card).
    """
    drafts, gaps = parse_drafts(hook.orders(request.context))
    selections = hook.focus(request.context)
    codes = CodeReader(knowledge.rule_data)
    focus = [d for d in drafts if selections is None or d.ref in selections]
    in_scope = bool(gaps) or any(
        knowledge.rule_data.in_scope(codes.concept(getattr(d.model, "code", None))) for d in focus
    )
    return ParsedDrafts(drafts, gaps, in_scope)


def out_of_scope() -> Evaluation:
    """The answer for a call with no order this service checks: no cards, nothing asserted."""
    return Evaluation(HookResponse(cards=[]), issued=(), in_scope=False)


def run(
    hook: HookSpec,
    request: HookRequest,
    data: GatheredData,
    knowledge: Knowledge,
    *,
    option_defaults: Mapping[str, Any],
    today: date,
    new_uuid: IdFactory = new_id,
    parsed: ParsedDrafts | None = None,
    modes: Mapping[str, str] | None = None,
) -> Evaluation:
    """Evaluate one hook call on the gathered data. `modes`: topic -> active | silent | off
    (topics not listed are active)."""
    modes = modes or {}
    context = request.context
    parsed = parsed or read_drafts(hook, request, knowledge)
    drafts, draft_gaps = parsed.drafts, parsed.gaps
    facts = build_facts(
        hook=hook,
        context=context,
        drafts=drafts,
        data=data,
        rule_data=knowledge.rule_data,
        today=today,
        extra_gaps=draft_gaps,
    )
    options = Options.from_request(request.extension, option_defaults)
    facts = without_moot_reason_gaps(facts, knowledge.rule_data)
    rules = {t: r for t, r in knowledge.rules.items() if modes.get(t, "active") != "off"}
    evaluated = evaluate(facts, knowledge.rule_data, rules)
    # Silent topics: recorded with the card they would have shown, never returned, never in
    # the payer answer. The CRD answer reads only what the EHR is shown.
    all_findings = [f for f in evaluated if modes.get(f.topic, "active") == "active"]
    silent = [f for f in evaluated if modes.get(f.topic, "active") == "silent"]
    findings = [
        f for f in all_findings if options.allows(knowledge.rule_data.rules[f.topic].card_type)
    ]
    findings = _most_severe_first(findings, knowledge)[: options.max_cards]
    sent_back = {d.ref: without_nulls(d.raw) for d in drafts}  # drafts as actions return them
    system_actions: list[Action] = []
    assertion_ids: list[str] = []
    if options.allows("coverage-info"):
        # CRD: coverage information as system actions, from ALL findings (card options must
        # not change what the payer answer says); needs a Coverage to reference.
        assessments = assess_coverage(facts, all_findings, knowledge.rule_data, hook=hook)
        system_actions, assertion_ids = coverage_actions(
            assessments,
            sent_back,
            {o.ref: order_label(o, knowledge.rule_data) for o in facts.draft_orders},
            knowledge.rule_data,
            today=today,
            new_uuid=new_uuid,
        )
    actions = ActionBuilder(
        ActionContext(
            # An update suggestion starts from the order as the coverage system action updates
            # it, so the two updates agree (the extension survives accepting the suggestion).
            drafts=sent_back | updated_orders(system_actions),
            patient_id=str(context["patientId"]),
            user_ref=str(context["userId"]),
            encounter_id=context.get("encounterId"),
        ),
        knowledge.rule_data,
    )
    cards: list[Card] = []
    issued: list[IssuedCard] = []
    for finding in findings:
        card = render_card(
            finding, knowledge.cards, knowledge.rule_data, actions, new_uuid, hook=hook
        )
        cards.append(card)
        issued.append(IssuedCard(card.uuid, finding.topic, card.indicator, finding.order_refs))
    for finding in _most_severe_first(silent, knowledge):
        card = render_card(
            finding, knowledge.cards, knowledge.rule_data, actions, new_uuid, hook=hook
        )
        issued.append(
            IssuedCard(card.uuid, finding.topic, card.indicator, finding.order_refs, "silent")
        )
    return Evaluation(
        HookResponse(cards=cards, systemActions=system_actions or None),
        tuple(issued),
        tuple(assertion_ids),
        payer_profile=facts.coverage.payer_profile if facts.coverage else None,
        data_sources=dict(data.provenance),
    )


def _most_severe_first(findings: list[Finding], knowledge: Knowledge) -> list[Finding]:
    order = {topic: i for i, topic in enumerate(knowledge.rule_data.rules)}
    return sorted(
        findings,
        key=lambda f: (
            _SEVERITY[knowledge.cards.templates[f.topic].indicator],
            order[f.topic],
        ),
    )
