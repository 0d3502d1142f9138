"""FFR-CT (CPT 75580; deleted Category III codes 0501T-0504T) appropriateness and documentation.

Source unless noted: seeds/deepvessel-ffrct-cpt-75580.txt ("What to include / avoid in FFRCT
order"); Medicare LCD limitations from Noridian L38613/L38615 and NGS L39075; catalogue in
shared/reference/rules.md §2. Every rule looks at the FFR-CT orders among ``facts.focus_orders``
(75580 or a legacy code: a legacy-coded order is an FFR-CT order for every check).

A rule that needs data the service could not get (``facts.unavailable(key)``) stays silent rather
than guess; the data-incomplete card names the skipped checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

from service.facts.model import (
    STANDING_ORDER_STATUSES,
    CctaTarget,
    Facts,
    Order,
    PerformedStudy,
)
from service.knowledge.catalogue import RuleData
from service.knowledge.vocabulary import Code
from service.rules.findings import Finding, ProposedAction
from service.rules.payers import order_label, payer_policy

FFRCT_CODE = Code("cpt", "75580")
CCTA_CODE = Code("cpt", "75574")
CCTA_DATA_KEYS = ("cctaReports", "procedures", "imagingStudies")
_ORDER_STATE = {
    "active": "an active FFR-CT order",
    "on-hold": "an FFR-CT order on hold",
    "completed": "a completed FFR-CT order",
}
FINAL_REPORT_STATUSES = frozenset({"final", "amended", "corrected", "appended"})
IMAGING_REF_TYPES = ("DiagnosticReport/", "ImagingStudy/")
MODIFIER_LABELS = {"S": "CAD-RADS modifier S (coronary stent)", "G": "CAD-RADS modifier G (graft)"}


def is_ffrct(order: Order, data: RuleData) -> bool:
    return data.in_family("ffrct", order.codes)


def ffrct_orders(facts: Facts, data: RuleData) -> list[Order]:
    return [o for o in facts.focus_orders if is_ffrct(o, data)]


def _reasons_unknown(order: Order) -> bool:
    """Part of what the order gives as its reason cannot be read (reference, text only)."""
    return order.reasons_unresolved or order.reasons_uncoded


# -- rules ----------------------------------------------------------------------------------


def symptoms_missing(facts: Facts, data: RuleData) -> Iterator[Finding]:
    """No cardiac symptom documented: not on the order (reasonCode, resolved reasonReference)
    and not among the active Conditions (problem list, encounter diagnoses).

    Silent when the answer is unknown rather than "no": the Conditions could not be read, a
    reasonReference points at something the service does not have, or a reason is given as
    text only ("Chest pain on exertion"); the facts record the gap and the data-incomplete card
    names the check. Unstable angina / ACS is not a stable symptom (rules.md §2, revised
    2026-12-01): with no stable symptom this card fires, and `excluded_history` says why the
    patient is not the stable one FFR-CT is for.
    """
    symptoms = data.codes("cardiac_symptoms")
    on_file = any(symptoms.any_in(d.codes) for d in facts.diagnoses)
    for order in ffrct_orders(facts, data):
        if on_file or symptoms.any_in(order.reason_codes):
            continue
        if facts.unavailable("conditions") or _reasons_unknown(order):
            continue
        yield Finding(
            topic="ffrct-symptoms-missing",
            order_refs=(order.ref,),
            details={"order": order_label(order, data)},
        )


def screening_use(facts: Facts, data: RuleData) -> Iterator[Finding]:
    """The FFR-CT is ordered as a screening test. Fires when either holds:

    A. The order's stated reasons include a screening code (Z13.6, Z00.00, Z00.01) and no other
       ICD-10-CM code and no cardiac symptom in any system, and every reasonReference resolved:
       the claim's diagnoses would all be screening ones, whatever the problem list says.
    B. The order states no reason, no cardiac symptom is documented anywhere, and an active
       Condition (problem list / encounter diagnosis) is a screening code: the patient is
       documented as seen for screening. Needs the Conditions to have been read.
    """
    screening = data.codes("screening_reasons")
    symptoms = data.codes("cardiac_symptoms")
    screening_on_file = [d for d in facts.diagnoses if screening.any_in(d.codes)]
    symptom_on_file = any(symptoms.any_in(d.codes) for d in facts.diagnoses)
    for order in ffrct_orders(facts, data):
        reasons = order.reason_codes
        stated_screening = screening.matches(sorted(reasons))
        other_icd = [c for c in reasons if c.system == "icd10cm" and c not in screening]
        only_screening = not other_icd and not symptoms.any_in(reasons)
        if stated_screening and only_screening and not _reasons_unknown(order):
            shown = stated_screening[0]
        elif (
            not reasons
            and not _reasons_unknown(order)
            and screening_on_file
            and not symptom_on_file
            and not facts.unavailable("conditions")
        ):
            shown = screening.matches(sorted(screening_on_file[0].codes))[0]
        else:
            continue
        yield Finding(
            topic="ffrct-screening-use",
            order_refs=(order.ref,),
            details={"order": order_label(order, data), "reason_code": _icd(shown)},
        )


def ccta_missing(facts: Facts, data: RuleData) -> Iterator[Finding]:
    """No CCTA on file (report, procedure or imaging study), none ordered (a 75574 in the
    draft or an active 75574 order on file).

    Silent when any CCTA source (cctaReports, procedures, imagingStudies) could not be read, and
    for an order that links to a DiagnosticReport/ImagingStudy the service did not receive: that
    link may be the clinician's evidence of a CCTA we cannot see (the facts record a
    `linkedStudies` gap, so the data-incomplete card names the skipped check). A link to a
    report or study the service HAS and that is not a CCTA (an echo) proves nothing.
    """
    if any(facts.unavailable(key) for key in CCTA_DATA_KEYS):
        return
    for order in ffrct_orders(facts, data):
        if facts.ccta_target(order.ref) is not None:
            continue
        if unseen_study_links(order, facts):
            continue
        yield Finding(
            topic="ffrct-ccta-missing",
            order_refs=(order.ref,),
            details={"order": order_label(order, data)},
            actions=(ProposedAction(kind="create-order", order_ref=order.ref, code=CCTA_CODE),),
        )


def unseen_study_links(order: Order, facts: Facts) -> list[str]:
    """The order's links to DiagnosticReports/ImagingStudies the service did not receive."""
    return sorted(
        ref
        for ref in order.linked_refs
        if ref.startswith(IMAGING_REF_TYPES) and ref not in facts.on_file_refs
    )


