"""docs/openapi.json is the current description of the API (regenerate: scripts/openapi.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _script() -> object:
    spec = importlib.util.spec_from_file_location("openapi_script", ROOT / "scripts" / "openapi.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_openapi_document_is_current() -> None:
    rendered = _script().render()  # type: ignore[attr-defined]
    shipped = (ROOT / "docs" / "openapi.json").read_text(encoding="utf-8")
    assert shipped == rendered, (
        "docs/openapi.json is stale: run .venv/bin/python scripts/openapi.py"
    )


def test_it_describes_every_endpoint_with_bodies_auth_and_errors() -> None:
    document = json.loads((ROOT / "docs" / "openapi.json").read_text(encoding="utf-8"))
    paths = document["paths"]
    assert {"/cds-services", "/cds-services/{service_id}", "/cds-services/{service_id}/feedback",
            "/health", "/analytics/overrides"} <= set(paths)  # fmt: skip
    invoke = paths["/cds-services/{service_id}"]["post"]
    assert invoke["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/HookRequest"
    )
    assert invoke["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/HookResponse"
    )
    assert invoke["security"] == [{"cdsHooksJwt": []}]
    assert "OperationOutcome" in document["components"]["schemas"]
