"""The audit writer: hook calls enqueue records in memory, a background task writes batches.

Hook latency must not depend on the database, and a database outage must not fail hook calls.
So records wait in a bounded in-memory queue; when the database is unreachable the writer keeps
them (retrying with backoff) and, once `queue_size` are waiting, drops new ones and counts them.
A record leaves the queue only after its batch committed, so the queue also tells which issued
cards are not yet in the database (feedback linking uses that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass
from itertools import islice

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from service.storage.store import AuditRecord, Storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriterHealth:
    ok: bool
    queue_depth: int
    dropped: int
    written: int
    last_error: str | None  # exception class name only: messages may carry connection details


class AuditWriter:
    def __init__(
        self,
        storage: Storage,
        *,
        queue_size: int,
        batch_size: int = 200,
        retry_max_seconds: float = 30.0,
    ) -> None:
        self.storage = storage
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.retry_max_seconds = retry_max_seconds
        self._queue: deque[AuditRecord] = deque()
        self._work = asyncio.Event()
        self._retry_now = asyncio.Event()
        self._emptied = asyncio.Event()
        self._emptied.set()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._last_error: str | None = None
        self._dropped = 0
        self._written = 0

    def submit(self, record: AuditRecord) -> None:
        """Queue a record without waiting; drop it (counted) when the queue is full."""
        if len(self._queue) >= self.queue_size:
            self._dropped += 1
            if self._dropped & (self._dropped - 1) == 0:  # 1, 2, 4, 8...: no log flood
                log.error(
                    "audit queue full (%d): %d record(s) dropped", self.queue_size, self._dropped
                )
            return
        self._queue.append(record)
        self._emptied.clear()
        self._work.set()

    def pending_cards(self) -> set[str]:
        """Uuids of issued cards whose audit record is not committed yet."""
        return {card.uuid for record in self._queue for card in record.cards}

    def health(self) -> WriterHealth:
        return WriterHealth(
            not self._failing, len(self._queue), self._dropped, self._written, self._last_error
        )

    def use_storage(self, storage: Storage) -> None:
        """Write to another database from now on (and retry the backlog at once)."""
        self.storage = storage
        self._retry_now.set()
        self._work.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def drain(self) -> None:
        """Return once every queued record is written (wrap it in `asyncio.timeout`)."""
        self._retry_now.set()
        await self._emptied.wait()

    async def stop(self, grace_seconds: float = 5.0) -> None:
        """Write what is queued (for up to `grace_seconds`), then stop; the rest is logged lost."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_seconds):
                await self.drain()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self._queue:
            log.error("audit writer stopped with %d record(s) unwritten", len(self._queue))

    async def _run(self) -> None:
        failures = 0
        while True:
            await self._work.wait()
            self._work.clear()
            while self._queue:
                batch = list(islice(self._queue, self.batch_size))
                self._retry_now.clear()  # a storage switch during this attempt wakes the backoff
                try:
                    written = await self._write(batch)
                except Exception as exc:  # DB unreachable or failing: keep the records, retry
                    failures += 1
                    self._note_failure(exc, failures)
                    await self._backoff(failures)
                    continue
                for _ in batch:
                    self._queue.popleft()
                if not self._queue:
                    self._emptied.set()
                self._written += written
                if self._failing:
                    log.warning("audit storage reachable again; backlog being written")
                failures = 0
                self._failing = False
                self._last_error = None  # recovered: /health no longer reports the old error

    async def _write(self, batch: list[AuditRecord]) -> int:
        """Write a batch. If the database refuses a record's content (not its availability),
        write one by one and drop (count) the refused records: one bad record must not block
        the queue forever. Any other error propagates and the batch is retried later."""
        try:
            await asyncio.to_thread(self.storage.write_audit, batch)
            return len(batch)
        except Exception as exc:
            if not _refused_content(exc):
                raise
        written = 0
        for record in batch:
            try:
                await asyncio.to_thread(self.storage.write_audit, [record])
            except Exception as exc:
                if not _refused_content(exc):
                    raise
                self._dropped += 1
                log.error("audit record %s refused (%s); dropped", record.id, type(exc).__name__)
            else:
                written += 1
        return written

    def _note_failure(self, exc: Exception, failures: int) -> None:
        self._failing = True
        self._last_error = type(exc).__name__
        if failures == 1 or failures % 20 == 0:
            log.error(
                "audit write failed (%s, attempt %d); %d record(s) queued",
                self._last_error,
                failures,
                len(self._queue),
            )

    async def _backoff(self, failures: int) -> None:
        delay = min(self.retry_max_seconds, 0.25 * 2 ** min(failures, 10))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._retry_now.wait(), delay)


def _refused_content(exc: Exception) -> bool:
    """The database or driver refused the values themselves: retrying cannot help."""
    if isinstance(exc, DataError | IntegrityError | TypeError | ValueError):
        return True  # (psycopg raises a bare TypeError for a value it cannot adapt)
    return isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)