def _stenosis_range(facts: Facts, data: RuleData, order: Order) -> tuple[float, float]:
    """The payer's FFR-CT stenosis range on the order's own date of service (Medicare LCDs:
    40-90 %), else the seed's."""
    policy = payer_policy(facts, data, order, "ffrct")
    if policy is not None and policy.stenosis_range is not None:
        return policy.stenosis_range
    low, high = data.param("ffrct-stenosis-out-of-range", "range")
    return float(low), float(high)


def _percent(value: float) -> str:
    return f"{value:g} %"


def stenosis_out_of_range(facts: Facts, data: RuleData) -> Iterator[Finding]:
    """The CCTA the FFR-CT is for shows a maximum stenosis outside the range (inclusive).

    The range is the payer profile's (e.g. Medicare LCD 40-90 %) when set, else the seed's
    30-90 %. A measured percentage wins over a reported range ("50-69 %"), which wins over a
    CAD-RADS category; with a range only, the card fires only when the WHOLE range lies outside
    (CAD-RADS 2 = 25-49 % is inside 30-90 %; CAD-RADS 1 = 1-24 % is outside). CAD-RADS N
    (non-diagnostic) has no range. A CCTA ordered but not yet read has no reading: silent.
    """
    for order in ffrct_orders(facts, data):
        low, high = _stenosis_range(facts, data, order)
        target = facts.ccta_target(order.ref)
        ccta = target.ccta if target else None
        if ccta is None:
            continue
        if ccta.max_stenosis_percent is not None:
            outside = not low <= ccta.max_stenosis_percent <= high
            if ccta.results_unread and ccta.max_stenosis_percent < low:
                continue  # a result not received may hold the larger stenosis
            shown = _percent(ccta.max_stenosis_percent)
        elif ccta.stenosis_range is not None:
            bottom, top = ccta.stenosis_range
            outside = top < low or bottom > high
            if ccta.results_unread and top < low:
                continue
            spread = f"{bottom:g} %" if bottom == top else f"{bottom:g}-{top:g} %"
            if ccta.stenosis_range_measured or ccta.cad_rads is None:
                shown = spread
            else:
                shown = f"CAD-RADS {ccta.cad_rads} ({spread})"
        else:
            continue
        if outside:
            yield Finding(
                topic="ffrct-stenosis-out-of-range",
                order_refs=(order.ref, ccta.ref),
                details={
                    "order": order_label(order, data),
                    "stenosis": shown,
                    "range": f"{low:g}-{high:g} %",
                    "ccta_date": ccta.performed.isoformat() if ccta.performed else "undated",
                },
            )


