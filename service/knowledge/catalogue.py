"""Rule data: code systems, code lists, rule parameters with sources, payer directory.

All of it is YAML under ``service/knowledge/data/`` (plus an optional site overlay directory whose
files extend the bundled ones), validated here at startup: an unknown code system, a topic code
typo or a rule without a source stops the service with a message naming the file and entry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from service.knowledge.text import check_placeholders
from service.knowledge.vocabulary import Code, CodeList
from service.yamlfile import read_mapping

BUNDLED_DATA_DIR = Path(__file__).with_name("data")

TOPIC_SYSTEM = "https://cardiac-ct-cds.org/fhir/CodeSystem/card-topic"

# Da Vinci CRD card types used as configuration options (davinci-crd.configuration-options).
CrdCardType = Literal[
    "appropriate-use", "claim", "duplicate-therapy", "insurance", "cost", "data-incomplete"
]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceRef(_Data):
    """Where a rule or payer row comes from: a seed document or a public policy, dated."""

    document: str = Field(min_length=3)
    section: str | None = None
    url: str | None = None
    effective: date  # the date the cited text took effect (or was published/read)


# What a finding means for the Da Vinci CRD coverage information of the order it names
# (service.crd.assessment; rules.md §5):
#   none          nothing: the payer answer does not change (a card for the clinician only)
#   undocumented  a coverage criterion the record does not show; documentation can fix it
#                 (conditional, doc-needed clinical)
#   limitation    the record shows a policy limitation (Medicare LCD: not covered; another
#                 payer: conditional, check its policy)
#   payer-denial  the payer's policy denies the order as ordered (not covered)
#   not-payable   never paid, whoever the payer (a duplicate, an NCCI bundle): not covered
#   coding        the claim must be coded differently (a reason; billingCode says how)
CoverageEffectKind = Literal[
    "none", "undocumented", "limitation", "payer-denial", "not-payable", "coding"
]


class CoverageEffect(_Data):
    effect: CoverageEffectKind
    # The reason the coverage information gives (plain text; `{name}` is filled from the
    # finding's details, as in card text). Required unless the effect is none.
    reason: str | None = None

    @model_validator(mode="after")
    def _reason_when_it_counts(self) -> CoverageEffect:
        if self.effect != "none" and not (self.reason or "").strip():
            raise ValueError(f"coverage effect {self.effect!r} needs a reason")
        if self.effect == "none" and self.reason is not None:
            raise ValueError("coverage effect 'none' gives no reason")
        check_placeholders(self.reason or "")
        return self


class RuleEntry(_Data):
    topic: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    title: str
    trigger: str  # one line, for the README topic table and the rule owner
    card_type: CrdCardType
    coverage: CoverageEffect  # what the finding means for CRD coverage information
    sources: list[SourceRef] = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


PayerKindName = Literal[
    "original-medicare", "medicare-advantage", "medicaid", "commercial", "other"
]
CoveragePosition = Literal["not-covered", "conditional", "covered"]


class OrderFamily(_Data):
    """An order family this service checks (codes.yaml `families`): its code lists, how card
    text names it, and what a claim for it carries."""

    code_lists: list[str] = Field(min_length=1)
    title: str = Field(min_length=1)  # at the start of an order label: "FFR-CT (75580)"
    label: str = Field(min_length=1)  # mid-sentence: "calcium score"
    billing_codes: list[str] = Field(default_factory=list)  # empty: the order's own code
    same_day_billing: dict[str, str] = Field(default_factory=dict)  # code list -> code


class PayorIdentifier(_Data):
    system: str = Field(min_length=1)
    value: str = Field(min_length=1)


class PayerMatch(_Data):
    """How a Coverage is recognised as this payer.

    `sopt`: Source of Payment Typology codes on Coverage.type (any of the three system
    spellings; a trailing '*' matches the code family, "5*" = every private insurance code).
    `identifiers`: payor Organization identifiers. `names`: words or phrases matched
    case-insensitively, as whole words, in the payor display, the Organization name and the
    Coverage.class plan/group names.
    """

    sopt: list[str] = Field(default_factory=list)
    identifiers: list[PayorIdentifier] = Field(default_factory=list)
    names: list[str] = Field(default_factory=list)
    # The payor IS this payer when every payor name is one of these (case, punctuation and
    # "&"/"and" ignored): "Medicare" alone is the program itself, "Aetna Medicare" is not.
    exact_names: list[str] = Field(default_factory=list)
    # Member-id systems only this payer issues (Coverage.identifier): the Medicare MBI.
    member_id_systems: list[str] = Field(default_factory=list)
    # Regular expressions a plan id (Coverage.class plan/subplan value) of this payer matches
    # in full: Medicare Advantage contract numbers (H1234, H1234-001).
    plan_id_patterns: list[str] = Field(default_factory=list)

    @field_validator("sopt")
    @classmethod
    def _sopt_codes(cls, codes: list[str]) -> list[str]:
        for code in codes:
            if not code.rstrip("*").isdigit() or code.count("*") > 1:
                raise ValueError(f"SOPT code {code!r} is not digits (optionally ending in '*')")
        return codes

    @field_validator("names", "exact_names")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        if any(not n.strip() for n in names):
            raise ValueError("payer names must not be blank")
        return names

    @field_validator("plan_id_patterns")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"plan_id_patterns: {pattern!r} is not a regular expression: {exc}"
                ) from None
        return patterns

    @property
    def empty(self) -> bool:
        return not (
            self.sopt
            or self.identifiers
            or self.names
            or self.exact_names
            or self.member_id_systems
            or self.plan_id_patterns
        )


class CostFigures(_Data):
    """Money figures for the cost-estimate card; `basis` says where they come from."""

    basis: str = Field(min_length=3)
    expected_payment: float | None = Field(default=None, ge=0)
    minimum_copayment: float | None = Field(default=None, ge=0)
    self_pay_low: float | None = Field(default=None, ge=0)
    self_pay_high: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _some_figure(self) -> CostFigures:
        if self.expected_payment is None and self.self_pay_low is None:
            raise ValueError("cost needs expected_payment or self_pay_low/self_pay_high")
        if (self.self_pay_low is None) != (self.self_pay_high is None):
            raise ValueError("self_pay_low and self_pay_high go together")
        if self.self_pay_low is not None and self.self_pay_high is not None:
            if self.self_pay_low > self.self_pay_high:
                raise ValueError("self_pay_low is above self_pay_high")
        return self


def _usps_codes(states: list[str]) -> list[str]:
    for state in states:
        if len(state) != 2 or not state.isalpha() or not state.isupper():
            raise ValueError(f"state {state!r} must be a 2-letter USPS code such as 'WI'")
    return states


# Payer rows and policies name states the way the facts do (`Facts.patient_state`): "WI".
UspsStates = Annotated[list[str], AfterValidator(_usps_codes)]


class FamilyPolicy(_Data):
    """A payer's position on one code family (cac: 75571/S8092; ffrct: 75580 and legacy)."""

    position: CoveragePosition
    abn_required: bool = False
    screening_denied: bool = False
    # None: the default for the payer kind (commercial payers need one; others do not).
    requires_supporting_diagnosis: bool | None = None
    prior_auth: bool | None = None  # None: not known (no pa-needed is asserted)
    prior_auth_by: str | None = None  # who reviews: "AIM Specialty Health", "EviCore"
    prior_auth_states: UspsStates | None = None  # None: in every state
    stenosis_range: tuple[float, float] | None = None  # ffrct only: payer's stenosis range
    cost: CostFigures | None = None
    note: str | None = None  # one line for card detail and the README table

    @model_validator(mode="after")
    def _consistent(self) -> FamilyPolicy:
        if self.stenosis_range is not None:
            low, high = self.stenosis_range
            if not 0 <= low < high <= 100:
                raise ValueError("stenosis_range must be (low, high) with 0 <= low < high <= 100")
        if self.prior_auth_states is not None and self.prior_auth is not True:
            raise ValueError("prior_auth_states given but prior_auth is false")
        return self


