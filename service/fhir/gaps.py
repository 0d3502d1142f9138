"""What the data layer could not get: the gaps the `data-incomplete` card reports."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataGap:
    """Data a check needed but could not get; becomes the `data-incomplete` card."""

    key: str  # prefetch key or data category, e.g. "coverage"
    reason: str  # plain words, no PHI: "FHIR server timed out"