def stenosis_undocumented(facts: Facts, data: RuleData) -> Iterator[Finding]:
    """A CCTA is on file but neither a stenosis percentage or range nor a CAD-RADS category can
    be read.

    Not for a CCTA ordered but not yet read. CAD-RADS N counts as documented.
    """
    for order in ffrct_orders(facts, data):
        target = facts.ccta_target(order.ref)
        ccta = target.ccta if target else None
        if ccta is None or ccta.cad_rads is not None or ccta.results_unread:
            continue  # unread results: unknown, not undocumented (the data gap says so)
        if ccta.max_stenosis_percent is not None or ccta.stenosis_range is not None:
            continue
        yield Finding(
            topic="ffrct-stenosis-undocumented",
            order_refs=(order.ref, ccta.ref),
            details={
                "order": order_label(order, data),
                "ccta_date": ccta.performed.isoformat() if ccta.performed else "undated",
            },
        )


def bmi_missing(facts: Facts, data: RuleData) -> Iterator[Finding]:
    """No BMI (LOINC 39156-5) with a value on file. Unknown (BMI data unavailable): silent."""
    orders = ffrct_orders(facts, data)
    if orders and facts.has_bmi is False:
        yield Finding(
            topic="ffrct-bmi-missing",
            order_refs=tuple(o.ref for o in orders),
            details={"order": order_label(orders[0], data)},
        )


def legacy_code(facts: Facts, data: RuleData) -> Iterator[Finding]:
    """The order uses a Category III code deleted on 2024-01-01; 75580 replaced all four."""
    legacy = data.codes("ffrct_legacy")
    for order in ffrct_orders(facts, data):
        found = legacy.matches(sorted(order.codes))
        if not found:
            continue
        yield Finding(
            topic="ffrct-legacy-code",
            order_refs=(order.ref,),
            details={"order": order_label(order, data), "legacy_code": found[0].code},
            actions=(
                ProposedAction(kind="replace-order-code", order_ref=order.ref, code=FFRCT_CODE),
            ),
        )


# History lists (codes.yaml) and how card text names each: the LCD limitations.
HISTORY_LISTS = {
    "history_stent": "coronary stent or PCI",
    "history_bypass_graft": "coronary bypass graft",
    "history_transplant": "heart transplant",
}


def excluded_history(facts: Facts, data: RuleData) -> Iterator[Finding]:
    """History the Medicare LCDs exclude, or a patient who is not clinically stable.

    - A prior coronary stent/PCI, bypass graft or heart transplant: from the order's reasons,
      Conditions (active or not: a stent placed years ago is still there), completed Procedures
      performed before the date of service, or a CCTA's CAD-RADS modifier S or G.
    - An acute MI (I21.x/I22.x) with onset within 30 days before the date of service (an
      I21.x stated as the order's reason counts as current). An MI counts whatever its clinical
      status (one resolved last week is still an MI within 30 days), never when entered in
      error or refuted. With no onset date, one recorded within the window fires with wording
      that says only that; an MI with neither date is not assumed recent.
    - Suspected acute coronary syndrome / unstable angina (I20.0, I24.x, I25.110, I25.7x0):
      FFR-CT is for clinically stable patients (seed) and the LCDs exclude suspected ACS not
      ruled out. Stated as the order's reason, or a Condition that is active and not dated
      before the window, or dated inside it.

    Fires on positive evidence only.
    """
    window = timedelta(days=int(data.param("ffrct-excluded-history", "acute_mi_days")))
    modifiers = sorted({m for c in facts.cctas for m in c.cad_rads_modifiers} & {"S", "G"})
    for order in ffrct_orders(facts, data):
        # The acute findings first: they decide the card's summary line.
        evidence = acute_coronary_evidence(order, facts, data, window)
        evidence += _acute_mi_evidence(order, facts, data, window)
        evidence += _history_evidence(order, facts, data)
        evidence += [MODIFIER_LABELS[m] for m in modifiers]
        if not evidence:
            continue
        yield Finding(
            topic="ffrct-excluded-history",
            order_refs=(order.ref,),
            details={
                "order": order_label(order, data),
                "history": "; ".join(dict.fromkeys(evidence)),
                "first": evidence[0],
            },
        )


