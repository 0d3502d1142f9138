"""fhir_fixtures/README.md carries a table of every scenario; it must match the files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "scenario_table", ROOT / "scripts" / "scenario_table.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = _script()


def test_readme_table_is_up_to_date() -> None:
    current = SCRIPT.README.read_text(encoding="utf-8")
    assert SCRIPT.render_readme(current) == current, (
        "fhir_fixtures/README.md is out of date: run .venv/bin/python scripts/scenario_table.py"
    )


def test_every_scenario_has_a_row() -> None:
    table = SCRIPT.render_table()
    for path in sorted(SCRIPT.SCENARIOS.glob("*.json")):
        assert f"| `{path.stem}`<br>" in table, path.stem


def test_facts_come_from_the_fhir_content(tmp_path: Path) -> None:
    source = ROOT / "fhir_fixtures" / "scenarios" / "protocol-cpt-oid-system.json"
    scenario = json.loads(source.read_text(encoding="utf-8"))
    (tmp_path / "one.json").write_text(json.dumps(scenario), encoding="utf-8")
    assert "Medicare Part B (SOPT 121)" in SCRIPT.render_table(tmp_path)
    coverage = scenario["request"]["prefetch"]["coverage"]["entry"][0]["resource"]
    coverage["payor"] = [{"display": "Aetna"}]
    coverage["type"]["coding"][0]["code"] = "51"
    (tmp_path / "one.json").write_text(json.dumps(scenario), encoding="utf-8")
    row = SCRIPT.render_table(tmp_path).splitlines()[-1]
    assert "Aetna (SOPT 51)" in row and "Medicare" not in row.split("|")[4]


def test_a_table_cell_cannot_break_the_markdown() -> None:
    assert SCRIPT._cell("a|b\nc") == "a\\|b c"


def test_readme_without_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="markers"):
        SCRIPT.render_readme("# no table here\n")
