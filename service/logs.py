"""Log setup for every process of the service: `serve`, each worker of `serve --workers N`
(a spawned process inherits no logging configuration), and the CLI commands."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str, log_format: str = "text") -> None:
    """Text or JSON lines on stderr. HTTP client libraries are held at WARNING: httpx logs each
    request line at INFO, FHIR search URLs with patient ids among them (PHI); service.fhir logs
    each fetch without ids."""
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
        logging.basicConfig(level=level, handlers=[handler], force=True)
    else:
        logging.basicConfig(
            level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
        )
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
