"""Plotly figures (plain JSON: data + layout) for the dashboard's numbers. plotly.js, served
from the installed plotly package by the admin app, draws them in the browser."""

from __future__ import annotations

import html
from collections import defaultdict
from typing import Any

from service.dashboard.data import LIVE, Counts, Dashboard

COLOURS = {
    "accepted": "#2e7d32",
    "overridden": "#c62828",
    "ignored": "#9e9e9e",
    "silent": "#1565c0",
}
OUTCOMES = ("accepted", "overridden", "ignored", "silent")
MAX_REASONS = 10
_FONT = {"family": "system-ui, sans-serif", "size": 12}


def _text(value: str) -> str:
    """plotly.js reads a few HTML tags in labels (<a href>, <b>, <br>); a label that comes from
    data (a client's override reason, a run id) is shown as the text it is."""
    return html.escape(value, quote=False)


def _reason(row: dict[str, Any]) -> str:
    if not row["code"]:
        return "(no reason given)"
    return f"{row['display']} [{row['code']}]" if row["display"] else str(row["code"])


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "title": {"text": title, "x": 0, "xanchor": "left", "y": 0.98, "yanchor": "top"},
        "font": _FONT,
        "margin": {"l": 60, "r": 20, "t": 70, "b": 40},
        "height": 320,
        "legend": {
            "orientation": "h",
            "traceorder": "normal",
            "x": 1,
            "xanchor": "right",
            "y": 1.02,
            "yanchor": "bottom",
        },
        "hovermode": "closest",
    }
    layout.update(extra)
    return layout


def _outcome_bars(groups: dict[str, Counts], title: str) -> dict[str, Any]:
    """Horizontal stacked bars: one per group, split by outcome."""
    names = sorted(groups)
    data = [
        {
            "type": "bar",
            "orientation": "h",
            "name": outcome,
            "y": [_text(n) for n in names],
            "x": [getattr(groups[n], outcome) for n in names],
            "marker": {"color": COLOURS[outcome]},
        }
        for outcome in OUTCOMES
    ]
    height = max(240, 130 + 30 * len(names))
    return {
        "data": data,
        "layout": _layout(
            title,
            barmode="stack",
            height=height,
            margin={"l": 220, "r": 20, "t": 70, "b": 40},
            yaxis={"automargin": True, "autorange": "reversed"},
            xaxis={"title": {"text": "cards"}, "rangemode": "tozero"},
        ),
    }


def figures(dashboard: Dashboard, tables: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    buckets = dashboard.filters.buckets()
    labels = [b.isoformat() for b in buckets]
    per_bucket: dict[str, Counts] = defaultdict(Counts)
    rate: dict[str, dict[str, float | None]] = defaultdict(dict)
    for (bucket, topic), counts in dashboard.by_bucket.items():
        total = per_bucket[bucket.isoformat()]
        total.issued += counts.issued
        total.accepted += counts.accepted
        total.overridden += counts.overridden
        total.silent += counts.silent
        rate[topic][bucket.isoformat()] = counts.wire()["overrideRate"]
    unit = "day" if dashboard.filters.bucket == "day" else "week (from Monday)"
    found: dict[str, dict[str, Any]] = {
        "timeline": {
            "data": [
                {
                    "type": "bar",
                    "name": outcome,
                    "x": labels,
                    "y": [getattr(per_bucket[label], outcome) for label in labels],
                    "marker": {"color": COLOURS[outcome]},
                }
                for outcome in OUTCOMES
            ],
            "layout": _layout(
                f"Cards per {unit}",
                barmode="stack",
                xaxis={"type": "category", "title": {"text": unit}},
                yaxis={"title": {"text": "cards"}, "rangemode": "tozero"},
            ),
        },
        "overrideRate": {
            "data": [
                {
                    "type": "scatter",
                    "mode": "lines+markers",
                    "name": _text(topic),
                    "x": labels,
                    "y": [rate[topic].get(label) for label in labels],
                    "connectgaps": False,
                }
                for topic in sorted(rate)
            ],
            "layout": _layout(
                f"Override rate per {unit} (overridden / answered)",
                xaxis={"type": "category", "title": {"text": unit}},
                yaxis={"tickformat": ".0%", "range": [0, 1.05]},
            ),
        },
        "topics": _outcome_bars(dashboard.by_topic, "Per topic"),
        "payerProfiles": _outcome_bars(dashboard.by_payer_profile, "Per payer profile"),
    }
    reasons = tables["overrideReasons"][:MAX_REASONS]
    found["overrideReasons"] = {
        "data": [
            {
                "type": "bar",
                "orientation": "h",
                "name": "overridden",
                "y": [_text(_reason(r)) for r in reasons],
                "x": [r["overridden"] for r in reasons],
                "marker": {"color": COLOURS["overridden"]},
            }
        ],
        "layout": _layout(
            f"Top {MAX_REASONS} override reasons",
            height=max(240, 130 + 30 * len(reasons)),
            margin={"l": 220, "r": 20, "t": 70, "b": 40},
            yaxis={"automargin": True, "autorange": "reversed"},
            xaxis={"title": {"text": "cards overridden"}, "rangemode": "tozero"},
            showlegend=False,
        ),
    }
    comparison = tables["backtestTopics"]
    if comparison:
        runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in comparison:
            runs[row["run"]].append(row)
        found["backtest"] = {
            "data": [
                {
                    "type": "bar",
                    "name": "live" if run == LIVE else _text(f"back-test {run}"),
                    "x": [_text(r["topic"]) for r in rows],
                    "y": [r["per100Orders"] for r in rows],
                }
                for run, rows in runs.items()
            ],
            "layout": _layout(
                "Fires per 100 orders: live and back-tests",
                barmode="group",
                height=380,
                xaxis={"type": "category", "tickangle": -30, "automargin": True},
                yaxis={"title": {"text": "fires per 100 orders"}, "rangemode": "tozero"},
            ),
        }
    return found
