"""Primary coverage and payer classification, from messy Coverage JSON and the payer directory.

Contract: shared/reference/rules.md §4 and research/clinical-rules.md §6.3. The primary coverage
is the active Coverage of this patient whose period covers the date of service, lowest `order`
first (missing order last). It is then matched against the payer directory (payers.yaml):

1. A SOPT code on Coverage.type decides the payer kind (exact codes before families, longer
   families first): a commercial carrier's Medicare Advantage or Medicaid plan is MA/Medicaid,
   whatever the payor is called. A payor identifier or name (longest alias) may then pick a
   more specific row of the same kind; a conflicting name is ignored and noted in `why`.
2. Without a usable SOPT code, a payor identifier match, then the longest name/alias match.
3. Medicare with no usable type (SOPT 1, or only the word "Medicare") is "medicare-unknown",
   unless a Medigap-type secondary shows Original Medicare is primary. We never guess an ABN.
4. The agency name "Centers for Medicare & Medicaid Services" (CMS) names both programs: it is
   read only when no plan or organization name says which one (a KanCare Medicaid plan is
   Medicaid). A SOPT code of a private-carrier branch (5, 6, 7 families) says who the carrier
   is, not the program: a plan named "Medicare Advantage" or "Medicaid" wins over it.
5. A drug-only coverage (SOPT 122 Part D, 191 pharmacy benefit manager) is never primary for a
   procedure (research/clinical-rules.md §6.3 step 1). Two coverages in force with the same
   `order` (or none) and different payers: the primary is "undetermined", not the first listed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

from fhir.resources.R4B.coverage import Coverage
from fhir.resources.R4B.organization import Organization
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.reference import Reference

from service.facts.dates import to_date
from service.facts.model import CoverageFacts, Order, PayerKind
from service.fhir.gaps import DataGap
from service.fhir.gather import GatheredData
from service.knowledge.catalogue import PayerRow, RuleData

MEDICARE_KINDS = frozenset({"original-medicare", "medicare-advantage"})
_MEDICARE_WORD = re.compile(r"\bmedicare\b", re.IGNORECASE)
_CMS_AGENCY = re.compile(
    r"\bCenters for Medicare (?:&|and) Medicaid Services\b|\bCMS\b", re.IGNORECASE
)
# Program kinds a commercial carrier administers: a plan name saying one of them outranks a
# private-carrier SOPT family (SOPT 6 "BCBS" + plan "Medicare Advantage PPO" is MA).
_PROGRAM_KINDS = frozenset({"medicare-advantage", "medicaid"})
_DRUG_ONLY_SOPT = frozenset({"122", "191"})


@dataclass(frozen=True)
class PayerEvidence:
    """What a Coverage says about its payer, normalised: no FHIR types past this point."""

    coverage_ref: str
    sopt: frozenset[str]
    identifiers: frozenset[tuple[str, str]]
    names: tuple[str, ...]  # payor display, Organization names, plan/group names
    order: int | None
    payor_names: tuple[str, ...] = ()  # payor display and Organization names only
    member_id_systems: frozenset[str] = frozenset()  # Coverage.identifier systems
    plan_ids: tuple[str, ...] = ()  # Coverage.class plan/subplan values


@dataclass(frozen=True)
class Classified:
    evidence: PayerEvidence
    kind: PayerKind
    row: PayerRow | None
    why: str


def _sopt_codes(coverage: Coverage, rule_data: RuleData) -> frozenset[str]:
    uris = set(rule_data.systems.get("sopt", []))
    codings = coverage.type.coding if coverage.type and coverage.type.coding else []
    return frozenset(
        c.code.strip() for c in codings if c is not None and c.code and (c.system or "") in uris
    )


def _organizations(
    coverage: Coverage, known: Sequence[Organization]
) -> Iterable[tuple[Reference, Organization | None]]:
    contained = {
        f"#{r.id}": r for r in coverage.contained or [] if isinstance(r, Organization) and r.id
    }
    by_ref = {f"Organization/{o.id}": o for o in known if o.id}
    for payor in coverage.payor or []:
        ref = payor.reference or ""
        org = contained.get(ref) or by_ref.get(ref) or by_ref.get(ref.split("/_history")[0])
        if org is None and ref.startswith("http"):
            org = next((o for key, o in by_ref.items() if ref.endswith("/" + key)), None)
        yield payor, org


def evidence_of(
    coverage: Coverage, organizations: Sequence[Organization], rule_data: RuleData
) -> PayerEvidence:
    identifiers: set[tuple[str, str]] = set()
    names: list[str] = []
    for payor, org in _organizations(coverage, organizations):
        if payor.identifier and payor.identifier.value:
            identifiers.add((payor.identifier.system or "", payor.identifier.value))
        if payor.display:
            names.append(payor.display)
        if org is not None:
            identifiers |= {
                (i.system or "", i.value) for i in org.identifier or [] if i is not None and i.value
            }
            names += [n for n in [org.name, *(org.alias or [])] if n]
    payor_names = tuple(names)
    plan_ids: list[str] = []
    for cls in coverage.class_fhir or []:
        names += [n for n in (cls.name, cls.value) if n]
        kinds = {c.code for c in (cls.type.coding or []) if c} if cls.type else set()
        if cls.value and kinds & {"plan", "subplan"}:
            plan_ids.append(cls.value.strip())
    return PayerEvidence(
        coverage_ref=f"Coverage/{coverage.id}",
        sopt=_sopt_codes(coverage, rule_data),
        identifiers=frozenset(identifiers),
        names=tuple(names),
        order=coverage.order,
        payor_names=payor_names,
        member_id_systems=frozenset(
            i.system for i in coverage.identifier or [] if i is not None and i.system and i.value
        ),
        plan_ids=tuple(plan_ids),
    )


def _sopt_score(row: PayerRow, sopt: frozenset[str]) -> int:
    """0 = no match; exact codes outrank families, longer families outrank shorter ones."""
    best = 0
    for pattern in row.match.sopt:
        if pattern.endswith("*"):
            stem = pattern[:-1]
            if any(code.startswith(stem) for code in sopt):
                best = max(best, len(stem))
        elif pattern in sopt:
            best = max(best, 100)
    return best


@lru_cache(maxsize=1024)
def _alias_pattern(alias: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(alias)}(?!\w)", re.IGNORECASE)


def _name_score(row: PayerRow, names: Sequence[str]) -> int:
    """Length of the longest alias found as whole words in any name (0 = none)."""
    best = 0
    for alias in row.match.names:
        pattern = _alias_pattern(alias)
        if any(pattern.search(name) for name in names):
            best = max(best, len(alias))
    return best


def _plain(name: str) -> str:
    """ "Medicare Parts A & B." -> "medicare parts a and b": how exact names are compared."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", name.lower().replace("&", " and ")).split())


