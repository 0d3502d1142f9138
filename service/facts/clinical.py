"""Clinical facts for the FFR-CT rules, read from messy FHIR: diagnoses, order reasons, the CCTA.

Real charts rarely look like the implementation guides: the symptom sits on the problem list
rather than on the order, the reason is a reference to a Condition (or to a contained one), the
CCTA exists only as an ImagingStudy, its stenosis is a CAD-RADS category in free text, or the
percentage hides in a `hasMember` panel. Everything here turns that into the small typed facts
of ``service.facts.model``; what cannot be read is left unknown (None), never guessed.

Sources: shared/reference/rules.md §2 "Reading the CCTA"; research/clinical-rules.md §7.4.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import date
from typing import Any, Literal

from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.procedure import Procedure
from fhir.resources.R4B.resource import Resource

from service.facts.codes import CodeReader
from service.facts.dates import to_date
from service.facts.model import CctaResult, Diagnosis, Order, PerformedStudy
from service.fhir.gaps import DataGap
from service.fhir.gather import GatheredData
from service.fhir.parse import ref_key
from service.knowledge.catalogue import RuleData
from service.knowledge.vocabulary import Code

# Condition.clinicalStatus codes that mean "the patient has this now" (absent status counts too).
ACTIVE_CLINICAL_STATUSES = frozenset({"active", "recurrence", "relapse"})
# Condition.verificationStatus codes that mean "this was never true".
VOID_VERIFICATION_STATUSES = frozenset({"entered-in-error", "refuted"})
# DiagnosticReport statuses with a reading a clinician can act on.
READ_REPORT_STATUSES = frozenset({"final", "amended", "corrected", "appended", "preliminary"})
VOID_OBSERVATION_STATUSES = frozenset({"entered-in-error", "cancelled"})
UCUM_URI = "http://unitsofmeasure.org"
_MAX_PANEL_DEPTH = 4  # hasMember nesting we follow; real reports use one or two levels

_CATEGORY = r"(4A|4B|0|1|2|3|4|5|N)"
# A category ends where a word or a decimal would go on: "2.0" is the version, "no" is not N.
_CATEGORY_END = r"(?![0-9A-Za-z]|\.\d)"
_MODIFIERS = r"((?:\s*/\s*[A-Za-z0-9+±\-]+)*)"
_VERSION = r"(?:\s*(?:v(?:ersion)?\s*)?[12]\.0(?!\d))?"  # "CAD-RADS 2.0", "CAD-RADS v1.0"
_LABEL = r"[\s,:=\-]*(?:(?:category|classification|cat\.?|score|grade)\b[\s:=\-]*)?"
_CAD_RADS_TEXT = re.compile(
    r"CAD[\s\-]?RADS" + _VERSION + _LABEL + _CATEGORY + _CATEGORY_END + _MODIFIERS, re.I
)
_CAD_RADS_BARE = re.compile(
    r"^\s*(?:(?:category|cat\.?)\s*)?" + _CATEGORY + _CATEGORY_END + _MODIFIERS + r"\s*$", re.I
)


def parse_cad_rads(text: str | None, *, bare: bool = False) -> tuple[str, frozenset[str]] | None:
    """ "CAD-RADS 4A/S/HRP" -> ("4A", {"S", "HRP"}). With `bare`, "3/G" alone is accepted too."""
    if not text:
        return None
    match = _CAD_RADS_TEXT.search(text) or (_CAD_RADS_BARE.match(text) if bare else None)
    if match is None:
        return None
    modifiers = frozenset(m.strip().upper() for m in match.group(2).split("/") if m.strip())
    return match.group(1).upper(), modifiers


def _refs(references: Iterable[Any] | Any | None) -> set[str]:
    if references is None:
        return set()
    if not isinstance(references, list):
        references = [references]
    return {k for r in references if r is not None and (k := ref_key(r.reference)) is not None}


def _typed_ref(resource: Resource) -> str:
    return f"{resource.get_resource_type()}/{resource.id}"


@dataclass(frozen=True)
class _Reading:
    max_percent: float | None = None
    cad_rads: str | None = None
    modifiers: frozenset[str] = frozenset()
    percent_range: tuple[float, float] | None = None  # reported as a range: "50-69 %"
    unread: bool = False  # a result the report refers to was not received


@dataclass
class _Candidate:
    """One resource that shows a CCTA was done; candidates for the same CCTA are merged."""

    rank: int  # report 0, procedure 1, imaging study 2: which ref names the merged CCTA
    ref: str
    performed: date | None
    aliases: set[str]
    reports: list[DiagnosticReport]


class ClinicalReader:
    """Reads the clinical facts out of the gathered resources, using the rule data's code lists."""

    def __init__(self, data: GatheredData, codes: CodeReader, rule_data: RuleData) -> None:
        self.data = data
        self.codes = codes
        self.rule_data = rule_data
        self.conditions = {_typed_ref(c): c for c in data.of_type(Condition) if c.id}
        self.observations = {_typed_ref(o): o for o in data.of_type(Observation) if o.id}
        self.reports = {_typed_ref(r): r for r in data.of_type(DiagnosticReport) if r.id}

    def _concept(self, concept: Any) -> frozenset[Code]:
        return frozenset(self.codes.concept(concept))

    def _diagnosis(self, concept: Any) -> frozenset[Code]:
        return frozenset(self.codes.concept(concept, diagnosis=True))

    # -- diagnoses and reasons ---------------------------------------------------------

    def diagnoses(self, *, active: bool = True) -> tuple[Diagnosis, ...]:
        """Active Conditions: clinicalStatus active/recurrence/relapse, or absent with no
        abatement; never entered-in-error or refuted. With ``active=False``: the other
        non-void Conditions (resolved, inactive, remission), history that still counts inside
        a time window (an acute MI resolved last week is still an MI within 30 days)."""
        found = []
        for ref, condition in self.conditions.items():
            if _is_void(condition) or _is_active(condition) is not active:
                continue
            categories = {c.code for cat in condition.category or [] for c in cat.coding or [] if c}
            category = next(
                (k for k in ("encounter-diagnosis", "problem-list-item") if k in categories),
                "other",
            )
            found.append(
                Diagnosis(
                    ref=ref,
                    codes=self._diagnosis(condition.code),
                    # Only a stated onset is an onset; recordedDate is when it was written down.
                    onset=to_date(condition.onsetDateTime or condition.onsetPeriod),
                    category=category,  # type: ignore[arg-type]
                    recorded=to_date(condition.recordedDate),
                )
            )
        return tuple(found)

    def with_clinical_links(self, order: Order, model: Resource) -> Order:
        """The order plus its resolved reasonReference codes and its links (basedOn, ...)."""
        reasons = set(order.reason_codes)
        unresolved = False
        contained = {f"#{c.id}": c for c in getattr(model, "contained", None) or [] if c.id}
        for reference in getattr(model, "reasonReference", None) or []:
            key = ref_key(reference.reference) if reference else None
            target = contained.get(key or "") or self.conditions.get(key or "")
            target = target or self.observations.get(key or "")
            if target is None:
                unresolved = True  # only a display, or a resource we do not have
                continue
            if isinstance(target, Condition) and not _is_void(target):
                reasons |= self._diagnosis(target.code)
            elif isinstance(target, Observation):
                reasons |= self._concept(target.code)
                reasons |= self._diagnosis(target.valueCodeableConcept)
            elif not isinstance(target, Condition):
                reasons |= self._concept(getattr(target, "code", None))
        links = _refs(getattr(model, "basedOn", None)) | _refs(
            getattr(model, "supportingInfo", None)
        )
        return replace(
            order,
            reason_codes=frozenset(reasons),
            reasons_unresolved=unresolved,
            linked_refs=frozenset(links),
        )

    def order_gaps(self, drafts: Iterable[Order]) -> tuple[DataGap, ...]:
        """What the focus FFR-CT / calcium-score drafts say that the checks cannot read: a reason
        given as text only, a link to a CCTA report or imaging study not received. The checks
        that depend on it stay silent; these gaps make the data-incomplete card name them."""
        in_scope = [o for o in drafts if o.selected and self.rule_data.in_scope(o.codes)]
        gaps = []
        if any(o.reasons_uncoded for o in in_scope):
            gaps.append(DataGap("reasonText", _UNCODED_REASON))
        on_file = self.on_file_refs()
        unseen = [
            ref
            for o in in_scope
            if self.rule_data.in_family("ffrct", o.codes)
            for ref in o.linked_refs
            if ref.startswith(("DiagnosticReport/", "ImagingStudy/")) and ref not in on_file
        ]
        if unseen:
            gaps.append(
                DataGap("linkedStudies", "the order links to a study that was not received")
            )
        return tuple(gaps)

    def on_file_refs(self) -> frozenset[str]:
        studies = {_typed_ref(s) for s in self.data.of_type(ImagingStudy) if s.id}
        return frozenset(set(self.reports) | studies)

    # -- studies on file ---------------------------------------------------------------

    def performed_studies(self) -> tuple[PerformedStudy, ...]:
        """Procedures and DiagnosticReports on file, with what they link to."""
        studies = [
            PerformedStudy(
                ref=_typed_ref(p),
                kind="procedure",
                codes=self._concept(p.code),
                status=p.status,
                performed=to_date(p.performedDateTime or p.performedPeriod),
                linked_refs=frozenset(_refs(p.basedOn) | _refs(p.partOf) | _refs(p.report)),
            )
            for p in self.data.of_type(Procedure)
        ]
        studies += [
            PerformedStudy(
                ref=ref,
                kind="report",
                codes=self._concept(r.code),
                status=r.status,
                performed=_report_date(r),
                linked_refs=frozenset(_refs(r.basedOn) | _refs(r.imagingStudy)),
            )
            for ref, r in self.reports.items()
        ]
        return tuple(studies)

    def has_bmi(self, bmi_unavailable: bool) -> bool | None:
        """True: a BMI with a value is on file. None: none found and the BMI data was missing."""
        bmi = self.rule_data.codes("bmi")
        for observation in self.observations.values():
            if observation.status in VOID_OBSERVATION_STATUSES:
                continue
            quantity = observation.valueQuantity
            if quantity is not None and quantity.value is not None:
                if bmi.any_in(self._concept(observation.code)):
                    return True
        return None if bmi_unavailable else False

    # -- the CCTA ----------------------------------------------------------------------

    def cctas(self) -> tuple[CctaResult, ...]:
        """Every CCTA on file, most recent first (undated last), with its reading."""
        groups = _merge(list(self._candidates()))
        results = [self._result(group) for group in groups]
        return tuple(sorted(results, key=lambda r: (r.performed or date.min, r.ref), reverse=True))

    def _candidates(self) -> Iterator[_Candidate]:
        ccta = self.rule_data.codes("ccta_result")
        for ref, report in self.reports.items():
            if report.status in READ_REPORT_STATUSES and ccta.any_in(self._concept(report.code)):
                aliases = {ref} | _refs(report.basedOn) | _refs(report.imagingStudy)
                yield _Candidate(0, ref, _report_date(report), aliases, [report])
        for procedure in self.data.of_type(Procedure):
            if procedure.status == "completed" and ccta.any_in(self._concept(procedure.code)):
                ref = _typed_ref(procedure)
                linked = _refs(procedure.report)
                reports = [self.reports[k] for k in linked if k in self.reports]
                aliases = {ref} | _refs(procedure.basedOn) | linked
                performed = to_date(procedure.performedDateTime or procedure.performedPeriod)
                yield _Candidate(1, ref, performed, aliases, reports)
        for study in self.data.of_type(ImagingStudy):
            if study.status == "available" and ccta.any_in(
                self.codes.concepts(study.procedureCode)
            ):
                ref = _typed_ref(study)
                yield _Candidate(2, ref, to_date(study.started), {ref} | _refs(study.basedOn), [])

    def _result(self, group: list[_Candidate]) -> CctaResult:
        named = min(group, key=lambda c: c.rank)
        reading = _combine(self._reading(r) for c in group for r in c.reports)
        bounds = self.rule_data.ccta_reading.cad_rads_ranges.get(reading.cad_rads or "")
        measured = reading.percent_range
        percent = reading.max_percent
        if percent is not None and measured is not None and measured[0] > percent:
            percent = None  # a vessel reported as 50-69 % is worse than another's 40 %
        if percent is not None:
            measured = None
        return CctaResult(
            ref=named.ref,
            performed=max((c.performed for c in group if c.performed), default=None),
            max_stenosis_percent=percent,
            cad_rads=reading.cad_rads,
            cad_rads_modifiers=reading.modifiers,
            stenosis_range=measured or ((float(bounds[0]), float(bounds[1])) if bounds else None),
            stenosis_range_measured=measured is not None,
            aliases=frozenset(a for c in group for a in c.aliases),
            results_unread=reading.unread,
        )

    def _reading(self, report: DiagnosticReport) -> _Reading:
        contained = {f"#{c.id}": c for c in report.contained or [] if c.id}
        readings = [self._cad_rads_of_report(report)]
        seen: set[str] = set()
        pending = [(k, 0) for k in _ordered_refs(report.result)]
        while pending:
            key, depth = pending.pop()
            if key in seen or depth > _MAX_PANEL_DEPTH:
                continue
            seen.add(key)
            observation = contained.get(key) or self.observations.get(key)
            if not isinstance(observation, Observation):
                if observation is None and key.startswith(("Observation/", "#")):
                    readings.append(_Reading(unread=True))  # its value is unknown, not absent
                continue
            if observation.status in VOID_OBSERVATION_STATUSES:
                continue
            readings.append(self._observation_reading(observation))
            pending += [(k, depth + 1) for k in _ordered_refs(observation.hasMember)]
        return _combine(readings)

    def _cad_rads_of_report(self, report: DiagnosticReport) -> _Reading:
        """CAD-RADS from the conclusion: coded (DICOM CID 3020-3022) and written ("4A/S")."""
        codes = [c for concept in report.conclusionCode or [] for c in self._concept(concept)]
        category = self._coded_cad_rads(codes)
        modifiers = self._coded_modifiers(codes)
        parsed = parse_cad_rads(report.conclusion)
        if parsed:
            category = category or parsed[0]
            modifiers |= parsed[1]
        return _Reading(cad_rads=category, modifiers=modifiers)

    def _coded_modifiers(self, codes: Iterable[Code]) -> frozenset[str]:
        mapping = self.rule_data.ccta_reading.cad_rads_modifier_codes
        return frozenset(mapping[str(c)] for c in codes if str(c) in mapping)

    def _coded_cad_rads(self, codes: Iterable[Code]) -> str | None:
        mapping = self.rule_data.ccta_reading.cad_rads_value_codes
        return next((mapping[str(c)] for c in sorted(codes) if str(c) in mapping), None)

    def _observation_reading(self, observation: Observation) -> _Reading:
        readings = [self._value_reading(observation.code, observation, None)] + [
            self._value_reading(component.code, component, observation.code)
            for component in observation.component or []
        ]
        return _combine(readings)

    def _value_reading(self, concept: Any, holder: Any, parent: Any) -> _Reading:
        """The stenosis % or CAD-RADS category carried by one observation or component value.

        A percentage counts as stenosis only when it plausibly is one (rules.yaml
        ffrct-stenosis-out-of-range `stenosis_terms` / `non_stenosis_terms`): a configured
        stenosis code always; a known non-stenosis code (LVEF ...) or a name saying percentile,
        ejection fraction, calcium, plaque ... never; otherwise a % result of a CCTA report is
        read as stenosis (vessel-named results: "LAD 60 %"). A range ("50-69 %" as valueRange,
        valueString or concept text) is kept as a range, never narrowed to a point.
        """
        codes = self._concept(concept)
        kind = self._percent_kind(codes, concept, parent)
        percent = None
        percent_range = None
        quantity = holder.valueQuantity
        if kind != "other":
            if quantity is not None and quantity.value is not None:
                if kind == "stenosis-coded" or _is_percent(quantity):
                    percent = float(quantity.value)
            percent_range = _quantity_range(holder.valueRange)
        is_cad_rads_slot = self.rule_data.codes("ccta_cad_rads").any_in(codes) or _mentions(
            concept, ("CAD-RADS",)
        )
        value_concept = holder.valueCodeableConcept
        category = self._coded_cad_rads(self._concept(value_concept))
        modifiers = self._coded_modifiers(self._concept(value_concept))
        texts = [holder.valueString]
        if value_concept is not None:
            texts += [value_concept.text] + [c.display for c in value_concept.coding or [] if c]
            if is_cad_rads_slot:
                texts += [c.code for c in value_concept.coding or [] if c]
        for text in texts:
            parsed = parse_cad_rads(text, bare=is_cad_rads_slot)
            if parsed:
                category = category or parsed[0]
                modifiers |= parsed[1]
            elif percent is None and percent_range is None and kind != "other":
                spoken = self._stenosis_in_text(text, named=kind != "unnamed")
                if isinstance(spoken, tuple):
                    percent_range = spoken
                else:
                    percent = spoken
        return _Reading(percent, category, modifiers, percent_range)

    def _terms(self, name: Literal["stenosis_terms", "non_stenosis_terms"]) -> tuple[str, ...]:
        return tuple(getattr(self.rule_data.ccta_reading, name))

    def _percent_kind(self, codes: frozenset[Code], concept: Any, parent: Any) -> str:
        """ "stenosis-coded" (a configured stenosis code: its number is a % even unitless),
        "stenosis" (named as one), "other" (known not to be stenosis), "unnamed" (no cue)."""
        if self.rule_data.codes("ccta_stenosis").any_in(codes):
            return "stenosis-coded"
        if self.rule_data.codes("non_stenosis_percent").any_in(codes):
            return "other"
        for named in (concept, parent):
            if _mentions(named, self._terms("stenosis_terms")):
                return "stenosis"
            if _mentions(named, self._terms("non_stenosis_terms")):
                return "other"
        return "unnamed"

    def _stenosis_in_text(
        self, text: str | None, *, named: bool
    ) -> float | tuple[float, float] | None:
        """A % or % range written in a value ("50-69%", "Moderate stenosis (50-69 %)"); for a
        result with no stenosis name, only when the text itself says stenosis."""
        if not text or _mentions_text(text, self._terms("non_stenosis_terms")):
            return None
        if not named and not _mentions_text(text, self._terms("stenosis_terms")):
            return None
        spread = _PERCENT_RANGE.search(text)
        if spread:
            low, high = float(spread.group(1)), float(spread.group(2))
            return (low, high) if 0 <= low <= high <= 100 else None
        single = _PERCENT.search(text)
        if single and 0 <= float(single.group(1)) <= 100:
            return float(single.group(1))
        return None


