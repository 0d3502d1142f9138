"""Application factory: settings in, FastAPI app out. No module-level state."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service.api import admin, errors
from service.api.audit_trail import AuditTrail
from service.api.limits import BodySizeLimit
from service.api.metrics import hook_metrics
from service.api.routes import router
from service.cdshooks.discovery import ServiceRegistry
from service.config import Settings, load_settings
from service.logs import configure_logging
from service.pipeline import Knowledge, check_topic_modes
from service.runtime import Runtime
from service.security.auth import build_authenticator
from service.storage.service import Persistence
from service.storage.store import AuditRecord

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    *,
    knowledge: Knowledge | None = None,
    fhir_transport: httpx.AsyncBaseTransport | None = None,
    jwks_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build the service. The transports let tests route FHIR and JWKS calls in-process."""
    knowledge = knowledge or Knowledge.load(settings.rules.extra_data_dir)
    if not settings.auth.enabled:
        log.warning(
            "AUTHENTICATION IS DISABLED (auth.enabled = false): any caller can invoke the "
            "services. Never run like this with real patient data."
        )
    http = httpx.AsyncClient(
        transport=fhir_transport,
        limits=httpx.Limits(max_connections=settings.fhir.max_connections),
        follow_redirects=False,  # a redirect could leave the allowlisted host
        timeout=httpx.Timeout(settings.fhir.deadline_seconds),
    )
    # Its own client: JWKS fetches go to CDS clients' key URLs, never through the FHIR client.
    jwks_http = httpx.AsyncClient(
        transport=jwks_transport, follow_redirects=False, timeout=httpx.Timeout(5.0)
    )
    authenticator = build_authenticator(settings, http=jwks_http)
    services = ServiceRegistry()
    check_topic_modes(  # a typo in a topic mode stops the service here
        settings.rules.topic_modes, settings.rules.service_topic_modes, knowledge, services.by_id
    )
    runtime = Runtime(
        settings=settings,
        knowledge=knowledge,
        services=services,
        authenticator=authenticator,
        http=http,
    )
    persistence = Persistence(settings.storage)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await persistence.start()  # migrations; a database that is down is not fatal
        try:
            yield
        finally:
            await persistence.stop()
            await http.aclose()
            await authenticator.aclose()
            await jwks_http.aclose()

    app = FastAPI(
        title="Cardiac CT CDS Hooks service",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.runtime = runtime
    app.state.persistence = persistence
    errors.install(app)
    app.include_router(router)
    app.include_router(admin.router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.limits.max_body_bytes)
    # Outside the size limit, so 413s are audited too.
    metrics = hook_metrics(runtime.services.by_id)

    def record(call: AuditRecord) -> None:
        persistence.audit(call)
        metrics.observe(call)

    app.add_middleware(AuditTrail, sink=record)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors.origins),
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
        max_age=600,
    )
    return app


def app_from_environment() -> FastAPI:
    """The app of one worker process of `serve --workers N`: the settings are read again from
    the same config file (CARDIAC_CDS_CONFIG) and environment as the parent's."""
    config = os.environ.get("CARDIAC_CDS_CONFIG")
    settings = load_settings(Path(config) if config else None)
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
