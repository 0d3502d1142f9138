"""Backtest: what the service would have said about past orders, without an EHR in the loop.

Past cardiac CT orders (FFR-CT, calcium score) come from a FHIR server (searched by code, the
date range applied to each order's date of service) or from a FHIR Bulk Data export (NDJSON
files per resource type, streamed into a temporary on-disk index, so memory stays flat in the
number of patients). Each order is evaluated as an order-sign call for its patient, with the
order's date of service as "today": from the FHIR server the data is gathered exactly as the
fetch path gathers it (the discovery prefetch templates, the same client and deadline); from an
export the same templates are applied to the exported resources.

Results are ids, codes and topics only: no resource content, no names.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import csv
import dataclasses
import json
import sqlite3
import tempfile
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx

from service.cdshooks.discovery import ServiceRegistry
from service.cdshooks.hooks import parse_hook_request
from service.cdshooks.models import ServiceDefinition
from service.config import FhirServerAllowance, Settings
from service.fhir.client import FhirClient, FhirEndpoint
from service.fhir.gather import fill_template, next_link
from service.fhir.parse import ref_key
from service.offline import coverage_summary
from service.pipeline import Knowledge
from service.runtime import Runtime
from service.security.auth import Authenticator, Caller

# Orders that were signed: a draft was never signed, an entered-in-error one never existed.
SKIPPED_STATUSES = frozenset({"draft", "entered-in-error"})


@dataclass(frozen=True)
class PastOrder:
    ref: str  # "ServiceRequest/123"
    patient_id: str
    service_date: date
    resource: dict[str, Any]


class OrderSource(Protocol):
    """Where past orders and their patients' data come from."""

    def orders(self) -> AsyncIterator[PastOrder]: ...

    def request_for(self, order: PastOrder, hook_instance: str) -> dict[str, Any]: ...


def _service_date(resource: Mapping[str, Any]) -> date | None:
    """The order's date of service: occurrence[x], else when it was authored."""
    for name in ("occurrenceDateTime", "occurrencePeriod", "authoredOn"):
        value = resource.get(name)
        if isinstance(value, dict):
            value = value.get("start")
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return date.fromisoformat(value[:10])
    return None


def _past_order(resource: Mapping[str, Any], since: date, until: date) -> PastOrder | None:
    if resource.get("resourceType") != "ServiceRequest" or not resource.get("id"):
        return None
    if resource.get("status") in SKIPPED_STATUSES:
        return None
    subject = ref_key((resource.get("subject") or {}).get("reference"))
    day = _service_date(resource)
    if subject is None or not subject.startswith("Patient/") or day is None:
        return None
    if not since <= day <= until:
        return None
    return PastOrder(f"ServiceRequest/{resource['id']}", subject[8:], day, dict(resource))


def _draft_request(
    order: PastOrder, hook_instance: str, extra: Mapping[str, Any]
) -> dict[str, Any]:
    """The order-sign call the EHR would have sent when the order was signed."""
    draft = copy.deepcopy(order.resource)
    draft["status"] = "draft"
    requester = ref_key((draft.get("requester") or {}).get("reference")) or ""
    user = requester if requester.startswith("Practitioner/") else "Practitioner/backtest"
    return {
        "hook": "order-sign",
        "hookInstance": hook_instance,
        "context": {
            "userId": user,
            "patientId": order.patient_id,
            "draftOrders": {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": draft}],
            },
        },
        **extra,
    }


def order_codes(knowledge: Knowledge) -> str:
    """The in-scope codes as one system-less search token list ("75571,S8092,75580,...")."""
    data = knowledge.rule_data
    codes = {
        code.code
        for family in data.families.values()
        for name in family.code_lists
        for code in data.codes(name).exact
    }
    return ",".join(sorted(codes))


@dataclass
class FhirSource:
    """Past orders on a FHIR server; each patient's data fetched as the fetch path does."""

    endpoint: FhirEndpoint
    http: httpx.AsyncClient
    knowledge: Knowledge
    since: date
    until: date
    max_pages: int = 1000
    max_response_bytes: int = 10_485_760

    async def orders(self) -> AsyncIterator[PastOrder]:
        client = FhirClient(self.http, self.endpoint, self.max_response_bytes)
        url: httpx.URL | None = self.endpoint.url_for(
            f"ServiceRequest?code={order_codes(self.knowledge)}&_count=100"
        )
        pages = 0
        while url is not None and pages < self.max_pages:
            bundle = await client.get(url, key="backtest", read=False)
            pages += 1
            for entry in (bundle or {}).get("entry") or []:
                resource = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(resource, dict) and (
                    order := _past_order(resource, self.since, self.until)
                ):
                    yield order
            link = next_link(bundle)
            url = self.endpoint.follow(link) if link else None

    def request_for(self, order: PastOrder, hook_instance: str) -> dict[str, Any]:
        extra: dict[str, Any] = {"fhirServer": self.endpoint.base_url}
        if self.endpoint.access_token:
            extra["fhirAuthorization"] = {
                "access_token": self.endpoint.access_token,
                "token_type": "Bearer",
                "expires_in": 3600,
                "scope": "system/*.read",
                "subject": "cardiac-ct-cds-backtest",
            }
        return _draft_request(order, hook_instance, extra)


