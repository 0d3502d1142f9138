"""Back-test runs: each a subdirectory of `admin.backtest_dir` holding a `summary.json`.

Read as they are found (blocking: called from the dashboard's worker thread). A run without a
summary (still running, or stopped) or with an unreadable one is listed with what is wrong; it
never stops the page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SUMMARY_FILE = "summary.json"
MAX_SUMMARY_BYTES = 1_048_576
MAX_RUNS = 20  # the newest runs shown; older ones are counted in the note


class TopicFires(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    fires: int = Field(ge=0)
    per_100_orders: float = Field(ge=0)


class PayerFires(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    orders: int = Field(ge=0)
    fires: dict[str, int] = Field(default_factory=dict)


class BacktestSummary(BaseModel):
    """The part of a run's summary.json the dashboard shows (counts only)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    run_id: str = Field(min_length=1, max_length=200)
    source: Literal["fhir", "ndjson"]
    started: datetime
    finished: datetime
    since: date
    until: date
    orders: int = Field(ge=0)
    per_topic: dict[str, TopicFires] = Field(default_factory=dict)
    per_payer_profile: dict[str, PayerFires] = Field(default_factory=dict)
    data_gap_rate: float = Field(ge=0, le=1)


@dataclass(frozen=True)
class BacktestRun:
    directory: str
    summary: BacktestSummary | None
    problem: str | None = None


@dataclass
class BacktestListing:
    configured: bool
    runs: list[BacktestRun] = field(default_factory=list)
    note: str | None = None

    @property
    def summaries(self) -> list[BacktestSummary]:
        return [run.summary for run in self.runs if run.summary is not None]


def read_backtests(directory: Path | None, limit: int = MAX_RUNS) -> BacktestListing:
    if directory is None:
        return BacktestListing(
            False, note="No back-test directory configured (admin.backtest_dir)."
        )
    try:
        subdirectories = [p for p in directory.iterdir() if p.is_dir()]
    except OSError as exc:
        return BacktestListing(
            True, note=f"The back-test directory cannot be read ({type(exc).__name__})."
        )
    runs = [_read_run(p) for p in subdirectories]
    if not runs:
        return BacktestListing(True, note="No back-test runs in the back-test directory yet.")
    runs.sort(key=_newest_first)
    listing = BacktestListing(True, runs[:limit])
    if len(runs) > limit:
        listing.note = f"The {limit} newest runs are shown; {len(runs) - limit} older not shown."
    return listing


def _newest_first(run: BacktestRun) -> tuple[int, float, str]:
    if run.summary is None:
        return (1, 0.0, run.directory)
    return (0, -run.summary.started.timestamp(), run.directory)


def _read_run(path: Path) -> BacktestRun:
    summary = path / SUMMARY_FILE
    try:
        if summary.stat().st_size > MAX_SUMMARY_BYTES:
            return BacktestRun(path.name, None, f"{SUMMARY_FILE} larger than 1 MiB")
        raw = json.loads(summary.read_bytes())
        return BacktestRun(path.name, BacktestSummary.model_validate(raw))
    except FileNotFoundError:
        return BacktestRun(path.name, None, f"no {SUMMARY_FILE} (running, or stopped early)")
    except (OSError, ValueError, ValidationError) as exc:
        return BacktestRun(path.name, None, f"{SUMMARY_FILE} unreadable ({type(exc).__name__})")
