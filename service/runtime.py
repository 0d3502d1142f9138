"""Everything a running service holds: settings, knowledge, clients. Built once per app.

`Runtime.answer` is the seam between transport and domain: it gathers the data for a hook call
(prefetch, then the FHIR server within the caller's allowlist) and runs the pipeline.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import httpx

from service.cdshooks.discovery import ServiceRegistry
from service.cdshooks.hooks import hook_spec
from service.cdshooks.models import HookRequest, ServiceDefinition
from service.config import Settings
from service.fhir.gather import gather
from service.pipeline import (
    Evaluation,
    Knowledge,
    drafts_out_of_scope,
    out_of_scope,
    read_drafts,
    run,
)
from service.render.cards import IdFactory, new_id
from service.security.auth import Authenticator, Caller

log = logging.getLogger(__name__)

# A call whose body is at most this size, and whose FHIR server sent at most this many
# resources, is evaluated on the event loop: a few milliseconds at most (bench/http_bench.py
# scaling rows: ~5 ms for 18 KiB), cheaper than the thread hand-offs. Larger calls are
# evaluated in a worker thread so they never hold the other calls.
INLINE_MAX_BYTES = 8192
INLINE_MAX_FETCHED = 50


@dataclass
class Runtime:
    settings: Settings
    knowledge: Knowledge
    services: ServiceRegistry
    authenticator: Authenticator
    http: httpx.AsyncClient
    today: Callable[[], date] = date.today
    new_uuid: IdFactory = new_id

    async def answer(
        self, service: ServiceDefinition, request: HookRequest, caller: Caller, *, size: int
    ) -> Evaluation:
        """`request` has passed `parse_hook_request` for `service`; `size` is its body's
        length in bytes, which decides where the CPU work runs."""
        hook = hook_spec(service.hook)
        if drafts_out_of_scope(hook, request, self.knowledge):
            return out_of_scope()  # no prefetch read, no FHIR server contacted, no facts
        small = size <= INLINE_MAX_BYTES
        parsed = (
            read_drafts(hook, request, self.knowledge)
            if small
            else await asyncio.to_thread(read_drafts, hook, request, self.knowledge)
        )
        if not parsed.in_scope:
            return out_of_scope()
        allowance = None
        if request.fhirServer:
            allowance = caller.fhir_allowance(request.fhirServer)
            if allowance is None:
                # SSRF guard: a fhirServer outside the caller's allowlist is never contacted
                # (gather records the gap, only if a key actually needed fetching).
                log.warning(
                    "fhirServer not in the allowlist of issuer %s; not contacted", caller.issuer
                )
        data = await gather(
            templates=service.prefetch or {},
            request=request,
            allowance=allowance,
            http=self.http,
            settings=self.settings.fhir,
            keep=parsed.relevance(self.knowledge),
            offload=not small,
        )
        evaluate = functools.partial(
            run,
            hook,
            request,
            data,
            self.knowledge,
            option_defaults=self.services.option_defaults,
            today=self.today(),
            new_uuid=self.new_uuid,
            parsed=parsed,
            modes=self.settings.rules.modes_for(service.id),
        )
        fetched = sum(
            len(data.resources.get(key, ()))
            for key, source in data.provenance.items()
            if source == "fetched"
        )
        if small and fetched <= INLINE_MAX_FETCHED:
            return evaluate()
        return await asyncio.to_thread(evaluate)