_UNCODED_REASON = (
    "a reason on the order is text or a local code only; code it (ICD-10-CM) so the checks and "
    "the claim can read it"
)
_NUMBER = r"(\d{1,3}(?:\.\d+)?)"
_PERCENT_SIGN = r"\s*(?:%|percent\b)"
_PERCENT_RANGE = re.compile(
    _NUMBER + r"(?:" + _PERCENT_SIGN + r")?\s*(?:-|\u2013|to)\s*" + _NUMBER + _PERCENT_SIGN, re.I
)
_PERCENT = re.compile(r"(?<![\d.])" + _NUMBER + _PERCENT_SIGN, re.I)


def _is_percent(quantity: Any) -> bool:
    if quantity is None:
        return False
    return (quantity.code == "%" and quantity.system in (None, UCUM_URI)) or (
        quantity.code is None and (quantity.unit or "").strip() == "%"
    )


def _quantity_range(value: Any) -> tuple[float, float] | None:
    """valueRange in % as (low, high); an open end is 0 or 100."""
    if value is None:
        return None
    low, high = value.low, value.high
    ends = [q for q in (low, high) if q is not None and q.value is not None]
    if not ends or not all(_is_percent(q) for q in ends):
        return None
    bottom = float(low.value) if low is not None and low.value is not None else 0.0
    top = float(high.value) if high is not None and high.value is not None else 100.0
    return (bottom, top) if 0 <= bottom <= top <= 100 else None


