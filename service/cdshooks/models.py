"""CDS Hooks 2.0 wire models: lenient on input, strict on output.

Spec: https://cds-hooks.hl7.org/2.0/ . Requests from real EHRs are sloppy (draftOrders without
Bundle.type, empty codings, unknown members), so request models accept extra members and keep
FHIR content as raw JSON for the data layer to parse resource by resource. Response models
forbid anything the spec forbids: no null, no empty strings/lists/objects, summary < 140.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

JsonObject = dict[str, Any]
NonEmptyStr = Annotated[str, StringConstraints(min_length=1)]

# CDS Hooks library logical model, invariant ord-1: "Type/id" references.
_TYPED_REFERENCE = re.compile(r"^[\d\w]+/[\d\w\-.]+$")


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class FhirAuthorization(_Lenient):
    """https://cds-hooks.hl7.org/2.0/#passing-the-access-token-to-the-cds-service"""

    access_token: NonEmptyStr = Field(repr=False)
    token_type: str = "Bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int | None = None
    scope: str | None = None
    subject: str | None = None
    patient: str | None = None


class OrderContext(_Lenient):
    """order-sign / order-select context (CDS Hooks library 1.0.1)."""

    userId: NonEmptyStr
    patientId: NonEmptyStr
    encounterId: str | None = None
    draftOrders: JsonObject
    selections: list[NonEmptyStr] | None = None

    @field_validator("userId")
    @classmethod
    def _user_reference(cls, value: str) -> str:
        if not _TYPED_REFERENCE.match(value):
            raise ValueError("userId must be a reference like 'Practitioner/123'")
        return value

    @field_validator("selections")
    @classmethod
    def _selection_references(cls, value: list[str] | None) -> list[str] | None:
        for ref in value or []:
            if not _TYPED_REFERENCE.match(ref):
                raise ValueError(f"selection {ref!r} must be a reference like 'ServiceRequest/1'")
        return value

    @field_validator("draftOrders")
    @classmethod
    def _is_bundle(cls, value: JsonObject) -> JsonObject:
        # Bundle.type is often missing in practice (cds-hooks/docs#659): do not require it.
        if value.get("resourceType") != "Bundle":
            raise ValueError("draftOrders must be a FHIR Bundle")
        if not isinstance(value.get("entry", []), list):
            raise ValueError("draftOrders.entry must be an array")
        return value


class HookRequest(_Lenient):
    """https://cds-hooks.hl7.org/2.0/#http-request_1"""

    hook: NonEmptyStr
    # A UUID per the spec; bounded (and printable) so the audit trail never stores a megabyte.
    hookInstance: Annotated[
        str, StringConstraints(min_length=1, max_length=128, pattern=r"^[!-~]+$")
    ]
    fhirServer: str | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: JsonObject
    # A value may be a resource, a searchset Bundle, null ("no data") or an OperationOutcome.
    prefetch: dict[str, JsonObject | None] | None = None
    extension: JsonObject | None = None

    @field_validator("prefetch")
    @classmethod
    def _bundles_have_arrays(
        cls, value: dict[str, JsonObject | None] | None
    ) -> dict[str, JsonObject | None] | None:
        # A Bundle whose entry/link is not an array is not FHIR JSON at all: refuse it, as for
        # draftOrders. A bad resource *inside* a well-formed Bundle is skipped later instead.
        for key, item in (value or {}).items():
            if item is None or item.get("resourceType") != "Bundle":
                continue
            for member in ("entry", "link"):
                if not isinstance(item.get(member, []), list):
                    raise ValueError(f"prefetch {key!r}: Bundle.{member} must be an array")
        return value

    @model_validator(mode="after")
    def _authorization_needs_server(self) -> HookRequest:
        if self.fhirAuthorization is not None and not self.fhirServer:
            raise ValueError("fhirServer is required when fhirAuthorization is present")
        return self


