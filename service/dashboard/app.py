"""The admin app: the dashboard page, its data as JSON and CSV, and the scripts it runs.

Its own FastAPI app for its own listener (`admin.host`, `admin.port`); nothing of the CDS
service is mounted here, and every route needs the admin credential (`AdminAuth`).
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.cdshooks.discovery import ServiceRegistry
from service.config import Settings
from service.dashboard.auth import AdminAuth
from service.dashboard.backtests import read_backtests
from service.dashboard.charts import figures
from service.dashboard.data import TABLES, Dashboard, FilterError, Filters, as_csv, load_dashboard
from service.rules.engine import RULES
from service.storage.service import utc_now
from service.storage.store import Storage

log = logging.getLogger("service.dashboard")

HERE = Path(__file__).parent
STATIC = HERE / "static"
NO_STORE = {"Cache-Control": "no-store"}
# Scripts and styles only from this listener; plotly.js sets inline styles on the SVG it draws.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        b"img-src 'self' data:; connect-src 'self'; form-action 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class SecurityHeaders:
    """Pure ASGI middleware adding the headers above to every response, 401s included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    etag: str
    media_type: str

    @classmethod
    def of(cls, body: bytes, media_type: str) -> Asset:
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        return cls(body, gzip.compress(body, 6, mtime=0), etag, media_type)

    def response(self, request: Request, cache_control: str) -> Response:
        headers = {"ETag": self.etag, "Cache-Control": cache_control, "Vary": "Accept-Encoding"}
        if request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(self.gzipped, media_type=self.media_type, headers=headers)
        return Response(self.body, media_type=self.media_type, headers=headers)


@functools.cache
def plotly_version() -> str:
    from plotly.offline import get_plotlyjs_version  # type: ignore[import-untyped]

    return str(get_plotlyjs_version())


@functools.cache
def plotly_asset() -> Asset:
    """plotly.js from the installed plotly package: no CDN, works offline."""
    from plotly.offline import get_plotlyjs

    return Asset.of(str(get_plotlyjs()).encode("utf-8"), "text/javascript; charset=utf-8")


@functools.cache
def static_asset(name: str) -> Asset:
    media = "text/css" if name.endswith(".css") else "text/javascript"
    return Asset.of((STATIC / name).read_bytes(), f"{media}; charset=utf-8")


