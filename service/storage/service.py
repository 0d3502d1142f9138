"""Storage as the running service uses it: lifecycle, feedback, audit, retention, health."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from service.config import StorageSettings
from service.storage.store import (
    AuditRecord,
    FeedbackEntry,
    FeedbackResult,
    PurgeResult,
    Storage,
)
from service.storage.writer import AuditWriter

log = logging.getLogger(__name__)

PURGE_INTERVAL = timedelta(days=1)
PURGE_RETRY = timedelta(hours=1)
PING_TIMEOUT_SECONDS = 2.0


class StorageUnavailable(Exception):
    """The database could not take a synchronous write; the caller answers 503."""


@dataclass(frozen=True)
class StorageHealth:
    ok: bool
    database_reachable: bool
    queue_depth: int
    queue_size: int
    dropped: int
    written: int
    last_error: str | None

    def wire(self) -> dict[str, object]:
        return {
            "status": "ok" if self.ok else "degraded",
            "databaseReachable": self.database_reachable,
            "auditQueueDepth": self.queue_depth,
            "auditQueueSize": self.queue_size,
            "auditDropped": self.dropped,
            "auditWritten": self.written,
            "lastError": self.last_error,
        }


def utc_now() -> datetime:
    return datetime.now(UTC)


class Persistence:
    """Owns the database of one app: started and stopped by the app's lifespan."""

    def __init__(self, settings: StorageSettings, *, now: Callable[[], datetime] = utc_now) -> None:
        self.settings = settings
        self.now = now
        self.writer = AuditWriter(
            Storage(settings.url),
            queue_size=settings.audit_queue_size,
            batch_size=settings.audit_batch_size,
            retry_max_seconds=settings.retry_max_seconds,
        )
        self._maintenance: asyncio.Task[None] | None = None
        self._ping: asyncio.Task[None] | None = None

    @property
    def storage(self) -> Storage:
        return self.writer.storage

    async def start(self) -> None:
        """Migrate, then start the writer and the daily purge. A DB that is down is not fatal:
        hook calls are still answered and the schema is applied once the DB is back."""
        log.info("storage: %s", self.storage.display_url)
        try:
            await asyncio.to_thread(self.storage.ensure_schema)
        except (SQLAlchemyError, OSError) as exc:
            log.error("storage unreachable at startup (%s); running degraded", type(exc).__name__)
        self.writer.start()
        self._maintenance = asyncio.create_task(self._purge_daily(), name="audit-purge")

    async def stop(self) -> None:
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        await self.writer.stop()
        self.storage.dispose()

    def audit(self, record: AuditRecord) -> None:
        self.writer.submit(record)

    async def record_feedback(
        self, entries: Sequence[FeedbackEntry], *, service_id: str, client_iss: str | None
    ) -> FeedbackResult:
        """Durably store feedback (committed when this returns) or raise StorageUnavailable."""
        # Read the queue before the database: a record leaves the queue only after its commit.
        pending = self.writer.pending_cards()
        try:
            return await asyncio.to_thread(
                self.storage.record_feedback,
                entries,
                service_id=service_id,
                client_iss=client_iss,
                received_at=self.now(),
                cards_pending=pending,
            )
        except (SQLAlchemyError, OSError) as exc:
            log.error("feedback not stored (%s)", type(exc).__name__)
            raise StorageUnavailable(type(exc).__name__) from exc

    async def purge(self) -> PurgeResult:
        """Delete audit records and feedback older than `audit_retention_days`."""
        cutoff = self.now() - timedelta(days=self.settings.audit_retention_days)
        result = await asyncio.to_thread(self.storage.purge, cutoff)
        log.info(
            "retention purge before %s: %d hook call(s), %d feedback item(s)",
            cutoff.date().isoformat(),
            result.hook_calls,
            result.feedback,
        )
        return result

    async def health(self) -> StorageHealth:
        writer = self.writer.health()
        reachable = await self._reachable()
        return StorageHealth(
            ok=writer.ok and reachable,
            database_reachable=reachable,
            queue_depth=writer.queue_depth,
            queue_size=self.writer.queue_size,
            dropped=writer.dropped,
            written=writer.written,
            last_error=writer.last_error,
        )

    async def _reachable(self) -> bool:
        # One ping at a time: frequent health probes must not pile up threads on a dead DB.
        if self._ping is None or self._ping.done():
            self._ping = asyncio.create_task(asyncio.to_thread(self.storage.ping))
        try:
            await asyncio.wait_for(asyncio.shield(self._ping), PING_TIMEOUT_SECONDS)
        except Exception:  # unreachable, timed out or refused: all mean "not reachable"
            return False
        return True

    async def _purge_daily(self) -> None:
        while True:
            try:
                await self.purge()
            except (SQLAlchemyError, OSError) as exc:
                log.error("retention purge failed (%s); retrying in an hour", type(exc).__name__)
                await asyncio.sleep(PURGE_RETRY.total_seconds())
                continue
            await asyncio.sleep(PURGE_INTERVAL.total_seconds())
