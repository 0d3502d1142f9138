"""The payer directory is validated at startup: bad rows stop the service with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.knowledge.catalogue import RuleDataError, load_rule_data

GOOD_ROW = """
payers:
  - id: acme-health
    name: Acme Health
    kind: commercial
    match: {names: ["Acme Health"]}
    policies:
      cac: {position: conditional, prior_auth: true, prior_auth_states: ["WI", "MN"]}
    sources: [{document: "Acme provider manual 2026", effective: 2026-01-01}]
"""


def overlay(tmp_path: Path, text: str, name: str = "site.yaml") -> Path:
    (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def test_bundled_directory_has_the_seed_rows() -> None:
    data = load_rule_data()
    ids = [row.id for row in data.payers]
    for expected in (
        "original-medicare",
        "medicare-advantage",
        "bcbs-kansas",
        "horizon-bcbs-nj",
        "bcbs-michigan",
        "anthem-aim",
        "evicore-delegated",
    ):
        assert expected in ids
    assert len(ids) == len(set(ids))
    assert all(row.sources for row in data.payers)
    medicare = data.payer("original-medicare")
    assert medicare is not None
    ffrct = medicare.policy("ffrct")
    assert ffrct is not None and ffrct.cost is not None
    assert (ffrct.cost.expected_payment, ffrct.cost.minimum_copayment) == (997.22, 199.45)
    assert ffrct.stenosis_range == (40.0, 90.0)
    cac = medicare.policy("cac")
    assert cac is not None and cac.abn_required and cac.position == "not-covered"


def test_site_overlay_appends_a_row(tmp_path: Path) -> None:
    data = load_rule_data(overlay(tmp_path, GOOD_ROW))
    row = data.payer("acme-health")
    assert row is not None and row.policy("cac") is not None
    assert data.payer("original-medicare") is not None


def test_site_row_with_a_bundled_id_replaces_it(tmp_path: Path) -> None:
    text = GOOD_ROW.replace("id: acme-health", "id: anthem-aim")
    data = load_rule_data(overlay(tmp_path, text))
    rows = [row for row in data.payers if row.id == "anthem-aim"]
    assert len(rows) == 1
    policy = rows[0].policy("cac")
    assert policy is not None and policy.prior_auth_states == ["WI", "MN"]


def test_profile_inheritance(tmp_path: Path) -> None:
    text = GOOD_ROW.replace(
        "    policies:\n      cac: {position: conditional, prior_auth: true, "
        'prior_auth_states: ["WI", "MN"]}\n',
        "    profile: evicore-delegated\n",
    )
    data = load_rule_data(overlay(tmp_path, text))
    row = data.payer("acme-health")
    assert row is not None
    assert row.policy("cac") == data.payer("evicore-delegated").policy("cac")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (
            GOOD_ROW.replace(
                '    sources: [{document: "Acme provider manual 2026", effective: 2026-01-01}]\n',
                "",
            ),
            "sources",
        ),
        (GOOD_ROW.replace("sources: [{document", "sources: []\n    x: [{document"), "sources"),
        (GOOD_ROW.replace("kind: commercial", "kind: comercial"), "kind"),
        (GOOD_ROW.replace("position: conditional", "position: maybe"), "position"),
        (GOOD_ROW.replace('"WI", "MN"', '"Wisconsin"'), "2-letter"),
        (GOOD_ROW.replace("prior_auth: true", "prior_auth: false"), "prior_auth_states"),
        (
            GOOD_ROW.replace("    policies:", "    profile: no-such-row\n    policies:"),
            "no-such-row",
        ),
        (GOOD_ROW.replace("cac: {", "cta: {"), "cta"),
        (GOOD_ROW.replace('names: ["Acme Health"]', 'sopt: ["5x"]'), "SOPT"),
        (GOOD_ROW.replace("    policies:", "    colour: blue\n    policies:"), "colour"),
    ],
)
def test_bad_payer_rows_are_named(tmp_path: Path, broken: str, message: str) -> None:
    with pytest.raises(RuleDataError) as err:
        load_rule_data(overlay(tmp_path, broken))
    text = str(err.value)
    assert "site.yaml" in text and "acme-health" in text, text
    assert message in text, text


def test_profile_cycle(tmp_path: Path) -> None:
    source = "sources: [{document: doc, effective: 2026-01-01}]"
    text = (
        "payers:\n"
        f"  - {{id: a-row, name: A row, kind: other, profile: b-row, {source}}}\n"
        f"  - {{id: b-row, name: B row, kind: other, profile: a-row, {source}}}\n"
    )
    with pytest.raises(RuleDataError, match="profile cycle"):
        load_rule_data(overlay(tmp_path, text))


def test_unknown_code_system_in_a_code_list(tmp_path: Path) -> None:
    text = 'code_lists:\n  cac: ["cptt|75571"]\n'
    with pytest.raises(RuleDataError, match=r"code list 'cac' uses unknown code system.*cptt"):
        load_rule_data(overlay(tmp_path, text))


def test_topic_code_typo_in_rules(tmp_path: Path) -> None:
    text = """
rules:
  cac-abn-requried:
    title: typo
    trigger: typo
    card_type: insurance
    sources: [{document: doc, effective: 2026-01-01}]
"""
    with pytest.raises(RuleDataError, match="cac-abn-requried"):
        load_rule_data(overlay(tmp_path, text))
