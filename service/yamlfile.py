"""Reading the YAML content files the service loads at start-up (rule data, card content)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_mapping(path: Path, error: type[Exception]) -> dict[str, Any]:
    """The file's top-level mapping.

    Raises `error` (each loader's own type, so start-up names the catalogue at fault) with the
    path in the message when the file is not valid YAML or not a mapping.
    """
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise error(f"{path}: expected a mapping at the top level")
    return loaded
