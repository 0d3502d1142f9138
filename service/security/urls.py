"""Canonical base URLs, so an allowlist comparison cannot be fooled by spelling.

The `fhirServer` of a hook request is attacker-influenced input that decides where the service
sends requests (and FHIR access tokens). Two URLs are "the same server" only if scheme, host,
port and path agree after normalisation; anything unusual (userinfo, query, fragment, dot
segments, odd characters) is refused outright rather than interpreted.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
# DNS names and IPv4 literals; IPv6 literals are checked separately.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_IPV6 = re.compile(r"^[0-9a-f:.]+$")
_PATH = re.compile(r"^[A-Za-z0-9/_~.\-%!$&'()*+,;=:@]*$")


def normalize_base_url(url: str) -> str | None:
    """`scheme://host[:port]/path` without trailing slash, or None if `url` is not acceptable."""
    if not isinstance(url, str) or len(url) > 2048 or url != url.strip():
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or parts.query or parts.fragment or "#" in url or "?" in url:
        return None
    netloc = parts.netloc
    if "@" in netloc or parts.username is not None or parts.password is not None:
        return None  # http://allowed@evil.example: the host is evil.example
    host = (parts.hostname or "").lower()
    if netloc.startswith("["):
        if not _IPV6.match(host):
            return None
        host = f"[{host}]"
    elif not _HOST.match(host):
        return None
    path = parts.path
    if not _PATH.match(path) or "\\" in url:
        return None
    segments = path.split("/")
    if any(s in (".", "..") or s.lower() in ("%2e", "%2e%2e", ".%2e", "%2e.") for s in segments):
        return None
    path = path.rstrip("/")
    if "//" in path:
        return None
    authority = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    return f"{scheme}://{authority}{path}"


def same_base_url(a: str, b: str) -> bool:
    """True when both URLs are acceptable and name the same FHIR base."""
    left, right = normalize_base_url(a), normalize_base_url(b)
    return left is not None and left == right