def _is_exactly(row: PayerRow, names: Sequence[str]) -> bool:
    """Every payor name is one of the row's exact names (and there is at least one)."""
    exact = {_plain(n) for n in row.match.exact_names}
    return bool(names) and bool(exact) and all(_plain(n) in exact for n in names)


def _plan_id_match(row: PayerRow, plan_ids: Sequence[str]) -> bool:
    return any(
        _compiled(pattern).fullmatch(value)
        for pattern in row.match.plan_id_patterns
        for value in plan_ids
    )


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _the_program_itself(
    evidence: PayerEvidence, rows: Sequence[PayerRow]
) -> tuple[PayerRow, str] | None:
    """A government program recorded as the payor itself: the payor is named only "Medicare"
    (or "CMS", "Medicare Part B" ...), or the member id is under the program's own identifier
    system (the Medicare MBI) and no payor name says otherwise. rules.md §4 (revised
    2026-12-01)."""
    for row in rows:
        if _is_exactly(row, evidence.payor_names):
            return row, f"the payor is {evidence.payor_names[0]!r} itself"
        system = next(
            (s for s in row.match.member_id_systems if s in evidence.member_id_systems), None
        )
        if system is not None and (
            not evidence.payor_names or _is_exactly(row, evidence.payor_names)
        ):
            return row, f"member id under {system}"
    return None


def _applies(row: PayerRow, state: str | None) -> bool:
    return row.states is None or (state is not None and state in row.states)