class NdjsonSource:
    """A Bulk Data export (`<Type>.ndjson` files, any name containing the type), indexed on disk
    by patient in a temporary SQLite file; each call's prefetch is the discovery templates
    applied to that patient's resources."""

    def __init__(
        self,
        directory: Path,
        templates: Mapping[str, str],
        codes: frozenset[str],
        since: date,
        until: date,
    ) -> None:
        self.templates = templates
        self.codes = codes  # the in-scope order codes (order_codes)
        self.since, self.until = since, until
        self._dir = tempfile.TemporaryDirectory(prefix="backtest-index-")
        self.db = sqlite3.connect(Path(self._dir.name) / "index.db")
        self.db.execute("CREATE TABLE r (type TEXT, id TEXT, patient TEXT, body TEXT)")
        for path in sorted(directory.glob("*.ndjson")):
            self._index(path)
        self.db.execute("CREATE INDEX r_patient ON r (patient, type)")
        self.db.execute("CREATE INDEX r_id ON r (type, id)")
        self.db.commit()

    def _index(self, path: Path) -> None:
        with path.open(encoding="utf-8") as lines:
            batch: list[tuple[str, str, str | None, str]] = []
            for line in lines:
                if not line.strip():
                    continue
                resource = json.loads(line)
                kind, rid = resource.get("resourceType"), resource.get("id")
                if not isinstance(kind, str) or not isinstance(rid, str):
                    continue
                batch.append((kind, rid, _patient_of(resource), line))
                if len(batch) >= 1000:
                    self.db.executemany("INSERT INTO r VALUES (?, ?, ?, ?)", batch)
                    batch.clear()
            self.db.executemany("INSERT INTO r VALUES (?, ?, ?, ?)", batch)

    def close(self) -> None:
        self.db.close()
        self._dir.cleanup()

    async def orders(self) -> AsyncIterator[PastOrder]:
        rows = self.db.execute("SELECT body FROM r WHERE type = 'ServiceRequest' ORDER BY rowid")
        for (body,) in rows:
            order = _past_order(json.loads(body), self.since, self.until)
            if order is not None and _in_scope(order.resource, self.codes):
                yield order

    def request_for(self, order: PastOrder, hook_instance: str) -> dict[str, Any]:
        context = {"patientId": order.patient_id, "userId": "Practitioner/backtest"}
        prefetch: dict[str, Any] = {}
        for key, template in self.templates.items():
            query = fill_template(template, context, None)
            prefetch[key] = self._search(query, order.patient_id) if query else None
        return _draft_request(order, hook_instance, {"prefetch": prefetch})

    def _search(self, query: str, patient: str) -> dict[str, Any] | None:
        """A prefetch query answered from the index: `Type/id` reads, and `Type?params` with
        patient, status, code and category tokens (system-less, OR-ed by commas), _sort=-date
        and _count. A Coverage search also carries the payor Organizations (as an EHR's
        prefetch often does)."""
        path, _, params = query.partition("?")
        if not params and "/" in path:
            kind, rid = path.split("/", 1)
            row = self.db.execute(
                "SELECT body FROM r WHERE type = ? AND id = ?", (kind, rid)
            ).fetchone()
            return json.loads(row[0]) if row else None
        rows = self.db.execute("SELECT body FROM r WHERE patient = ? AND type = ?", (patient, path))
        found = [json.loads(body) for (body,) in rows]
        count: int | None = None
        for name, _, value in (part.partition("=") for part in params.split("&")):
            wanted = set(value.split(","))
            if name == "status":
                found = [r for r in found if r.get("status") in wanted]
            elif name in ("code", "category"):
                found = [r for r in found if _codes(r.get(name)) & wanted]
            elif name == "_sort" and value == "-date":
                found.sort(key=lambda r: str(r.get("effectiveDateTime") or ""), reverse=True)
            elif name == "_count":
                count = int(value)
        found = found[:count] if count is not None else found
        if path == "Coverage":
            found += self._payors(found)
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": r} for r in found],
        }

    def _payors(self, coverages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        refs = {
            key[len("Organization/") :]
            for c in coverages
            for p in c.get("payor") or []
            if (key := ref_key((p or {}).get("reference"))) and key.startswith("Organization/")
        }
        out = []
        for rid in sorted(refs):
            row = self.db.execute(
                "SELECT body FROM r WHERE type = 'Organization' AND id = ?", (rid,)
            ).fetchone()
            if row:
                out.append(json.loads(row[0]))
        return out


def _patient_of(resource: Mapping[str, Any]) -> str | None:
    kind = resource.get("resourceType")
    if kind == "Patient":
        return str(resource.get("id"))
    field_name = "beneficiary" if kind == "Coverage" else "subject"
    key = ref_key((resource.get(field_name) or {}).get("reference"))
    return key[8:] if key and key.startswith("Patient/") else None


def _codes(value: Any) -> set[str]:
    """Every coding code of a CodeableConcept or a list of them."""
    concepts = value if isinstance(value, list) else [value]
    return {
        c["code"]
        for concept in concepts
        if isinstance(concept, dict)
        for c in concept.get("coding") or []
        if isinstance(c, dict) and isinstance(c.get("code"), str)
    }


def _in_scope(resource: Mapping[str, Any], codes: frozenset[str]) -> bool:
    return bool(_codes(resource.get("code")) & codes)


@dataclass
class OrderResult:
    order: str
    patient: str
    date_of_service: str
    topics: list[str]
    silent_topics: list[str]
    coverage: dict[str, Any]
    data_gaps: list[str]
    payer_profile: str | None
    error: str | None = None

    def wire(self) -> dict[str, Any]:
        return {
            "order": self.order,
            "patient": self.patient,
            "dateOfService": self.date_of_service,
            "topics": self.topics,
            "silentTopics": self.silent_topics,
            "coverage": self.coverage,
            "dataGaps": self.data_gaps,
            "payerProfile": self.payer_profile,
            "error": self.error,
        }


@dataclass
class Summary:
    run_id: str
    source: str
    since: date
    until: date
    started: datetime
    orders: int = 0
    errors: int = 0
    with_gaps: int = 0
    fires: Counter[str] = field(default_factory=Counter)
    by_payer: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    orders_by_payer: Counter[str] = field(default_factory=Counter)

    def add(self, result: OrderResult) -> None:
        self.orders += 1
        if result.error:
            self.errors += 1
            return
        payer = result.payer_profile or "(none)"
        self.orders_by_payer[payer] += 1
        if result.data_gaps:
            self.with_gaps += 1
        for topic in [*result.topics, *result.silent_topics]:
            self.fires[topic] += 1
            self.by_payer[payer][topic] += 1

    def wire(self, finished: datetime) -> dict[str, Any]:
        per_100 = 100 / self.orders if self.orders else 0.0
        return {
            "run_id": self.run_id,
            "source": self.source,
            "started": self.started.isoformat(),
            "finished": finished.isoformat(),
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "orders": self.orders,
            "errors": self.errors,
            "per_topic": {
                t: {"fires": n, "per_100_orders": round(n * per_100, 2)}
                for t, n in sorted(self.fires.items())
            },
            "per_payer_profile": {
                p: {
                    "orders": self.orders_by_payer[p],
                    "fires": dict(sorted(self.by_payer[p].items())),
                }
                for p in sorted(self.orders_by_payer)
            },
            "data_gap_rate": round(self.with_gaps / self.orders, 4) if self.orders else 0.0,
        }


class Backtest:
    """Evaluates past orders through the service's own pipeline, a few at a time."""

    def __init__(
        self, settings: Settings, http: httpx.AsyncClient, allowance: FhirServerAllowance | None
    ) -> None:
        self.settings = settings
        self.services = ServiceRegistry()
        service = next(s for s in self.services.document.services if s.hook == "order-sign")
        self.service: ServiceDefinition = service
        self.knowledge = Knowledge.load(settings.rules.extra_data_dir)
        self.runtime = Runtime(
            settings, self.knowledge, self.services, Authenticator(settings), http
        )
        self.caller = Caller("backtest", None, (allowance,) if allowance else ())

    async def evaluate(self, source: OrderSource, order: PastOrder) -> OrderResult:
        raw = source.request_for(order, f"backtest-{uuid.uuid4()}")
        base = OrderResult(
            order.ref, order.patient_id, order.service_date.isoformat(), [], [], {}, [], None
        )
        try:
            request, _ = parse_hook_request(raw, self.service)
            # The order's date of service is its "today"; a Runtime per order (it is a few
            # references), since orders are evaluated concurrently.
            runtime = dataclasses.replace(self.runtime, today=lambda: order.service_date)
            evaluation = await runtime.answer(self.service, request, self.caller, size=0)
        except Exception as exc:  # one bad order must not stop the run; the result says why
            base.error = type(exc).__name__
            return base
        base.topics = [c.topic for c in evaluation.issued if c.mode == "active"]
        base.silent_topics = [c.topic for c in evaluation.issued if c.mode == "silent"]
        base.coverage = coverage_summary(evaluation.response.wire()).get(order.ref, {})
        base.coverage.pop("coverage-assertion-id", None)
        base.coverage.pop("date", None)
        base.data_gaps = sorted(k for k, v in evaluation.data_sources.items() if v == "unavailable")
        base.payer_profile = evaluation.payer_profile
        return base

    async def run(
        self,
        source: OrderSource,
        on_result: Callable[[OrderResult], None],
        *,
        concurrency: int = 4,
    ) -> None:
        """Every order of the source, `concurrency` at a time, each result handed to
        `on_result` as it comes (in completion order); nothing is kept, so memory stays flat
        however many orders there are."""
        queue: asyncio.Queue[PastOrder | None] = asyncio.Queue(maxsize=concurrency * 2)

        async def worker() -> None:
            while (order := await queue.get()) is not None:
                on_result(await self.evaluate(source, order))

        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        try:
            async for order in source.orders():
                await queue.put(order)
        finally:
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)