def _is_void(condition: Condition) -> bool:
    verification = (
        {c.code for c in (condition.verificationStatus.coding or [])}
        if (condition.verificationStatus)
        else set()
    )
    return bool(verification & VOID_VERIFICATION_STATUSES)


def _is_active(condition: Condition) -> bool:
    if _is_void(condition):
        return False
    if condition.clinicalStatus is None:
        # No status but an abatement date: resolved (FHIR con-4 requires an inactive status then).
        return not any(
            getattr(condition, f"abatement{kind}", None) is not None
            for kind in ("DateTime", "Age", "Period", "Range", "String")
        )
    statuses = {c.code for c in condition.clinicalStatus.coding or [] if c}
    return bool(statuses & ACTIVE_CLINICAL_STATUSES)


def _report_date(report: DiagnosticReport) -> date | None:
    return to_date(report.effectiveDateTime or report.effectivePeriod) or to_date(report.issued)


def _ordered_refs(references: Iterable[Any] | None) -> list[str]:
    return sorted(_refs(list(references or [])))


def _mentions(concept: Any, words: Iterable[str]) -> bool:
    if concept is None:
        return False
    texts = [concept.text] + [c.display for c in concept.coding or [] if c]
    return any(_mentions_text(t, words) for t in texts if t)


def _mentions_text(text: str, words: Iterable[str]) -> bool:
    lowered = text.lower()
    return any(word.lower() in lowered for word in words)


