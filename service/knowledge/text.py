"""Text with `{name}` placeholders, as card content and coverage reasons are written: filled
from a finding's details, checked when the data loads."""

from __future__ import annotations

import re
import string

_PLACEHOLDER_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def check_placeholders(text: str) -> None:
    """Only plain `{name}` placeholders: no positional `{}`, attribute or index access,
    conversion or format spec (values are plain strings from the rules), and balanced braces.
    Raises ValueError naming the problem."""
    try:
        fields = list(string.Formatter().parse(text))
    except ValueError as exc:  # unbalanced or stray braces
        raise ValueError(f"bad placeholder syntax: {exc}") from None
    for _, name, spec, conversion in fields:
        if name is None:
            continue
        if not _PLACEHOLDER_NAME.match(name) or spec or conversion:
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise ValueError(f"placeholder {{{shown}}} must be a plain lower-case name")
