"""Write docs/openapi.json: the OpenAPI description of the HTTP API (service/api/openapi.py)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from service.api.openapi import openapi_document
from service.app import create_app
from service.config import load_settings

TARGET = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


def render() -> str:
    with tempfile.TemporaryDirectory() as state:
        settings = load_settings(None, state_dir=state, auth={"enabled": False})
        return json.dumps(openapi_document(create_app(settings)), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    TARGET.write_text(render(), encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