class PayerRow(_Data):
    """One payer (or payer profile) of the directory in payers.yaml."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str = Field(min_length=2)
    kind: PayerKindName
    match: PayerMatch = Field(default_factory=PayerMatch)
    # A Coverage matching this row as a SECONDARY implies this kind of primary (Medigap ->
    # Original Medicare); such a row is never chosen as the primary when another exists.
    implies_primary: PayerKindName | None = None
    states: UspsStates | None = None  # the row applies only to patients living in these states
    profile: str | None = None  # inherit the policies of this row for families not set here
    policies: dict[str, FamilyPolicy] = Field(default_factory=dict)  # family -> policy
    sources: list[SourceRef] = Field(min_length=1)

    def policy(self, family: str) -> FamilyPolicy | None:
        return next((p for f, p in self.policies.items() if f == family), None)


class BillingCrosswalk(_Data):
    """The code a claim carries instead of the order's code for some payer kinds."""

    from_code: str = Field(alias="from", pattern=r"^[a-z0-9]+\|\S+$")
    to_code: str = Field(alias="to", pattern=r"^[a-z0-9]+\|\S+$")
    payer_kinds: list[str] = Field(min_length=1)
    note: str = Field(min_length=3)
    sources: list[SourceRef] = Field(min_length=1)

    @field_validator("payer_kinds")
    @classmethod
    def _known_kinds(cls, kinds: list[str]) -> list[str]:
        known = {*get_args(PayerKindName), "medicare-unknown", "unknown", "undetermined"}
        unknown = sorted(set(kinds) - known)
        if unknown:
            raise ValueError(f"unknown payer kind(s) {unknown}; known: {sorted(known)}")
        return kinds