def _cad_rads_rank(category: str | None) -> int:
    order = ["N", "0", "1", "2", "3", "4", "4A", "4B", "5"]
    return order.index(category) if category in order else -1


def _combine(readings: Iterable[_Reading]) -> _Reading:
    """The largest percentage, the most severe range and CAD-RADS category, every modifier."""
    readings = list(readings)
    percents = []
    ranges: list[tuple[float, float]] = []
    category: str | None = None
    modifiers: set[str] = set()
    for reading in readings:
        if reading.max_percent is not None:
            percents.append(reading.max_percent)
        if reading.percent_range is not None:
            ranges.append(reading.percent_range)
        if _cad_rads_rank(reading.cad_rads) > _cad_rads_rank(category):
            category = reading.cad_rads
        modifiers |= reading.modifiers
    worst_range = max(ranges, key=lambda r: (r[1], r[0]), default=None)
    return _Reading(
        max(percents, default=None),
        category,
        frozenset(modifiers),
        worst_range,
        unread=any(r.unread for r in readings),
    )


def _merge(candidates: list[_Candidate]) -> list[list[_Candidate]]:
    """Group candidates that are the same CCTA: they share a reference or the same date."""
    groups: list[list[_Candidate]] = []
    for candidate in candidates:
        joined = [
            g
            for g in groups
            if any(
                candidate.aliases & member.aliases
                or (candidate.performed is not None and candidate.performed == member.performed)
                for member in g
            )
        ]
        merged = [candidate] + [m for g in joined for m in g]
        groups = [g for g in groups if not any(g is j for j in joined)] + [merged]
    return groups
