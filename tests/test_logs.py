"""The log configuration keeps PHI out: HTTP client libraries log no request URLs."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from service.logs import configure_logging


@pytest.fixture
def restore_levels() -> Iterator[None]:
    saved = {name: logging.getLogger(name).level for name in ("", "httpx", "httpcore")}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize("level", ["DEBUG", "INFO"])
def test_http_client_request_lines_are_not_logged(level: str, restore_levels: None) -> None:
    """httpx's INFO line is `HTTP Request: GET {base}/Condition?patient={id}`: a patient id."""
    logging.getLogger().setLevel(level)  # under pytest basicConfig leaves the root alone
    configure_logging(level)
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    assert not logging.getLogger("httpcore").isEnabledFor(logging.INFO)
