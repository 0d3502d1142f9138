"""The payer directory is validated at startup: bad rows stop the service with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.knowledge.catalogue import RuleDataError, load_rule_data
from service.knowledge.vocabulary import Code
from service.pipeline import Knowledge

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
    """Topics are registered once, by the rule registry: rule data for a topic no rule emits
    stops the service."""
    text = """
rules:
  cac-abn-requried:
    title: typo
    trigger: typo
    card_type: insurance
    coverage: {effect: none}
    sources: [{document: doc, effective: 2026-01-01}]
"""
    with pytest.raises(RuleDataError, match=r"no rule emits: \['cac-abn-requried'\]"):
        Knowledge.load(overlay(tmp_path, text))


def test_every_topic_says_what_it_means_for_coverage(tmp_path: Path) -> None:
    text = """
rules:
  cac-new-topic:
    title: ABN
    trigger: x
    card_type: insurance
    sources: [{document: doc, effective: 2026-01-01}]
"""
    with pytest.raises(RuleDataError, match=r"rules.cac-new-topic.coverage: Field required"):
        load_rule_data(overlay(tmp_path, text))


@pytest.mark.parametrize(
    ("coverage", "message"),
    [
        ('{effect: undocumented, reason: " "}', "needs a reason"),
        ("{effect: none, reason: x}", "gives no reason"),
        ("{effect: maybe, reason: x}", "effect"),
        ('{effect: limitation, reason: "shows {history!r}"}', "plain lower-case name"),
    ],
)
def test_bad_coverage_effects_are_named(tmp_path: Path, coverage: str, message: str) -> None:
    text = f"""
rules:
  ffrct-excluded-history:
    title: x
    trigger: x
    card_type: appropriate-use
    coverage: {coverage}
    sources: [{{document: doc, effective: 2026-01-01}}]
"""
    with pytest.raises(RuleDataError, match=message):
        load_rule_data(overlay(tmp_path, text))


def test_order_families_are_declared_once_in_the_code_data() -> None:
    data = load_rule_data()
    assert set(data.families) == {"ffrct", "cac"}
    assert data.family_of([Code("cpt", "0501T")]) == "ffrct"
    assert data.family_of([Code("hcpcs", "S8092")]) == "cac"
    assert data.family_of([Code("cpt", "71046")]) is None
    assert data.family_codes("ffrct", [Code("cpt", "75580"), Code("cpt", "0503T")]) == [
        Code("cpt", "75580"),
        Code("cpt", "0503T"),
    ]


def test_family_naming_an_unknown_code_list(tmp_path: Path) -> None:
    text = "families:\n  ffrct:\n    code_lists: [ffrct, ffrct_legcy]\n    title: F\n    label: f\n"
    with pytest.raises(RuleDataError, match=r"families.ffrct: unknown code list 'ffrct_legcy'"):
        load_rule_data(overlay(tmp_path, text))


def test_a_new_order_family_without_a_coverage_assessment_stops_the_service(
    tmp_path: Path,
) -> None:
    """Adding a family (here CCTA, 75574) is data plus a coverage assessment in service/crd:
    with the data alone the service does not start, rather than answer as if it were FFR-CT."""
    text = "families:\n  ccta:\n    code_lists: [ccta_order]\n    title: CCTA\n    label: CCTA\n"
    data = load_rule_data(overlay(tmp_path, text))
    assert data.family_of([Code("cpt", "75574")]) == "ccta"
    with pytest.raises(ValueError, match="no coverage assessment for order family 'ccta'"):
        Knowledge.load(tmp_path)


def test_ccta_reading_vocabulary_is_validated(tmp_path: Path) -> None:
    text = 'ccta_reading:\n  cad_rads_value_codes:\n    "dcm|130723": "7"\n'
    with pytest.raises(RuleDataError, match="categories with no range"):
        load_rule_data(overlay(tmp_path, text))
