"""Per-topic modes: a rule owner switches a topic to silent (evaluated and audited with the card
it would have shown, never returned, never in the coverage information) or off (not evaluated),
for every service or one service. Real SQLite or PostgreSQL (the storage fixture)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from service.app import create_app
from service.config import Settings
from service.storage.report import build_report
from service.storage.service import utc_now
from service.storage.store import Storage
from tests.api.test_invoke_smoke import ORDER_SIGN_URL
from tests.storage.conftest import ServedApp
from tests.support.conformance import conformant_body, topics

# A calcium score with a same-day CCTA, and a Coverage: a bundling card and coverage information.
REQUEST: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "examples" / "order-sign-bundling.json").read_text()
)
BUNDLING = "cac-bundling-conflict"
ORDER_SELECT = "cardiac-ct-order-select"


def _with_modes(settings: Settings, **rules: Any) -> Settings:
    return settings.model_copy(update={"rules": settings.rules.model_copy(update=rules)})


def _coverage_reasons(body: dict[str, Any]) -> list[str]:
    return [
        part["valueCodeableConcept"]["text"]
        for action in body.get("systemActions", [])
        for ext in action["resource"].get("extension", [])
        for part in ext.get("extension", [])
        if part["url"] == "reason"
    ]


async def _call(settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The answer, and the audit record of the call as `cardiac-ct-cds audit` shows it."""
    served = ServedApp(settings)
    async with served as client:
        response = await client.post(ORDER_SIGN_URL, json=REQUEST)
        await served.drain_audit()
        (call,) = served.persistence.storage.find_calls(REQUEST["hookInstance"])
    return conformant_body(response), call


async def test_active_by_default(settings: Settings) -> None:
    body, call = await _call(settings)
    assert BUNDLING in topics(body)
    assert any("bundled" in reason for reason in _coverage_reasons(body))
    assert {c["topic"]: c["mode"] for c in call["cards"]}[BUNDLING] == "active"


async def test_silent_topic_is_audited_never_returned_nor_in_coverage(settings: Settings) -> None:
    body, call = await _call(_with_modes(settings, topic_modes={BUNDLING: "silent"}))
    assert BUNDLING not in topics(body)
    assert not any("bundled" in reason for reason in _coverage_reasons(body))
    silent = [c for c in call["cards"] if c["topic"] == BUNDLING]
    assert [c["mode"] for c in silent] == ["silent"]
    assert silent[0]["indicator"] == "warning" and silent[0]["orderRefs"]
    assert silent[0]["uuid"] not in {card["uuid"] for card in body["cards"]}


async def test_silent_cards_are_counted_apart_in_the_report(settings: Settings) -> None:
    await _call(_with_modes(settings, topic_modes={BUNDLING: "silent"}))
    storage = Storage(settings.storage.url)
    try:
        now = utc_now()
        report = build_report(storage, now - timedelta(days=1), now + timedelta(minutes=1))
    finally:
        storage.dispose()
    bundling = report.by_topic[BUNDLING]
    assert (bundling.issued, bundling.silent) == (0, 1)


async def test_off_topic_is_not_evaluated(settings: Settings) -> None:
    body, call = await _call(_with_modes(settings, topic_modes={BUNDLING: "off"}))
    assert BUNDLING not in topics(body)
    assert BUNDLING not in {c["topic"] for c in call["cards"]}


async def test_a_service_can_override_the_topic_mode(settings: Settings) -> None:
    """Silent everywhere but shown by order-sign: the per-service mode wins for its service."""
    override = {"cardiac-ct-order-sign": {BUNDLING: "active"}}
    both = _with_modes(settings, topic_modes={BUNDLING: "silent"}, service_topic_modes=override)
    body, _ = await _call(both)
    assert BUNDLING in topics(body)
    assert both.rules.modes_for(ORDER_SELECT) == {BUNDLING: "silent"}


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"topic_modes": {"cac-bundling-conflct": "silent"}}, "unknown topic"),
        ({"service_topic_modes": {"no-such-service": {BUNDLING: "off"}}}, "no CDS service"),
    ],
)
def test_a_typo_stops_the_service(
    make_settings: Callable[..., Settings], rules: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        create_app(make_settings(rules=rules))


def test_a_mode_that_is_not_one_of_the_three_is_refused(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(Exception, match="active"):
        make_settings(rules={"topic_modes": {BUNDLING: "muted"}})


def test_check_config_names_the_topics_not_shown_and_refuses_typos(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from service.cli import app

    def check(modes: str) -> Any:
        config = tmp_path / "modes.toml"
        config.write_text(
            f'public_base_url = "http://127.0.0.1:8080"\n'
            f'environment = "development"\nstate_dir = "{tmp_path}"\n'
            f"[rules.topic_modes]\n{modes}\n",
            encoding="utf-8",
        )
        return CliRunner().invoke(app, ["check-config", "--config", str(config)])

    silent = check('"cac-risk-factor-missing" = "silent"')
    assert silent.exit_code == 0, silent.output
    assert "cardiac-ct-order-sign: cac-risk-factor-missing is silent" in silent.output
    typo = check('"cac-risk-factor-mising" = "off"')
    assert typo.exit_code == 2
    assert "unknown topic" in typo.output
