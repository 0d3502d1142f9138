"""The background audit writer: batches, and a record the database refuses is dropped (counted)
instead of blocking every record behind it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import select

from service.storage.models import HookCall
from service.storage.store import AuditRecord, Storage
from service.storage.writer import AuditWriter


def record(call_id: str, **changes: object) -> AuditRecord:
    fields: dict[str, object] = {
        "id": call_id,
        "received_at": datetime.now(UTC),
        "service_id": "svc",
        "status": 200,
        "latency_ms": 1.0,
    }
    fields.update(changes)
    return AuditRecord(**fields)  # type: ignore[arg-type]


async def test_refused_record_is_dropped_and_the_rest_written(storage: Storage) -> None:
    writer = AuditWriter(storage, queue_size=100, batch_size=10)
    writer.start()
    try:
        writer.submit(record("good-1"))
        writer.submit(record("bad", data_sources={"patient": object()}))  # not JSON
        writer.submit(record("good-2"))
        async with asyncio.timeout(30):
            await writer.drain()
        health = writer.health()
    finally:
        await writer.stop()
    with storage.session() as session:
        ids = set(session.scalars(select(HookCall.id)))
    assert ids == {"good-1", "good-2"}
    assert (health.ok, health.written, health.dropped, health.queue_depth) == (True, 2, 1, 0)


async def test_many_records_are_written_in_batches(storage: Storage) -> None:
    writer = AuditWriter(storage, queue_size=1000, batch_size=7)
    writer.start()
    try:
        for i in range(100):
            writer.submit(record(f"r-{i}"))
        async with asyncio.timeout(30):
            await writer.drain()
    finally:
        await writer.stop()
    with storage.session() as session:
        assert len(set(session.scalars(select(HookCall.id)))) == 100
    assert writer.health().written == 100