def _history_evidence(order: Order, facts: Facts, data: RuleData) -> list[str]:
    found: list[str] = []
    diagnoses = (*facts.diagnoses, *facts.inactive_diagnoses)
    for list_name, label in HISTORY_LISTS.items():
        codes = data.codes(list_name)
        stated = codes.matches(sorted(order.reason_codes))
        charted = [c for d in diagnoses for c in codes.matches(sorted(d.codes))]
        found += sorted({f"{label} ({_show(c)})" for c in stated + charted})
        for study in facts.performed:
            if study.kind != "procedure" or study.status != "completed":
                continue
            if study.performed is not None and study.performed > order.service_date:
                continue
            done = codes.matches(sorted(study.codes))
            if done:
                when = f" on {study.performed.isoformat()}" if study.performed else ""
                found.append(f"{label}: procedure {_show(done[0])}{when}")
    return found


def _acute_mi_evidence(order: Order, facts: Facts, data: RuleData, window: timedelta) -> list[str]:
    acute_mi = data.codes("acute_mi")
    found: list[str] = []
    stated_mi = acute_mi.matches(sorted(order.reason_codes))
    if stated_mi:
        found.append(f"acute MI stated as the reason ({_show(stated_mi[0])})")
    for diagnosis in facts.diagnoses + facts.inactive_diagnoses:
        mi = acute_mi.matches(sorted(diagnosis.codes))
        if not mi:
            continue
        onset, recorded = diagnosis.onset, diagnosis.recorded
        if onset is not None:
            if timedelta(0) <= order.service_date - onset <= window:
                found.append(f"acute MI ({_show(mi[0])}) on {onset.isoformat()}")
        elif recorded is not None and timedelta(0) <= order.service_date - recorded <= window:
            found.append(
                f"acute MI ({_show(mi[0])}) recorded on {recorded.isoformat()} "
                "(onset date not documented)"
            )
    return found


def acute_coronary_evidence(
    order: Order, facts: Facts, data: RuleData, window: timedelta | None = None
) -> list[str]:
    """Unstable angina / acute coronary syndrome documented for this order (see
    `excluded_history`): the patient is not the clinically stable one FFR-CT is for."""
    if window is None:
        window = timedelta(days=int(data.param("ffrct-excluded-history", "acute_mi_days")))
    acs = data.codes("acute_coronary")
    label = "unstable angina / suspected ACS"
    found: list[str] = []
    stated = acs.matches(sorted(order.reason_codes))
    if stated:
        found.append(f"{label} stated as the reason ({_show(stated[0])})")
    for diagnosis in (*facts.diagnoses, *facts.inactive_diagnoses):
        codes = acs.matches(sorted(diagnosis.codes))
        if not codes:
            continue
        day = diagnosis.onset or diagnosis.recorded
        active = diagnosis in facts.diagnoses
        if day is None:
            if active:
                found.append(f"{label} ({_show(codes[0])}) on the active problem list")
        elif timedelta(0) <= order.service_date - day <= window:
            found.append(f"{label} ({_show(codes[0])}) on {day.isoformat()}")
    return found


def _show(code: Code) -> str:
    """A code as clinicians write it: ICD-10-CM with its dot, CPT/HCPCS/SNOMED prefixed."""
    if code.system == "icd10cm":
        return _icd(code)
    names = {"cpt": "CPT", "hcpcs": "HCPCS", "snomed": "SNOMED CT", "icd10pcs": "ICD-10-PCS"}
    return f"{names.get(code.system, code.system)} {code.code}"


def _icd(code: Code) -> str:
    """ICD-10-CM codes are stored without the dot; show them as clinicians write them."""
    if code.system == "icd10cm" and len(code.code) > 3:
        return f"{code.code[:3]}.{code.code[3:]}"
    return code.code


# -- duplicates -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Prior:
    """An FFR-CT already on file: an order, a performed procedure or a final report."""

    ref: str
    day: date | None
    links: frozenset[str]
    label: str