def classify(evidence: PayerEvidence, rule_data: RuleData, state: str | None) -> Classified:
    rows = [r for r in rule_data.payers if not r.match.empty and _applies(r, state)]

    def best(score: dict[str, int]) -> PayerRow | None:
        scored = [(score[r.id], -i, r) for i, r in enumerate(rows) if score[r.id] > 0]
        return max(scored, key=lambda t: (t[0], t[1]))[2] if scored else None

    sopt_scores = {r.id: _sopt_score(r, evidence.sopt) for r in rows}
    by_sopt = best(sopt_scores)
    by_id = next(
        (
            r
            for r in rows
            if any((i.system, i.value) in evidence.identifiers for i in r.match.identifiers)
        ),
        None,
    )
    # The CMS agency name says "Medicare" and "Medicaid" at once: other names decide first.
    specific = tuple(n for n in (_CMS_AGENCY.sub(" ", x).strip() for x in evidence.names) if n)
    by_name = best({r.id: _name_score(r, specific) for r in rows}) or best(
        {r.id: _name_score(r, evidence.names) for r in rows}
    )
    named, how = (by_id, "payor identifier") if by_id else (by_name, "payor or plan name")
    sopt_text = ", ".join(sorted(evidence.sopt)) or "none"
    # A commercial carrier's Medicare Advantage or Medicaid plan: the program named on the plan
    # (or its MA contract number, "H1036-077") wins over the carrier's name and over a
    # private-carrier SOPT family (not an exact code).
    program = best(
        {r.id: _name_score(r, specific) if r.kind in _PROGRAM_KINDS else 0 for r in rows}
    ) or next(
        (r for r in rows if r.kind in _PROGRAM_KINDS and _plan_id_match(r, evidence.plan_ids)),
        None,
    )
    carrier_only_sopt = by_sopt is None or (
        by_sopt.kind == "commercial" and sopt_scores[by_sopt.id] < 100
    )
    if program is not None and carrier_only_sopt and (named is None or named.kind == "commercial"):
        return Classified(
            evidence,
            program.kind,
            program,
            f"plan or payor name: {program.name} (SOPT {sopt_text} names no program)",
        )
    if by_sopt is not None:
        # The payer type code is structured data: it decides the kind. A name or identifier
        # may only pick a more specific row of the same kind (SOPT 6 + "BCBS Kansas").
        if named is not None and named.kind == by_sopt.kind and named is not by_sopt:
            return Classified(
                evidence, named.kind, named, f"{how}: {named.name} (SOPT {sopt_text})"
            )
        conflict = f"; ignored {how} {named.name!r}" if named and named.kind != by_sopt.kind else ""
        return Classified(
            evidence, by_sopt.kind, by_sopt, f"SOPT {sopt_text}: {by_sopt.name}{conflict}"
        )
    itself = _the_program_itself(evidence, rows)
    if itself is not None and program is None:
        row, how_known = itself
        return Classified(evidence, row.kind, row, f"{row.name}: {how_known} (SOPT {sopt_text})")
    medicare_hint = (
        any(code.startswith("1") for code in evidence.sopt)
        or any(_MEDICARE_WORD.search(n) for n in specific)
        or any(s in evidence.member_id_systems for r in rows for s in r.match.member_id_systems)
    )
    if named is not None and (named.kind in MEDICARE_KINDS or not medicare_hint):
        return Classified(evidence, named.kind, named, f"{how}: {named.name}")
    if medicare_hint:
        return Classified(
            evidence,
            "medicare-unknown",
            None,
            f"Medicare, but the coverage does not say Original Medicare or Medicare Advantage "
            f"(SOPT {sopt_text})",
        )
    return Classified(evidence, "unknown", None, f"no payer directory match (SOPT {sopt_text})")


def covers(coverage: Coverage, patient_id: str, on: date) -> bool:
    """Active, for this patient, and its period includes the date of service."""
    if coverage.status != "active":
        return False
    # Only a reference to ANOTHER patient excludes it: the search was by patient already, and
    # a beneficiary given by identifier or display alone is not evidence against it.
    beneficiary = (coverage.beneficiary.reference or "") if coverage.beneficiary else ""
    if beneficiary and beneficiary.split("/_history")[0].rstrip("/").split("/")[-1] != patient_id:
        return False
    period = coverage.period
    if period is None:
        return True
    start = to_date(period.start)
    end = to_date(period.end)
    return (start is None or start <= on) and (end is None or on <= end)