class CctaReading(_Data):
    """How a CCTA report is read (codes.yaml `ccta_reading`; rules.md §2 "Reading the CCTA")."""

    cad_rads_ranges: dict[str, tuple[float, float]]  # category -> stenosis bounds (%)
    cad_rads_value_codes: dict[str, str]  # "system|code" -> category
    cad_rads_modifier_codes: dict[str, str]  # "system|code" -> modifier letter
    stenosis_terms: list[str] = Field(min_length=1)
    non_stenosis_terms: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> CctaReading:
        for category, (low, high) in self.cad_rads_ranges.items():
            if not 0 <= low <= high <= 100:
                raise ValueError(f"cad_rads_ranges.{category}: need 0 <= low <= high <= 100")
        unknown = set(self.cad_rads_value_codes.values()) - set(self.cad_rads_ranges) - {"N"}
        if unknown:
            raise ValueError(f"cad_rads_value_codes name categories with no range: {unknown}")
        return self


class RuleData(_Data):
    """Everything the rules read besides the facts."""

    version: str
    systems: dict[str, list[str]]  # short name -> URIs (canonical first)
    code_lists: dict[str, CodeList]
    families: dict[str, OrderFamily]
    ccta_reading: CctaReading
    rules: dict[str, RuleEntry]
    payers: list[PayerRow] = Field(default_factory=list)
    billing_crosswalks: list[BillingCrosswalk] = Field(default_factory=list)

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    @cached_property
    def system_for_uri(self) -> dict[str, str]:
        """URI -> short name, for normalising codings (built once: read on every request)."""
        return {uri: short for short, uris in self.systems.items() for uri in uris}

    def uri_for(self, short: str) -> str:
        return self.systems[short][0]

    def codes(self, name: str) -> CodeList:
        return self.code_lists[name]

    def family_of(self, codes: Iterable[Code]) -> str | None:
        """The order family these codes belong to ("ffrct", "cac"), or None: not in scope."""
        codes = list(codes)
        for name, family in self.families.items():
            if any(self.codes(lst).any_in(codes) for lst in family.code_lists):
                return name
        return None

    def in_family(self, family: str, codes: Iterable[Code]) -> bool:
        """Some of the codes are on the family's code lists (whichever family `family_of`
        picks for an order that also carries another family's code)."""
        codes = list(codes)
        return any(self.codes(lst).any_in(codes) for lst in self.families[family].code_lists)

    def in_scope(self, codes: Iterable[Code]) -> bool:
        """An order this service checks: its codes belong to one of the families."""
        return self.family_of(codes) is not None

    def family_codes(self, family: str, codes: Iterable[Code]) -> list[Code]:
        """The codes (sorted) on the family's code lists, in the order the lists are named."""
        ordered = sorted(codes)
        return [
            c for lst in self.families[family].code_lists for c in self.codes(lst).matches(ordered)
        ]

    def param(self, topic: str, name: str) -> Any:
        return self.rules[topic].params[name]

    def billed_as(self, code: Code, payer_kind: str | None) -> tuple[Code, BillingCrosswalk | None]:
        """The code the claim carries for `code` under this payer kind, and the crosswalk used."""
        for row in self.billing_crosswalks:
            if str(code) == row.from_code and payer_kind in row.payer_kinds:
                return Code.parse(row.to_code), row
        return code, None

    def payer(self, payer_id: str) -> PayerRow | None:
        """A payer directory row by id (profiles already resolved into its policies)."""
        return next((row for row in self.payers if row.id == payer_id), None)


