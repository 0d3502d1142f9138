"""The facts: a small, typed, immutable view of one hook call, built once, read by every rule.

Rules see only these types: no FHIR JSON, no HTTP. Codes are normalised to a short system name
(``cpt``, ``hcpcs``, ``icd10cm``, ``snomed``, ``loinc``, ``sopt`` ...) using the alias table in the
rule data, so a rule never has to know that SOPT is spelled three ways.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import Literal

from service.fhir.gaps import DataGap
from service.knowledge.vocabulary import CodeSet

OrderOrigin = Literal["draft", "existing"]


@dataclass(frozen=True)
class Order:
    """A request resource: a draft order from the hook context or an existing order on file."""

    ref: str  # "ServiceRequest/123"
    codes: CodeSet
    reason_codes: CodeSet  # reasonCode plus resolved reasonReference conditions
    status: str | None
    origin: OrderOrigin
    service_date: date  # occurrence[x], else the signing date
    selected: bool = True  # order-select: in context.selections; order-sign: always True
    display: str | None = None  # human label for card text ("FFR-CT (75580)")
    insurance_refs: tuple[str, ...] = ()
    # References the order makes to other resources (basedOn, supportingInfo): which CCTA an
    # FFR-CT order is for.
    linked_refs: frozenset[str] = frozenset()
    # True when a reasonReference could not be resolved: its codes are unknown, not absent.
    reasons_unresolved: bool = False
    # True when a reasonCode has no code in a known system (text only, or a local code): what it
    # says is unknown to the rules, not absent.
    reasons_uncoded: bool = False


@dataclass(frozen=True)
class PerformedStudy:
    """A procedure, report or imaging study already on file (CCTA, FFR-CT, stent...)."""

    ref: str
    kind: Literal["procedure", "report", "imaging-study"]
    codes: CodeSet
    status: str | None
    performed: date | None
    linked_refs: frozenset[str] = frozenset()  # basedOn, partOf, imagingStudy, report ...


@dataclass(frozen=True)
class CctaResult:
    """The reading of one CCTA (DiagnosticReport/Procedure/ImagingStudy)."""

    ref: str
    performed: date | None
    max_stenosis_percent: float | None  # largest % quantity among its results
    cad_rads: str | None  # "0", "1", "2", "3", "4A", "4B", "5", "N"
    cad_rads_modifiers: frozenset[str] = frozenset()  # "S", "G", "HRP", ...
    # No single % known: the stenosis bounds (low, high) in %, as reported ("50-69 %") or
    # derived from the CAD-RADS category.
    stenosis_range: tuple[float, float] | None = None
    stenosis_range_measured: bool = False  # True: reported as a range, not from CAD-RADS
    # Every reference that denotes this CCTA (its report, procedure, imaging study, the 75574
    # order it was based on): an FFR-CT linked to any of them is for this CCTA.
    aliases: frozenset[str] = frozenset()
    # A result the report refers to was not received: its stenosis or modifier is unknown.
    results_unread: bool = False


@dataclass(frozen=True)
class CctaTarget:
    """The CCTA an FFR-CT order is derived from: one on file (with its reading), or a 75574
    ordered but not yet read (in the same draft, or an active order on file)."""

    ccta: CctaResult | None = None
    draft: Order | None = None  # the 75574 order when the CCTA has no reading yet

    @property
    def aliases(self) -> frozenset[str]:
        if self.ccta is not None:
            return self.ccta.aliases | {self.ccta.ref}
        return frozenset({self.draft.ref}) if self.draft else frozenset()

    @property
    def day(self) -> date | None:
        if self.ccta is not None:
            return self.ccta.performed
        return self.draft.service_date if self.draft else None


# Order statuses that mean "ordered and still standing, or done": not draft, revoked, void.
STANDING_ORDER_STATUSES = frozenset({"active", "on-hold", "completed"})


@dataclass(frozen=True)
class Diagnosis:
    """An active Condition (problem list or encounter diagnosis)."""

    ref: str
    codes: CodeSet
    onset: date | None  # onset[x] only; None when the chart does not say
    category: Literal["problem-list-item", "encounter-diagnosis", "other"] = "other"
    recorded: date | None = None  # recordedDate: when it was written down, not when it began


PayerKind = Literal[
    "original-medicare",
    "medicare-advantage",
    "medicare-unknown",
    "medicaid",
    "commercial",
    "other",
    "unknown",
    "undetermined",  # several coverages in force and no way to tell which is primary
]


@dataclass(frozen=True)
class CoverageFacts:
    """The primary coverage for the date of service, classified by the payer directory."""

    ref: str  # "Coverage/abc"
    payer_kind: PayerKind
    payer_profile: str | None  # payer directory row id, e.g. "horizon-bcbs-nj"
    payer_name: str | None
    state: str | None  # patient's state, for state-specific payer policies
    why: str  # how the classification was made, for card detail and audit


@dataclass(frozen=True)
class Facts:
    today: date
    patient_ref: str
    patient_state: str | None
    draft_orders: tuple[Order, ...]
    existing_orders: tuple[Order, ...] = ()
    performed: tuple[PerformedStudy, ...] = ()
    diagnoses: tuple[Diagnosis, ...] = ()
    # Non-void Conditions no longer active (resolved, inactive, remission): history that still
    # counts inside a time window, e.g. an acute MI resolved last week.
    inactive_diagnoses: tuple[Diagnosis, ...] = ()
    cctas: tuple[CctaResult, ...] = ()
    # The DiagnosticReports and ImagingStudies the service received ("DiagnosticReport/1"): a
    # link to one of them can be checked, a link to anything else cannot.
    on_file_refs: frozenset[str] = frozenset()
    has_bmi: bool | None = None  # None: could not be determined
    coverage: CoverageFacts | None = None  # primary for the first focus order's date of service
    # Primary coverage per date of service of the focus orders; a date not listed uses
    # `coverage`. Read it through `coverage_for(order)`.
    coverage_by_date: tuple[tuple[date, CoverageFacts | None], ...] = ()
    coverage_known: bool = True  # False: coverage data was unavailable (not "no coverage")
    other_coverages: tuple[CoverageFacts, ...] = ()
    gaps: tuple[DataGap, ...] = field(default=())
    # The CCTA each FFR-CT draft order is for, by order ref (service.facts.ccta; absent: none
    # known). Read it through `ccta_target(ref)`.
    ccta_targets: tuple[tuple[str, CctaTarget], ...] = ()

    @property
    def focus_orders(self) -> tuple[Order, ...]:
        """The orders decision support is about: selections on order-select, all on order-sign."""
        return tuple(o for o in self.draft_orders if o.selected)

    def coverage_for(self, order: Order) -> CoverageFacts | None:
        """The primary coverage on the order's own date of service."""
        for day, coverage in self.coverage_by_date:
            if day == order.service_date:
                return coverage
        return self.coverage

    def ccta_target(self, order_ref: str) -> CctaTarget | None:
        """The CCTA an FFR-CT draft order is for; None when no CCTA is known."""
        return self._ccta_by_ref.get(order_ref)

    @cached_property
    def _ccta_by_ref(self) -> dict[str, CctaTarget]:
        return dict(self.ccta_targets)  # built once: rules ask per order, drafts may be many

    def unavailable(self, key: str) -> bool:
        return any(g.key == key for g in self.gaps)