def primary_coverage(
    coverages: Sequence[Coverage],
    organizations: Sequence[Organization],
    *,
    patient_id: str,
    service_date: date,
    state: str | None,
    rule_data: RuleData,
) -> tuple[CoverageFacts | None, tuple[CoverageFacts, ...]]:
    """The primary coverage (classified) and the other coverages in force, in order."""
    candidates = sorted(
        (
            c
            for c in coverages
            if covers(c, patient_id, service_date) and not _drug_only(c, rule_data)
        ),
        key=lambda c: (c.order is None, c.order if c.order is not None else 0),
    )
    classified = [
        classify(evidence_of(c, organizations, rule_data), rule_data, state) for c in candidates
    ]
    supplements = [c for c in classified if c.row is not None and c.row.implies_primary]
    mains = [c for c in classified if c not in supplements] or supplements
    if not mains:
        return None, ()
    primary = mains[0]
    rivals = [
        c
        for c in mains[1:]
        if c.evidence.order == primary.evidence.order
        and (c.kind, c.row) != (primary.kind, primary.row)
    ]
    if rivals:
        # Coverage.order is the only ranking we have: with a tie, the bundle's order would
        # decide the ABN. Say it could not be determined instead (like SOPT 1).
        names = ", ".join(c.evidence.coverage_ref for c in (primary, *rivals))
        primary = Classified(
            primary.evidence,
            "undetermined",
            None,
            f"primary coverage could not be determined: {names} are in force with the same "
            "or no `order`",
        )
    implied = next((s for s in supplements if s is not primary), None)
    if primary.kind in {"medicare-unknown", "unknown"} and implied and implied.row:
        kind = implied.row.implies_primary
        row = next((r for r in rule_data.payers if r.kind == kind and not r.match.empty), None)
        if kind is not None:
            primary = Classified(
                primary.evidence,
                kind,
                row,
                f"{primary.why}; a {implied.row.name} secondary implies {kind} is primary",
            )
    others = [c for c in classified if c.evidence is not primary.evidence]
    return _facts(primary, state), tuple(_facts(c, state) for c in others)


def _drug_only(coverage: Coverage, rule_data: RuleData) -> bool:
    sopt = _sopt_codes(coverage, rule_data)
    return bool(sopt) and sopt <= _DRUG_ONLY_SOPT


def _facts(classified: Classified, state: str | None) -> CoverageFacts:
    row = classified.row
    return CoverageFacts(
        ref=classified.evidence.coverage_ref,
        payer_kind=classified.kind,
        payer_profile=row.id if row else None,
        payer_name=(classified.evidence.names[0] if classified.evidence.names else None)
        or (row.name if row else None),
        state=state,
        why=classified.why,
    )


_STATE_NAMES = {
    "ALABAMA": "AL", "ALASKA": "AK", "ARIZONA": "AZ", "ARKANSAS": "AR", "CALIFORNIA": "CA",
    "COLORADO": "CO", "CONNECTICUT": "CT", "DELAWARE": "DE", "DISTRICT OF COLUMBIA": "DC",
    "FLORIDA": "FL", "GEORGIA": "GA", "HAWAII": "HI", "IDAHO": "ID", "ILLINOIS": "IL",
    "INDIANA": "IN", "IOWA": "IA", "KANSAS": "KS", "KENTUCKY": "KY", "LOUISIANA": "LA",
    "MAINE": "ME", "MARYLAND": "MD", "MASSACHUSETTS": "MA", "MICHIGAN": "MI", "MINNESOTA": "MN",
    "MISSISSIPPI": "MS", "MISSOURI": "MO", "MONTANA": "MT", "NEBRASKA": "NE", "NEVADA": "NV",
    "NEW HAMPSHIRE": "NH", "NEW JERSEY": "NJ", "NEW MEXICO": "NM", "NEW YORK": "NY",
    "NORTH CAROLINA": "NC", "NORTH DAKOTA": "ND", "OHIO": "OH", "OKLAHOMA": "OK", "OREGON": "OR",
    "PENNSYLVANIA": "PA", "RHODE ISLAND": "RI", "SOUTH CAROLINA": "SC", "SOUTH DAKOTA": "SD",
    "TENNESSEE": "TN", "TEXAS": "TX", "UTAH": "UT", "VERMONT": "VT", "VIRGINIA": "VA",
    "WASHINGTON": "WA", "WEST VIRGINIA": "WV", "WISCONSIN": "WI", "WYOMING": "WY",
    "PUERTO RICO": "PR", "GUAM": "GU", "VIRGIN ISLANDS": "VI",
}  # fmt: skip


