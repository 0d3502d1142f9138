"""The OpenAPI description of the HTTP API, for integrators and fuzzers (docs/openapi.json).

The routes read their bodies themselves (so a bad body gets an OperationOutcome naming the
field, never FastAPI's own error shape), so FastAPI cannot see the request models; this module
adds them, the response models, the error body and the JWT bearer scheme. Regenerate with
`.venv/bin/python scripts/openapi.py`; tests/api/test_openapi.py fails while the file is stale.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from service.cdshooks.models import DiscoveryResponse, FeedbackRequest, HookRequest, HookResponse

REF = "#/components/schemas/{model}"
UNAUTHENTICATED = frozenset({"/health"})  # load balancers and probes call it without a token
OPERATION_OUTCOME: dict[str, Any] = {
    "type": "object",
    "description": "FHIR OperationOutcome: every 4xx/5xx body; `diagnostics` names the problem.",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"const": "OperationOutcome"},
        "issue": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["severity", "code"],
                "properties": {
                    "severity": {"type": "string"},
                    "code": {"type": "string"},
                    "diagnostics": {"type": "string"},
                },
            },
        },
    },
}
# https://cds-hooks.hl7.org/2.0/#trusting-cds-clients
JWT_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "bearerFormat": "JWT",
    "description": "CDS Hooks 2.0 signed JWT: ES384/RS384, iss a trusted client, aud = the URL "
    "called (a string), exp/iat numbers, lifetime bounded, jti single use.",
}
BODIES: dict[tuple[str, str], type[BaseModel]] = {
    ("post", "/cds-services/{service_id}"): HookRequest,
    ("post", "/cds-services/{service_id}/feedback"): FeedbackRequest,
}
ANSWERS: dict[tuple[str, str], type[BaseModel]] = {
    ("get", "/cds-services"): DiscoveryResponse,
    ("post", "/cds-services/{service_id}"): HookResponse,
}
ERRORS = {"400": "Bad request", "401": "Unauthenticated", "404": "Unknown service",
          "405": "Method not allowed (Allow header)", "413": "Body too large"}  # fmt: skip


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF)
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": REF.format(model=model.__name__)}


def openapi_document(app: FastAPI) -> dict[str, Any]:
    document = app.openapi()
    components: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    components["OperationOutcome"] = OPERATION_OUTCOME
    document["components"]["securitySchemes"] = {"cdsHooksJwt": JWT_SCHEME}
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            if path not in UNAUTHENTICATED:
                operation["security"] = [{"cdsHooksJwt": []}]
            body = BODIES.get((method, path))
            if body is not None:
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": _schema(body, components)}},
                }
            answer = ANSWERS.get((method, path))
            responses = operation.setdefault("responses", {})
            if answer is not None:
                responses["200"] = {
                    "description": "OK",
                    "content": {"application/json": {"schema": _schema(answer, components)}},
                }
            responses.pop("422", None)  # FastAPI's own validation error shape is never sent
            for status, text in ERRORS.items():
                responses.setdefault(
                    status,
                    {
                        "description": text,
                        "content": {
                            "application/fhir+json": {
                                "schema": {"$ref": REF.format(model="OperationOutcome")}
                            }
                        },
                    },
                )
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    return document
