"""The README's promises: the two setup commands, and generated tables that match the code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_starts_with_exactly_two_commands() -> None:
    first_block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert first_block is not None
    assert README.index("```bash") < README.index("\n## "), "the commands come first"
    commands = [line for line in first_block.group(1).splitlines() if line.strip()]
    assert [c.split("#")[0].strip() for c in commands] == [
        "bash scripts/serve",
        "bash scripts/test",
    ]
    for script in ("scripts/serve", "scripts/test"):
        assert (ROOT / script).is_file()


def test_ci_runs_the_readme_test_command() -> None:
    assert "bash scripts/test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_topic_table_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "topic_table.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_topic_is_in_the_readme() -> None:
    from service.rules.engine import RULES as TOPICS

    for topic in TOPICS:
        assert f"`{topic}`" in README, topic
