"""Card wording a compliance officer and a cardiologist sign (issue 7 item 6).

Guards on every card in cards/: no invitation to add a diagnosis to get paid, no advice to move a
calcium score to another date, no unsourced payment claims, claim-modifier advice framed as "if a
claim is submitted", text that matches the hook ({ordering}), placeholders validated at load, and
summaries that fit the CDS Hooks limit with worst plausible values.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from service.cdshooks.hooks import HOOKS
from service.pipeline import Knowledge
from service.render.actions import ActionBuilder, ActionContext
from service.render.cards import (
    RENDERER_PLACEHOLDERS,
    SUMMARY_LIMIT,
    CardCatalogue,
    CardCatalogueError,
    CardTemplate,
    placeholders,
    render_card,
    template_texts,
)
from service.rules.findings import Finding
from tests.support.conformance import conformant_body, topics

ROOT = Path(__file__).resolve().parents[2]
CARDS = ROOT / "cards"
SCENARIOS = ROOT / "fhir_fixtures" / "scenarios"

# Worst plausible value of every placeholder each topic's rule supplies (service/rules/*.py).
# A card that uses a placeholder not listed here fails: add the key here only when the rule
# supplies it.
_ORDER = "Calcium score (S8092)"
WORST: dict[str, dict[str, str]] = {
    "cac-abn-required": {
        "order": _ORDER,
        "code": "S8092",
        "code_note": "The order uses HCPCS S8092; S8092 is not a Medicare code: the claim carries "
        "CPT 75571.",
        "self_pay": "patient self-pay typically $75-$150",
        "modifiers": "If a claim is submitted, use modifier GY.",
    },
    "cac-bundling-conflict": {
        "order": "Calcium score (75571)",
        "conflict_code": "a contrast cardiac CT",
        "date": "2026-12-01",
    },
    "cac-medicare-advantage": {
        "order": _ORDER,
        "code": "S8092",
        "code_note": "",
        "payer": "Humana Gold Plus HMO (Employer Group) Medicare Advantage",
    },
    "cac-risk-factor-missing": {
        "order": _ORDER,
        "code": "S8092",
        "payer": "Commercial plan (no payer-specific policy on file)",
    },
    "cac-screening-not-covered": {
        "order": _ORDER,
        "code": "S8092",
        "payer": "Horizon Blue Cross Blue Shield of New Jersey",
        "why": "the patient is documented as asymptomatic",
    },
    "cost-estimate": {
        "order": "FFR-CT (75580)",
        "payer": "Original Medicare",
        "estimate": "Medicare OPPS national average $997.22; minimum co-payment $199.45",
        "basis": "CY2024 OPPS APC 5724 (seed)",
    },
    "coverage-missing": {"orders": "FFR-CT (75580), Calcium score (75571)"},
    "data-incomplete": {
        "sources": "insurance coverage and BMI observations",
        "source_lines": "- **Coverage**: FHIR server answered 403",
        "checks": "ABN (Original Medicare); BMI",
    },
    "ffrct-bmi-missing": {"order": "FFR-CT (75580)"},
    "ffrct-ccta-missing": {"order": "FFR-CT (75580)"},
    "ffrct-duplicate": {
        "order": "FFR-CT (75580)",
        "other": "an FFR-CT performed on an unknown date",
        "other_ref": "Procedure/ffr-done-2026",
    },
    "ffrct-excluded-history": {
        "order": "FFR-CT (75580)",
        "history": "history of coronary stent (Z95.5)",
        "first": "unstable angina / suspected ACS (SNOMED CT 394659003) on the active problem list",
    },
    "ffrct-legacy-code": {"order": "FFR-CT (0504T)", "legacy_code": "0504T"},
    "ffrct-screening-use": {"order": "FFR-CT (75580)", "reason_code": "Z00.01"},
    "ffrct-stenosis-out-of-range": {
        "order": "FFR-CT (75580)",
        "stenosis": "CAD-RADS 4B (70-100 %)",
        "range": "40-90 %",
        "ccta_date": "2026-11-10",
    },
    "ffrct-stenosis-undocumented": {"order": "FFR-CT (75580)", "ccta_date": "2026-11-10"},
    "ffrct-symptoms-missing": {"order": "FFR-CT (75580)"},
    "prior-auth-required": {
        "order": "Calcium score (75571)",
        "payer": "Anthem Blue Cross and Blue Shield",
        "reviewer": "AIM Specialty Health",
        "family": "calcium score",
    },
}
HOOK_WORST = {"ordering": "being entered"}


def _templates() -> dict[str, CardTemplate]:
    return Knowledge.load().cards.templates


def _all_text(template: CardTemplate) -> str:
    return "\n".join(text for _, text in template_texts(template))


def _sentences(text: str) -> list[str]:
    """Sentences of a text, across line breaks ("e.g." and "i.e." do not end one)."""
    flat = " ".join(text.split())
    return [s for s in re.split(r"(?<!e\.g\.)(?<!i\.e\.)(?<=[.!?])\s+", flat) if s]


def test_every_topic_has_worst_values() -> None:
    assert set(_templates()) == set(WORST)


@pytest.mark.parametrize("topic", sorted(WORST))
def test_placeholders_are_ones_the_rule_or_renderer_supplies(topic: str) -> None:
    template = _templates()[topic]
    for where, text in template_texts(template):
        unknown = placeholders(text) - set(WORST[topic]) - RENDERER_PLACEHOLDERS
        assert not unknown, (topic, where, unknown)


@pytest.mark.parametrize("topic", sorted(WORST))
def test_coverage_reasons_use_only_what_the_rule_supplies(topic: str) -> None:
    """The CRD reason is filled from the same finding details as the card."""
    reason = Knowledge.load().rule_data.rules[topic].coverage.reason or ""
    assert not placeholders(reason) - set(WORST[topic]), (topic, reason)


@pytest.mark.parametrize("topic", sorted(WORST))
def test_filled_summary_fits_without_truncation(topic: str) -> None:
    filled = _templates()[topic].summary.format(**WORST[topic], **HOOK_WORST)
    assert len(filled) <= SUMMARY_LIMIT, (topic, len(filled), filled)


@pytest.mark.parametrize("topic", sorted(WORST))
def test_detail_leads_with_the_short_order_label_or_the_finding(topic: str) -> None:
    """Clinicians read the first line: no bold CPT descriptor before the finding."""
    detail = _templates()[topic].detail or ""
    first = detail.strip().splitlines()[0]
    assert not first.startswith("**{order}"), first
    if "order" in WORST[topic]:
        assert first.startswith("{order}"), first


def test_no_card_invites_adding_a_diagnosis_to_get_paid() -> None:
    for topic, template in _templates().items():
        text = " ".join(_all_text(template).split()).lower()
        for phrase in (
            "add a diagnosis",
            "add the diagnosis",
            "add one to support",
            "add the presenting symptom",
            "so the claim is paid",
            "to get paid",
        ):
            assert phrase not in text, (topic, phrase)
        # Asking for documentation is conditional on the fact existing.
        for sentence in _sentences(_all_text(template)):
            if re.search(r"\bdocument (it|them)\b", sentence, re.I):
                assert re.search(r"\bif\b", sentence, re.I), (topic, sentence)


def test_no_card_suggests_moving_the_calcium_score_to_another_date() -> None:
    for topic, template in _templates().items():
        text = " ".join(_all_text(template).split()).lower()
        assert "different date" not in text, topic
        assert "another date" not in text, topic
        assert "reschedule" not in text, topic


def test_no_unsourced_payment_claims() -> None:
    for topic, template in _templates().items():
        text = " ".join(_all_text(template).split()).lower()
        assert "unit limit" not in text, topic  # no MUE for 75580 was found (research §3)
        assert "fee-schedule payment" not in text, topic  # sources disagree on 75571
        assert "fee schedule payment" not in text, topic
        assert "medically unlikely" not in f"{text} {template.source.label.lower()}", topic


def test_modifier_advice_is_framed_as_if_a_claim_is_submitted() -> None:
    modifier = re.compile(r"\b(GA|GY|GX|GZ|TC)\b|modifier 26")
    for topic, template in _templates().items():
        for sentence in _sentences(_all_text(template)):
            if modifier.search(sentence):
                assert "if a claim is submitted" in sentence.lower(), (topic, sentence)


def test_no_card_hard_codes_the_hook() -> None:
    for topic, template in _templates().items():
        text = " ".join(_all_text(template).split()).lower()
        assert "being signed" not in text, topic
        assert "being entered" not in text, topic
        assert "sign again" not in text, topic


def _finding() -> Finding:
    return Finding(
        topic="ffrct-ccta-missing",
        order_refs=("ServiceRequest/ffr",),
        details={"order": "FFR-CT (75580)"},
    )


@pytest.mark.parametrize(
    ("hook", "said"), [("order-sign", "being signed"), ("order-select", "being entered")]
)
def test_ordering_placeholder_follows_the_hook(hook: Any, said: str) -> None:
    knowledge = Knowledge.load()
    actions = ActionBuilder(
        ActionContext(drafts={}, patient_id="p", user_ref="Practitioner/1", encounter_id=None),
        knowledge.rule_data,
    )
    card = render_card(_finding(), knowledge.cards, knowledge.rule_data, actions, hook=HOOKS[hook])
    assert card.detail is not None
    assert f"among the orders {said}." in " ".join(card.detail.split())


async def test_order_select_cards_say_being_entered(app_client: Any, make_settings: Any) -> None:
    data = json.loads((SCENARIOS / "ffrct-ccta-missing-positive.json").read_text())
    request = copy.deepcopy(data["request"])
    request["hook"] = "order-select"
    request["context"]["selections"] = ["ServiceRequest/ffr"]
    client_cm = app_client(make_settings())
    async with client_cm as client:
        client_cm.app.state.runtime.today = lambda: date.fromisoformat(data["today"])
        response = await client.post("/cds-services/cardiac-ct-order-select", json=request)
    body = conformant_body(response)
    assert "ffrct-ccta-missing" in topics(body)
    card = next(c for c in body["cards"] if c["source"]["topic"]["code"] == "ffrct-ccta-missing")
    assert "among the orders being entered" in " ".join(card["detail"].split())
    assert "being signed" not in card["detail"]


@pytest.mark.parametrize(
    "bad",
    [
        "{order.__class__}",
        "{order!r}",
        "{order:>40}",
        "{0}",
        "{}",
        "{order",
        "Order}",
        "{Order}",
    ],
)
def test_bad_placeholder_stops_the_load(tmp_path: Path, bad: str) -> None:
    shutil.copytree(CARDS, tmp_path / "cards")
    path = tmp_path / "cards" / "ffrct-bmi-missing.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("{order}:", f"{bad}:", 1), encoding="utf-8")
    with pytest.raises(CardCatalogueError, match=r"ffrct-bmi-missing\.yaml: detail"):
        CardCatalogue.load(tmp_path / "cards")


def test_the_shipped_cards_load() -> None:
    CardCatalogue.load(CARDS)