def _script_json(value: Any) -> str:
    """JSON safe inside <script type="application/json">: no `<`, `>` or `&` left raw."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _comparison(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """backtestTopics pivoted for the page: one row per topic, one column per run (live first)."""
    runs: dict[str, None] = {}
    values: dict[str, dict[str, float | None]] = {}
    for row in rows:
        runs.setdefault(row["run"])
        values.setdefault(row["topic"], {})[row["run"]] = row["per100Orders"]
    return {
        "runs": list(runs),
        "rows": [(topic, [found.get(run) for run in runs]) for topic, found in values.items()],
    }


def configured_modes(settings: Settings) -> list[dict[str, str]]:
    """The topic modes set in the configuration (rules.topic_modes, then per service), for the
    rule owners to see which topics are silent or off before reading the numbers."""
    rows = [
        {"service": "all services", "topic": topic, "mode": mode}
        for topic, mode in sorted(settings.rules.topic_modes.items())
    ]
    for service, modes in sorted(settings.rules.service_topic_modes.items()):
        rows += [
            {"service": service, "topic": topic, "mode": mode}
            for topic, mode in sorted(modes.items())
        ]
    return rows


def create_admin_app(settings: Settings, *, storage: Storage | None = None) -> FastAPI:
    """The dashboard app; `storage` defaults to the configured database (disposed on exit)."""
    auth = AdminAuth(settings.admin)
    own_storage = storage is None
    store = storage or Storage(settings.storage.url)
    services = sorted(ServiceRegistry().by_id)
    topics = sorted(RULES)
    templates = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    templates.filters["percent"] = _percent
    page = templates.get_template("dashboard.html")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if own_storage:
                store.dispose()

    app = FastAPI(
        title="cardiac-ct-cds dashboard",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(auth)],
    )
    app.state.storage = store

    def filters_of(request: Request) -> Filters:
        query = request.query_params
        return Filters.parse(
            since=query.get("since"),
            until=query.get("until"),
            service=query.get("service"),
            topic=query.get("topic"),
            bucket=query.get("bucket"),
            today=utc_now().date(),
        )

    def read(filters: Filters) -> Dashboard:
        backtests = read_backtests(settings.admin.backtest_dir)
        return load_dashboard(store, filters, backtests)

    async def dashboard_for(request: Request, what: str) -> Dashboard:
        filters = filters_of(request)
        # CRD: access to the audit data is itself logged (who, what, which period).
        log.info(
            "dashboard %s read by %s (%s to %s)",
            what,
            request.state.admin_user,
            filters.since,
            filters.until,
        )
        return await asyncio.to_thread(read, filters)

    @app.exception_handler(FilterError)
    async def bad_filter(request: Request, exc: FilterError) -> Response:
        if request.url.path.endswith((".json", ".csv")):
            return JSONResponse({"error": str(exc)}, status_code=400, headers=NO_STORE)
        body = templates.get_template("error.html").render(message=str(exc), status=400)
        return Response(body, 400, media_type="text/html; charset=utf-8", headers=NO_STORE)

    @app.exception_handler(SQLAlchemyError)
    @app.exception_handler(OSError)
    async def storage_down(request: Request, exc: Exception) -> Response:
        log.error("dashboard: storage unavailable (%s)", type(exc).__name__)
        message = "The audit database is unavailable; retry later."
        if request.url.path.endswith((".json", ".csv")):
            return JSONResponse({"error": message}, status_code=503, headers=NO_STORE)
        body = templates.get_template("error.html").render(message=message, status=503)
        return Response(body, 503, media_type="text/html; charset=utf-8", headers=NO_STORE)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/dashboard", status_code=303)

    @app.get("/dashboard")
    async def dashboard_page(request: Request) -> Response:
        dashboard = await dashboard_for(request, "page")
        tables = dashboard.tables()
        query = dashboard.filters.query()
        body = page.render(
            filters=dashboard.filters,
            services=sorted({*services, *filter(None, [dashboard.filters.service])}),
            topics=sorted({*topics, *dashboard.by_topic, *filter(None, [dashboard.filters.topic])}),
            total=dashboard.total.wire(),
            tables=tables,
            backtest=dashboard.backtests,
            live_orders=dashboard.live_orders,
            comparison=_comparison(tables["backtestTopics"]),
            figures_json=_script_json(figures(dashboard, tables)),
            query=urlencode(query),
            plotly_src=f"/dashboard/static/plotly-{plotly_version()}.min.js",
            user=request.state.admin_user,
            modes=configured_modes(settings),
        )
        return Response(body, media_type="text/html; charset=utf-8", headers=NO_STORE)

    @app.get("/dashboard/data.json")
    async def dashboard_data(request: Request) -> JSONResponse:
        dashboard = await dashboard_for(request, "data.json")
        return JSONResponse(dashboard.wire(), headers=NO_STORE)

    @app.get("/dashboard/csv/{table}.csv")
    async def dashboard_csv(request: Request, table: str) -> Response:
        if table not in TABLES:
            return JSONResponse({"error": f"no table {table!r}"}, status_code=404)
        dashboard = await dashboard_for(request, f"{table}.csv")
        filters = dashboard.filters
        name = f"{table}_{filters.since}_{filters.until}.csv"
        return Response(
            as_csv(table, dashboard.tables()[table]),
            media_type="text/csv; charset=utf-8",
            headers={**NO_STORE, "Content-Disposition": f'attachment; filename="{name}"'},
        )

    @app.get("/dashboard/static/plotly-{version}.min.js")
    async def plotly_js(request: Request, version: str) -> Response:
        if version != plotly_version():
            return Response(status_code=404)
        asset = await asyncio.to_thread(plotly_asset)  # read and gzipped once, off the loop
        # The URL names the version: the file never changes under it.
        return asset.response(request, "private, max-age=31536000, immutable")

    @app.get("/dashboard/static/{name}")
    async def static(request: Request, name: str) -> Response:
        if name not in ("dashboard.js", "dashboard.css"):
            return Response(status_code=404)
        return static_asset(name).response(request, "private, max-age=300")

    app.add_middleware(SecurityHeaders)
    return app
