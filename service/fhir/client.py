"""A small read-only FHIR REST client bound to ONE allowlisted base URL.

Every URL it requests, including `next` paging links the server (or the EHR's prefetch) hands
back, must stay under that base: a link to another host or path is refused, never followed
(SSRF guard). Failures become `FhirFetchError` with a plain reason that names no patient data
and no token, ready to be shown in a `data-incomplete` card.

FHIR RESTful API: https://hl7.org/fhir/R4/http.html (read, search, paging via Bundle.link).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

import httpx

log = logging.getLogger(__name__)

# Query values keep `:`, `/` and `,` readable (a `,` separates OR-ed values in FHIR search and
# servers split on it after percent-decoding either way); `|`, `&`, `=`, spaces are escaped.
_QUERY_SAFE = ":/,"


class FhirFetchError(Exception):
    """A request to the FHIR server failed; `reason` is safe to show and to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class FhirEndpoint:
    """The FHIR server of one hook call: its base URL and the call's bearer token (if any)."""

    base_url: str
    access_token: str | None = field(default=None, repr=False)

    def url_for(self, relative: str) -> httpx.URL:
        """`{base}/{relative}` with the query re-encoded value by value (FHIR search syntax)."""
        path, _, query = relative.lstrip("/").partition("?")
        # Not parse_qsl: it turns `+` into a space, which would break `ge2026-01-01T00:00+01:00`.
        pairs = [part.partition("=") for part in query.split("&") if part]
        encoded = "&".join(
            f"{quote(unquote(name), safe=':')}={quote(unquote(value), safe=_QUERY_SAFE)}"
            for name, _, value in pairs
        )
        try:
            url = httpx.URL(f"{self.base_url}/{path}" + (f"?{encoded}" if encoded else ""))
        except httpx.InvalidURL:
            raise FhirFetchError("the query for this data is not a valid URL") from None
        self.check_owned(url)
        return url

    def follow(self, link: str) -> httpx.URL:
        """A paging link, only if it stays on this server (same scheme, host, port, base path)."""
        if not isinstance(link, str) or not link:
            raise FhirFetchError("FHIR server sent a paging link that is not a URL")
        try:
            url = httpx.URL(link)
        except (httpx.InvalidURL, TypeError):
            raise FhirFetchError("FHIR server sent a paging link that is not a URL") from None
        if not url.is_absolute_url:
            url = httpx.URL(self.base_url + "/").join(url)
        self.check_owned(url)
        return url

    def check_owned(self, url: httpx.URL) -> None:
        base = httpx.URL(self.base_url + "/")
        same_origin = (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)
        dot_segment = any(part in (".", "..") for part in url.path.split("/"))
        if not same_origin or url.userinfo or dot_segment or not url.path.startswith(base.path):
            raise FhirFetchError("a link pointed outside the allowlisted FHIR server; not followed")

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/fhir+json"}
        if self.access_token:
            headers["Authorization"] = f"Bearer {self.access_token}"
        return headers


def is_read(relative: str) -> bool:
    """`Type/id` (an instance read) as opposed to a search `Type?params`."""
    path = relative.lstrip("/")
    return "?" not in path and path.count("/") == 1


class FhirClient:
    """GETs JSON from one FHIR endpoint through the service's shared HTTP client."""

    def __init__(
        self, http: httpx.AsyncClient, endpoint: FhirEndpoint, max_response_bytes: int
    ) -> None:
        self.http = http
        self.endpoint = endpoint
        self.max_response_bytes = max_response_bytes

    async def get(self, url: httpx.URL, *, key: str, read: bool) -> dict[str, Any] | None:
        """The resource at `url`; None when a read finds nothing (404/410: no data, not a gap)."""
        started = time.perf_counter()
        try:
            async with self.http.stream("GET", url, headers=self.endpoint.headers()) as response:
                status = response.status_code
                body = await self._read_limited(response) if 200 <= status < 300 else b""
        except httpx.TimeoutException:
            raise FhirFetchError("FHIR server did not answer in time") from None
        except httpx.HTTPError as exc:
            log.info("FHIR %s: %s", key, type(exc).__name__)
            raise FhirFetchError("FHIR server could not be reached") from None
        elapsed_ms = (time.perf_counter() - started) * 1000
        log.info("FHIR %s: HTTP %d, %d bytes, %.0f ms", key, status, len(body), elapsed_ms)
        if read and status in (404, 410):
            return None
        if not 200 <= status < 300:
            raise FhirFetchError(f"FHIR server answered {status}")
        resource = _fhir_json(body)
        if resource.get("resourceType") == "OperationOutcome":
            raise FhirFetchError(f"FHIR server answered with an error ({_issue_codes(resource)})")
        return resource

    async def _read_limited(self, response: httpx.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_response_bytes:
                raise FhirFetchError(
                    f"FHIR server sent more than {self.max_response_bytes} bytes; not read"
                )
            chunks.append(chunk)
        return b"".join(chunks)


def _fhir_json(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise FhirFetchError("FHIR server sent a response that is not FHIR JSON") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("resourceType"), str):
        raise FhirFetchError("FHIR server sent JSON that is not a FHIR resource")
    return parsed


def _issue_codes(outcome: dict[str, Any]) -> str:
    # issue.code is from a fixed value set (no PHI); diagnostics/details text may hold PHI.
    issue = outcome.get("issue")
    issues: list[Any] = issue if isinstance(issue, list) else []
    codes = sorted(
        {i["code"] for i in issues if isinstance(i, dict) and isinstance(i.get("code"), str)}
    )
    return "OperationOutcome " + (", ".join(codes) if codes else "without an issue code")
