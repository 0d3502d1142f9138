"""The dashboard's test data: real rows written through the Storage API (on SQLite and on
PostgreSQL, fixtures from tests/storage), back-test run directories on disk, the admin app
with its lifespan, and a password hashed once per session."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.config import Settings
from service.dashboard.app import create_admin_app
from service.dashboard.auth import hash_password
from service.storage.store import AuditCard, AuditRecord, Storage
from tests.storage.conftest import database_url, storage  # noqa: F401 - fixtures
from tests.storage.test_report import at, outcome

SIGN, SELECT = "cardiac-ct-order-sign", "cardiac-ct-order-select"
BUNDLING, PRIOR_AUTH, RISK = (
    "cac-bundling-conflict",
    "prior-auth-required",
    "cac-risk-factor-missing",
)
R1 = ("http://example.org/override", "already-done", "Already done")
R2 = ("http://example.org/override", "patient-declined", None)
USERNAME, PASSWORD = "rule-owner", "correct horse battery staple"
# The cheapest parameters the config accepts: the tests check behaviour, not cost.
PASSWORD_HASH = hash_password(PASSWORD, log2_n=14, p=1)
ADMIN_BASE = "http://admin.test"
# Every identifier of a person or an order in the data: none may appear on any page.
SECRETS = (
    "pt-SECRET-7731",
    "pt-SECRET-4410",
    "ord-SECRET",
    "hi-SECRET",
    "Jane Doe-Secret",
    "issuer-SECRET",
)


def call(
    call_id: str,
    when: datetime,
    *cards: tuple[str, str, str],
    service: str = SIGN,
    payer: str | None = None,
    orders: int = 1,
    in_scope: bool = True,
    status: int = 200,
    patient: str = "pt-SECRET-7731",
) -> AuditRecord:
    hook = "order-sign" if service == SIGN else "order-select"
    return AuditRecord(
        call_id,
        when,
        service,
        status,
        10.0,
        hook=hook,
        hook_instance=f"hi-SECRET-{call_id}",
        client_iss="https://issuer-SECRET.example.org/",
        patient_id=patient,
        order_ids=tuple(f"ServiceRequest/ord-SECRET-{call_id}-{n}" for n in range(orders)),
        data_sources={"patient": "prefetch", "coverage": "fetched"} if in_scope else {},
        payer_profile=payer,
        cards=tuple(
            AuditCard(
                uuid, topic, "warning", (f"ServiceRequest/ord-SECRET-{call_id}-0",), payer, mode
            )
            for uuid, topic, mode in cards
        ),
    )


def seed(store: Storage) -> None:
    """November 2026, both services, active and silent cards, every kind of outcome.

    Expected, 2026-11-01..30, all services: 8 fires = 6 shown + 2 silent; accepted 2
    (s1a, s2a: overridden then accepted, the latest counts), overridden 3 (s1b, s2b, s4a),
    ignored 1 (s3a). Live order-sign calls in scope and answered: S1, S2, S3 with 4 orders.
    """
    store.write_audit(
        [
            call(
                "S1",
                at(2),
                ("s1a", BUNDLING, "active"),
                ("s1b", PRIOR_AUTH, "active"),
                ("s1c", RISK, "silent"),
                payer="medicare-original",
                orders=2,
            ),
            call(
                "S2",
                at(4),
                ("s2a", BUNDLING, "active"),
                ("s2b", PRIOR_AUTH, "active"),
                payer="horizon-bcbs-nj",
                patient="pt-SECRET-4410",
            ),
            call("S3", at(10), ("s3a", BUNDLING, "active")),
            call(
                "S4",
                at(11),
                ("s4a", BUNDLING, "active"),
                ("s4b", RISK, "silent"),
                service=SELECT,
                payer="medicare-original",
            ),
            call("S5", at(18), orders=2, in_scope=False),  # out of scope: no chart read
            call("S6", at(19), status=401, in_scope=False),  # refused
            call("D1", at(20, month=10), ("d1", BUNDLING, "active")),  # before the period
        ]
    )
    store.record_feedback(
        [
            outcome("s1a", "accepted", at(2, 10)),
            outcome("s1b", "overridden", at(2, 10), R1),
            outcome("s2a", "overridden", at(4, 10), R2),
            outcome("s2a", "accepted", at(4, 11)),
            outcome("s2b", "overridden", at(4, 10), R1),
            outcome("s4a", "overridden", at(11, 10)),
            outcome("d1", "overridden", at(20, 10, month=10), R1),
            outcome("zz", "overridden", at(15), R1),  # never issued
        ],
        service_id=SIGN,
        client_iss="https://issuer-SECRET.example.org/",
        received_at=at(20),
    )


def summary(
    run_id: str, started: str, orders: int, **per_topic: tuple[int, float]
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "source": "ndjson",
        "started": started,
        "finished": started.replace("T10", "T11"),
        "since": "2026-10-01",
        "until": "2026-10-31",
        "orders": orders,
        "errors": 0,
        "per_topic": {
            topic.replace("_", "-"): {"fires": fires, "per_100_orders": per_100}
            for topic, (fires, per_100) in per_topic.items()
        },
        "per_payer_profile": {"(none)": {"orders": orders, "fires": {}}},
        "data_gap_rate": 0.02,
    }


def make_backtest_dir(root: Path) -> Path:
    """Two finished runs (the newer first on the page), one broken, one still running."""
    directory = root / "backtests"
    runs = {
        "run-older": summary(
            "bt-older", "2026-11-20T10:00:00+00:00", 100, prior_auth_required=(40, 40.0)
        ),
        "run-newer": summary(
            "bt-newer",
            "2026-11-28T10:00:00+00:00",
            200,
            cac_bundling_conflict=(30, 15.0),
            ffrct_bmi_missing=(10, 5.0),
        ),
    }
    for name, content in runs.items():
        (directory / name).mkdir(parents=True)
        (directory / name / "summary.json").write_text(json.dumps(content), encoding="utf-8")
    (directory / "broken").mkdir()
    (directory / "broken" / "summary.json").write_text("{not json", encoding="utf-8")
    (directory / "running").mkdir()
    return directory


def admin_section(**overrides: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "enabled": True,
        "username": USERNAME,
        "password_hash": PASSWORD_HASH,
    }
    section.update(overrides)
    return section


@pytest.fixture
def admin_settings(
    make_settings: Callable[..., Settings],
    database_url: str,  # noqa: F811 - the fixture
) -> Callable[..., Settings]:
    """Settings on the test database with the admin section (plus overrides)."""

    def make(**admin: Any) -> Settings:
        result: Settings = make_settings(
            storage={"url": database_url}, admin=admin_section(**admin)
        )
        return result

    return make


@asynccontextmanager
async def admin_client(
    settings: Settings, client: tuple[str, int] = ("127.0.0.1", 50000), **kwargs: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The admin app with its lifespan running; requests come from `client` (the TCP peer)."""
    app = create_admin_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url=ADMIN_BASE, **kwargs) as http:
            yield http


def basic(user: str = USERNAME, password: str = PASSWORD) -> httpx.BasicAuth:
    return httpx.BasicAuth(user, password)