def normalise_state(value: str | None) -> str | None:
    """A USPS state code from "WI", "wi" or "Wisconsin"; None when it is not a US state."""
    if not value:
        return None
    text = " ".join(value.replace(".", " ").split()).upper()
    if len(text) == 2 and text.isalpha():
        return text if text in _STATE_NAMES.values() else None
    return _STATE_NAMES.get(text)


def patient_state(patients: Sequence[Patient], patient_id: str, on: date) -> str | None:
    """The state of the patient's current home address (not old, not billing-only)."""
    patient = next((p for p in patients if p.id == patient_id), None)
    if patient is None:
        return None
    usable = []
    for address in patient.address or []:
        if address.use in {"old", "billing"}:
            continue
        period = address.period
        if period is not None:
            end = to_date(period.end)
            start = to_date(period.start)
            if (end is not None and end < on) or (start is not None and start > on):
                continue
        usable.append(address)
    usable.sort(key=lambda a: 0 if a.use == "home" else 1)
    for address in usable:
        state = normalise_state(address.state)
        if state:
            return state
    return None


@dataclass(frozen=True)
class InsuranceFacts:
    """What build_facts needs from this module."""

    primary: CoverageFacts | None  # for the first focus order's date of service
    others: tuple[CoverageFacts, ...]
    # The primary coverage for each focus order's date of service: coverage can change between
    # two orders signed together (a plan ending on Dec 31, Medicare starting on Jan 1).
    by_date: tuple[tuple[date, CoverageFacts | None], ...]
    known: bool  # False: coverage data could not be obtained (not "no coverage")
    patient_state: str | None
    gaps: tuple[DataGap, ...]


def coverage_facts(
    data: GatheredData,
    rule_data: RuleData,
    *,
    patient_id: str,
    draft_orders: Sequence[Order],
    today: date,
) -> InsuranceFacts:
    """Primary coverage per focus order's date of service (else today's)."""
    focus = [o for o in draft_orders if o.selected]
    service_date = focus[0].service_date if focus else today
    state = patient_state(data.of_type(Patient), patient_id, service_date)
    known = not any(g.key == "coverage" for g in data.gaps)
    found: dict[date, tuple[CoverageFacts | None, tuple[CoverageFacts, ...]]] = {}
    for day in dict.fromkeys([service_date, *(o.service_date for o in focus)]):
        found[day] = primary_coverage(
            data.of_type(Coverage),
            data.of_type(Organization),
            patient_id=patient_id,
            service_date=day,
            state=state,
            rule_data=rule_data,
        )
    primary, others = found[service_date]
    return InsuranceFacts(
        primary=primary,
        others=others,
        by_date=tuple((day, cov) for day, (cov, _) in found.items()),
        known=known,
        patient_state=state,
        gaps=_coverage_gaps(focus, {day: cov for day, (cov, _) in found.items()}, rule_data),
    )


def _coverage_gaps(
    focus: Sequence[Order], by_date: dict[date, CoverageFacts | None], rule_data: RuleData
) -> tuple[DataGap, ...]:
    """Payer checks skipped because the primary's type or identity is not known."""
    cac = rule_data.codes("cac")
    kinds = [(o, c.payer_kind if (c := by_date.get(o.service_date)) else None) for o in focus]
    gaps = []
    if any(kind == "medicare-unknown" and cac.any_in(o.codes) for o, kind in kinds):
        # SOPT 1 alone: Original Medicare (ABN) or Medicare Advantage (no ABN) cannot be told
        # apart, so the ABN check is reported as skipped instead of guessed.
        gaps.append(
            DataGap(
                "coverage-type",
                "the coverage says Medicare but not whether it is Original Medicare or a "
                "Medicare Advantage plan, so the ABN check for the calcium score was skipped",
            )
        )
    if any(kind == "undetermined" for _, kind in kinds):
        gaps.append(
            DataGap(
                "coverage-primary",
                "two coverages are in force with the same or no order of applicability, so "
                "the primary payer could not be determined",
            )
        )
    return tuple(gaps)