RESULT_COLUMNS = (
    "order",
    "patient",
    "dateOfService",
    "topics",
    "silentTopics",
    "covered",
    "paNeeded",
    "docNeeded",
    "dataGaps",
    "payerProfile",
    "error",
)


class ResultWriter:
    """Per-order results as NDJSON or CSV, written as they come."""

    def __init__(self, directory: Path, output_format: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.format = output_format
        self.file = (directory / f"results.{output_format}").open("w", encoding="utf-8", newline="")
        self.csv = csv.writer(self.file) if output_format == "csv" else None
        if self.csv is not None:
            self.csv.writerow(RESULT_COLUMNS)

    def write(self, result: OrderResult) -> None:
        if self.csv is None:
            self.file.write(json.dumps(result.wire(), separators=(",", ":")) + "\n")
            return
        coverage = result.coverage
        self.csv.writerow(
            [
                result.order,
                result.patient,
                result.date_of_service,
                " ".join(result.topics),
                " ".join(result.silent_topics),
                coverage.get("covered", ""),
                coverage.get("pa-needed", ""),
                _joined(coverage.get("doc-needed")),
                " ".join(result.data_gaps),
                result.payer_profile or "",
                result.error or "",
            ]
        )

    def close(self) -> None:
        self.file.close()

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        text = json.dumps(summary, indent=2) + "\n"
        (self.directory / "summary.json").write_text(text, encoding="utf-8")


def _joined(value: Any) -> str:
    return " ".join(value) if isinstance(value, list) else str(value or "")


async def run_backtest(
    settings: Settings,
    *,
    since: date,
    until: date,
    output: Path,
    output_format: str = "ndjson",
    fhir_server: str | None = None,
    fhir_token: str | None = None,
    ndjson: Path | None = None,
    concurrency: int = 4,
    http: httpx.AsyncClient | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run a backtest from a FHIR server or an NDJSON export; write the results and
    output/summary.json; return the summary. `http` lets tests route to an in-process server."""
    client = http or httpx.AsyncClient(
        follow_redirects=False, timeout=httpx.Timeout(settings.fhir.deadline_seconds)
    )
    allowance = (
        FhirServerAllowance(base_url=fhir_server, allow_without_token=fhir_token is None)
        if fhir_server
        else None
    )
    runner = Backtest(settings, client, allowance)
    source: FhirSource | NdjsonSource
    if fhir_server is not None:
        endpoint = FhirEndpoint(fhir_server.rstrip("/"), fhir_token)
        source = FhirSource(endpoint, client, runner.knowledge, since, until)
        kind = "fhir"
    elif ndjson is not None:
        templates = runner.service.prefetch or {}
        codes = frozenset(order_codes(runner.knowledge).split(","))
        source = NdjsonSource(ndjson, templates, codes, since, until)
        kind = "ndjson"
    else:
        raise ValueError("a FHIR server or an NDJSON directory is needed")
    summary = Summary(uuid.uuid4().hex[:12], kind, since, until, datetime.now(UTC))
    writer = ResultWriter(output, output_format)
    with _progress(progress) as advance:

        def on_result(result: OrderResult) -> None:
            summary.add(result)
            writer.write(result)
            advance()

        try:
            await runner.run(source, on_result, concurrency=concurrency)
        finally:
            writer.close()
            if isinstance(source, NdjsonSource):
                source.close()
            if http is None:
                await client.aclose()
    wired = summary.wire(datetime.now(UTC))
    writer.write_summary(wired)
    return wired


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[], None]]:
    """A progress line on stderr (orders evaluated so far) when `enabled`."""
    if not enabled:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.completed} orders evaluated"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("backtest", total=None)
        yield lambda: bar.advance(task)