class RuleDataError(Exception):
    """Rule data failed validation; the message names the file and the entry."""


_APPENDED = frozenset({"payers", "billing_crosswalks"})  # overlay rows add to the bundled ones


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Site overlay: mappings merge key by key, lists of payers append, scalars replace."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        elif isinstance(value, list) and isinstance(merged.get(key), list) and key in _APPENDED:
            merged[key] = [*merged[key], *value]
        else:
            merged[key] = value
    return merged


def _load_raw(dirs: list[Path]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for directory in dirs:
        for path in sorted(directory.glob("*.yaml")):
            raw = _merge(raw, read_mapping(path, RuleDataError))
    return raw


def load_rule_data(extra_dir: Path | None = None) -> RuleData:
    """Load and validate the bundled rule data plus an optional site overlay."""
    dirs = [BUNDLED_DATA_DIR] + ([extra_dir] if extra_dir else [])
    for directory in dirs:
        if not directory.is_dir():
            raise RuleDataError(f"rule data directory not found: {directory}")
    raw = _load_raw(dirs)
    systems: dict[str, list[str]] = raw.get("systems", {})
    try:
        lists = {
            name: CodeList.parse(name, entries)
            for name, entries in (raw.get("code_lists") or {}).items()
        }
    except ValueError as exc:
        raise RuleDataError(f"code_lists: {exc}") from exc
    for code_list in lists.values():
        unknown = code_list.systems - set(systems)
        if unknown:
            raise RuleDataError(
                f"code list {code_list.name!r} uses unknown code system(s) {sorted(unknown)}; "
                f"known: {sorted(systems)}"
            )
    rules = raw.get("rules") or {}
    for topic, entry in rules.items():
        if isinstance(entry, dict):
            entry.setdefault("topic", topic)
    families = raw.get("families")
    payers = _load_payers(
        raw.get("payers") or [],
        _payer_origins(dirs),
        set(families) if isinstance(families, dict) else set(),
    )
    try:
        data = RuleData(
            version=str(raw.get("version", "unversioned")),
            systems=systems,
            code_lists=lists,
            families=raw.get("families") or {},
            ccta_reading=raw.get("ccta_reading") or {},
            rules=rules,
            payers=payers,
            billing_crosswalks=raw.get("billing_crosswalks") or [],
        )
    except ValidationError as exc:
        raise RuleDataError(_explain(exc)) from exc
    for row in data.billing_crosswalks:
        for code in (row.from_code, row.to_code):
            if code.partition("|")[0] not in systems:
                raise RuleDataError(f"billing_crosswalks: {code!r} uses an unknown code system")
    _check_families(data)
    for topic, entry in data.rules.items():
        if topic != entry.topic:
            raise RuleDataError(f"rules.{topic}: topic field says {entry.topic!r}")
    return data


def _check_families(data: RuleData) -> None:
    """Every family names code lists and codes that exist (payer policies are checked against
    the families as the payer rows load, where the file is known)."""
    if not data.families:
        raise RuleDataError("codes.yaml: no order families (`families`)")
    for name, family in data.families.items():
        for lst in [*family.code_lists, *family.same_day_billing]:
            if lst not in data.code_lists:
                raise RuleDataError(f"families.{name}: unknown code list {lst!r}")
        for code in [*family.billing_codes, *family.same_day_billing.values()]:
            if not _known_code(code, data):
                raise RuleDataError(f"families.{name}: {code!r} is not 'known-system|code'")
    reading = data.ccta_reading
    for code in [*reading.cad_rads_value_codes, *reading.cad_rads_modifier_codes]:
        if not _known_code(code, data):
            raise RuleDataError(f"ccta_reading: {code!r} is not 'known-system|code'")


def _known_code(text: str, data: RuleData) -> bool:
    code = Code.parse(text)
    return code.system in data.systems and bool(code.code)


def _explain(exc: ValidationError) -> str:
    lines = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
    return "rule data is invalid:\n  " + "\n  ".join(lines)


PAYERS_FILE = "payers.yaml"


def _payer_origins(dirs: list[Path]) -> list[Path]:
    """The file each merged payer row came from (`_merge` appends rows in file order)."""
    origins: list[Path] = []
    for directory in dirs:
        for path in sorted(directory.glob("*.yaml")):
            rows = read_mapping(path, RuleDataError).get("payers")
            if isinstance(rows, list):
                origins += [path] * len(rows)
    return origins


def _load_payers(raw_rows: Any, origins: list[Path], families: set[str]) -> list[PayerRow]:
    """Validate the payer directory row by row and resolve `profile` inheritance.

    A site overlay row with the id of a bundled row replaces it (later rows win), which is how a
    site adds states to a prior-auth policy or changes a cost figure.
    """
    if not isinstance(raw_rows, list):
        raise RuleDataError(f"{PAYERS_FILE}: 'payers' must be a list of rows")
    rows: dict[str, PayerRow] = {}
    files: dict[str, Path] = {}
    for index, raw_row in enumerate(raw_rows):
        label = raw_row.get("id") if isinstance(raw_row, dict) else None
        origin = origins[index] if index < len(origins) else Path(PAYERS_FILE)
        where = f"{origin}: payer row {label!r} (payers[{index}])"
        try:
            row = PayerRow.model_validate(raw_row)
        except ValidationError as exc:
            raise RuleDataError(f"{where}: {_explain(exc)}") from exc
        unknown = sorted(set(row.policies) - families)
        if unknown:
            raise RuleDataError(
                f"{where}: policies for unknown order famil(ies) {unknown}; "
                f"codes.yaml families: {sorted(families)}"
            )
        rows.pop(row.id, None)
        rows[row.id] = row
        files[row.id] = origin
    return [_resolve_profile(row, rows, files) for row in rows.values()]


def _resolve_profile(row: PayerRow, rows: dict[str, PayerRow], files: dict[str, Path]) -> PayerRow:
    policies = dict(row.policies)
    seen = {row.id}
    current = row
    while current.profile is not None:
        if current.profile in seen:
            raise RuleDataError(
                f"{files[row.id]}: payer row {row.id!r}: profile cycle via {current.profile!r}"
            )
        parent = rows.get(current.profile)
        if parent is None:
            raise RuleDataError(
                f"{files[current.id]}: payer row {current.id!r}: "
                f"profile {current.profile!r} is not a payer id"
            )
        seen.add(parent.id)
        for family, policy in parent.policies.items():
            policies.setdefault(family, policy)
        current = parent
    return row.model_copy(update={"policies": policies})
