"""The one date reader of the facts layer: FHIR date, dateTime and Period values as dates."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any


def to_date(value: Any) -> date | None:
    """A FHIR date/dateTime/Period start as a date; None when absent.

    fhir.resources gives full dates as date/datetime but partial ones ("2026", "2026-12") as
    strings; a partial date is not a day, so it reads as None.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    start = getattr(value, "start", None)
    if start is not None:
        return to_date(start)
    if isinstance(value, str):
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None