# --- responses ---------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def wire(self) -> JsonObject:
        """Serialize per the spec: optional fields with no value are omitted."""
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)


class Coding(_Strict):
    """CDS Hooks Coding type: https://cds-hooks.hl7.org/2.0/#coding"""

    system: NonEmptyStr
    code: NonEmptyStr
    display: NonEmptyStr | None = None


class Source(_Strict):
    label: NonEmptyStr
    url: NonEmptyStr | None = None
    icon: NonEmptyStr | None = None
    topic: Coding | None = None


class Action(_Strict):
    type: Literal["create", "update", "delete"]
    description: NonEmptyStr
    resource: JsonObject | None = None
    resourceId: NonEmptyStr | None = None

    @model_validator(mode="after")
    def _shape(self) -> Action:
        if self.type == "delete" and (self.resourceId is None or self.resource is not None):
            raise ValueError("a delete action names resourceId and carries no resource")
        if self.type != "delete" and not self.resource:
            raise ValueError(f"a {self.type} action carries the whole resource")
        return self


class Suggestion(_Strict):
    label: NonEmptyStr
    uuid: NonEmptyStr
    isRecommended: bool | None = None
    actions: Annotated[list[Action], Field(min_length=1)] | None = None


class Link(_Strict):
    label: NonEmptyStr
    url: NonEmptyStr
    type: Literal["absolute", "smart"]
    appContext: NonEmptyStr | None = None


class Card(_Strict):
    """https://cds-hooks.hl7.org/2.0/#card-attributes"""

    uuid: NonEmptyStr
    summary: Annotated[str, StringConstraints(min_length=1, max_length=139)]
    detail: NonEmptyStr | None = None
    indicator: Literal["info", "warning", "critical"]
    source: Source
    suggestions: Annotated[list[Suggestion], Field(min_length=1)] | None = None
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: Annotated[list[Coding], Field(min_length=1)] | None = None
    links: Annotated[list[Link], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _conditional_fields(self) -> Card:
        if self.suggestions and self.selectionBehavior is None:
            raise ValueError("selectionBehavior is required when suggestions are present")
        for reason in self.overrideReasons or []:
            if reason.display is None:
                raise ValueError("every override reason needs a display")
        if self.selectionBehavior == "at-most-one":
            if sum(1 for s in self.suggestions or [] if s.isRecommended) > 1:
                raise ValueError("at-most-one allows a single recommended suggestion")
        return self


class HookResponse(_Strict):
    cards: list[Card]
    systemActions: Annotated[list[Action], Field(min_length=1)] | None = None


class ServiceDefinition(_Strict):
    """https://cds-hooks.hl7.org/2.0/#response (discovery)"""

    hook: NonEmptyStr
    title: NonEmptyStr | None = None
    description: NonEmptyStr
    id: NonEmptyStr
    prefetch: dict[str, NonEmptyStr] | None = None
    usageRequirements: NonEmptyStr | None = None
    extension: JsonObject | None = None


class DiscoveryResponse(_Strict):
    services: list[ServiceDefinition]


# --- feedback ----------------------------------------------------------------------------


class OverrideReason(_Lenient):
    reason: JsonObject | None = None
    userComment: str | None = None


class AcceptedSuggestion(_Lenient):
    id: NonEmptyStr


class FeedbackItem(_Lenient):
    """https://cds-hooks.hl7.org/2.0/#feedback"""

    card: NonEmptyStr
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: OverrideReason | None = None
    outcomeTimestamp: NonEmptyStr


class FeedbackRequest(_Lenient):
    feedback: Annotated[list[FeedbackItem], Field(min_length=1)]


def describe_validation(errors: object) -> str:
    """A request's validation errors as one line of field paths and messages, never the input
    values (they may carry PHI): `context.userId: Field required`."""
    parts = []
    for err in errors if isinstance(errors, list | tuple) else []:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts[:5]) or "invalid request"