def _priors(facts: Facts, data: RuleData) -> list[_Prior]:
    priors = [
        _Prior(o.ref, o.service_date, o.linked_refs, _ORDER_STATE[o.status or ""])
        for o in facts.existing_orders
        if is_ffrct(o, data) and o.status in STANDING_ORDER_STATUSES
    ]
    priors += [
        _Prior(s.ref, s.performed, s.linked_refs, _study_label(s))
        for s in facts.performed
        if _is_ffrct_study(s, data)
    ]
    return priors


def _is_ffrct_study(study: PerformedStudy, data: RuleData) -> bool:
    if not data.in_family("ffrct", study.codes):
        return False
    if study.kind == "procedure":
        return study.status == "completed"
    return study.kind == "report" and study.status in FINAL_REPORT_STATUSES


def _study_label(study: PerformedStudy) -> str:
    when = study.performed.isoformat() if study.performed else "an unknown date"
    what = "performed" if study.kind == "procedure" else "reported"
    return f"an FFR-CT {what} on {when}"


def _same_ccta(
    prior_links: frozenset[str],
    prior_day: date | None,
    target: CctaTarget | None,
    order: Order,
    facts: Facts,
) -> bool:
    """Same CCTA: linked to it, or (no link to any known CCTA) dated on/after it."""
    if prior_links & order.linked_refs:
        return True  # both name the same resource (a CCTA we may not even have)
    if target is None:
        return False
    if prior_links & target.aliases:
        return True
    known = {a for c in facts.cctas for a in c.aliases | {c.ref}}
    if prior_links & known:
        return False  # explicitly for another CCTA
    return prior_day is not None and target.day is not None and prior_day >= target.day


def duplicate(facts: Facts, data: RuleData) -> Iterator[Finding]:
    """Another FFR-CT for the same CCTA: 75580 is billed once per CCTA (seed).

    The other FFR-CT is an active/on-hold/completed order on file, a completed Procedure, a
    final/amended/corrected report, or another FFR-CT draft in this order set. "Same CCTA": see
    `_same_ccta` and `ccta_targets`. Of two drafts for the same CCTA, the one to remove is the
    one decision support is about: on order-select the newly selected order (an unselected
    twin was already in the order list), on order-sign the later one. The finding names only
    the order to remove, never the one that stays (it is fine as it is).
    """
    orders = [o for o in facts.draft_orders if is_ffrct(o, data)]
    focus = {o.ref for o in ffrct_orders(facts, data)}
    priors = _priors(facts, data)
    position = {o.ref: i for i, o in enumerate(orders)}
    # Drafts by what denotes their CCTA: twins are found by lookup, not by comparing every pair
    # (a call with hundreds of FFR-CT drafts must not take seconds).
    by_alias: dict[str, list[Order]] = {}
    for other in orders:
        for alias in _target_keys(facts.ccta_target(other.ref)):
            by_alias.setdefault(alias, []).append(other)
    for index, order in enumerate(orders):
        if order.ref not in focus:
            continue
        target = facts.ccta_target(order.ref)
        prior = next((p for p in priors if _same_ccta(p.links, p.day, target, order, facts)), None)
        if prior is not None:
            yield _duplicate_finding(order, prior.ref, prior.label, data, on_file=True)
            continue
        found = {o.ref: o for key in _target_keys(target) for o in by_alias.get(key, [])}
        twins = sorted(
            (o for ref, o in found.items() if ref != order.ref), key=lambda o: position[o.ref]
        )
        kept = [t for t in twins if t.ref not in focus] or [
            t for t in twins if position[t.ref] < index
        ]
        if kept:
            yield _duplicate_finding(
                order, kept[0].ref, "another FFR-CT in this order", data, on_file=False
            )


def _target_keys(target: CctaTarget | None) -> frozenset[str]:
    """What identifies the CCTA a draft is for; drafts with no known CCTA share one key."""
    return target.aliases if target is not None else frozenset({"<no CCTA known>"})


def _duplicate_finding(
    remove: Order, other_ref: str, other: str, data: RuleData, *, on_file: bool
) -> Finding:
    """A prior on file is named among the finding's orders (audit); a draft twin that stays is
    not: whatever the finding implies (coverage information, "already ordered") is about the
    order to remove only."""
    return Finding(
        topic="ffrct-duplicate",
        order_refs=(remove.ref, other_ref) if on_file else (remove.ref,),
        details={"order": order_label(remove, data), "other": other, "other_ref": other_ref},
        actions=(ProposedAction(kind="delete-order", order_ref=remove.ref),),
    )
