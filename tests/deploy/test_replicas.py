"""Two replicas behind a load balancer behave as one service.

Real parts only: two `cardiac-ct-cds serve` processes sharing one PostgreSQL schema (audit and
feedback) and one Redis prefix (JWT replay cache, key sets), behind a real HAProxy on loopback,
called with tokens signed by a key pair made for the test. Skipped, with the reason, where the
`haproxy` binary is missing (.ci/run installs Debian's package).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from service.config import Settings, load_settings
from service.security.dev_client import DevClientKeys, ensure_dev_client, sign_dev_token
from tests.api.test_invoke_smoke import ORDER_SIGN_URL, REQUEST
from tests.security.conftest import REDIS_URL
from tests.storage.conftest import POSTGRES_DSN, postgres_url, unused_loopback_port
from tests.storage.test_feedback import FEEDBACK_URL, overridden
from tests.support.serve import (
    STARTUP_LIMIT_SECONDS,
    dev_client_config,
    serve_command,
    serve_process,
    start_logged,
    stop,
    wait_until_up,
)

HAPROXY = shutil.which("haproxy")
BUNDLING = "cac-bundling-conflict"
pytestmark = pytest.mark.skipif(
    HAPROXY is None, reason="haproxy is not installed (Debian package haproxy; .ci/run installs it)"
)


@dataclass
class Replica:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Cluster:
    settings: Settings
    config: Path
    keys: DevClientKeys
    balancer: str
    replicas: dict[str, Replica]
    schema: str

    def token(self) -> str:
        # `aud` is the URL the EHR calls: the balancer's, whichever replica answers.
        return sign_dev_token(self.keys, self.settings.service_url(ORDER_SIGN_URL))

    def feedback_token(self) -> str:
        return sign_dev_token(self.keys, self.settings.service_url(FEEDBACK_URL))

    def sign(self, base: str, *, instance: str | None = None) -> httpx.Response:
        body = dict(REQUEST, hookInstance=instance or str(uuid.uuid4()))
        headers = {"Authorization": f"Bearer {self.token()}"}
        return httpx.post(base + ORDER_SIGN_URL, json=body, headers=headers, timeout=10)

    def feedback(self, base: str, card: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.feedback_token()}"}
        body = {"feedback": [overridden(card)]}
        return httpx.post(base + FEEDBACK_URL, json=body, headers=headers, timeout=10)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*serve_command(), *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def feedback_rows(self, cards: list[str]) -> set[str]:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
            rows = connection.execute(
                f'SELECT card_uuid FROM "{self.schema}".card_feedback WHERE card_uuid = ANY(%s)',
                (cards,),
            ).fetchall()
        return {row[0] for row in rows}


def _config(tmp_path: Path, balancer_port: int, schema: str) -> Path:
    return dev_client_config(
        tmp_path,
        f"http://127.0.0.1:{balancer_port}",
        *("[storage]", f'url = "{postgres_url(schema)}"'),
        *("[cache]", f'redis_url = "{REDIS_URL}"', f'key_prefix = "replicas-{schema}"'),
        name="replica",
    )


def _haproxy_config(tmp_path: Path, port: int, replicas: dict[str, int]) -> Path:
    servers = "\n".join(
        f"    server {name} 127.0.0.1:{p} check inter 200ms fall 2 rise 1"
        for name, p in replicas.items()
    )
    path = tmp_path / "haproxy.cfg"
    path.write_text(
        f"""global
    maxconn 256
defaults
    mode http
    timeout connect 2s
    timeout client 15s
    timeout server 15s
    retries 3
    option redispatch
frontend cds
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
{servers}
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    schema = f"replicas_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    balancer_port = unused_loopback_port()
    config = _config(tmp_path, balancer_port, schema)
    settings = load_settings(config)
    keys = ensure_dev_client(settings.state_dir)  # both replicas trust this key pair
    replicas: dict[str, Replica] = {}
    stack = contextlib.ExitStack()
    try:
        for name in ("a", "b"):  # one after the other: the first runs the migrations
            port = unused_loopback_port()
            process, log = stack.enter_context(
                serve_process(tmp_path, config, port, name=f"replica-{name}")
            )
            replicas[name] = Replica(name, port, process, log)
        haproxy_cfg = _haproxy_config(
            tmp_path, balancer_port, {n: r.port for n, r in replicas.items()}
        )
        haproxy_log = tmp_path / "haproxy.log"
        assert HAPROXY is not None
        haproxy = start_logged([HAPROXY, "-db", "-f", str(haproxy_cfg)], haproxy_log, tmp_path)
        stack.callback(stop, haproxy)
        balancer = f"http://127.0.0.1:{balancer_port}"
        wait_until_up(balancer, haproxy, haproxy_log)
        yield Cluster(settings, config, keys, balancer, replicas, schema)
    finally:
        stack.close()  # haproxy first, then the replicas (SIGTERM each)
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _card(response: httpx.Response) -> str:
    """The bundling card's uuid (REQUEST orders a calcium score with a same-day CCTA)."""
    assert response.status_code == 200, response.text
    cards: list[dict[str, Any]] = response.json()["cards"]
    return next(str(c["uuid"]) for c in cards if c["source"]["topic"]["code"] == BUNDLING)


def _wait_audited(cluster: Cluster, instance: str) -> dict[str, Any]:
    """The audit writer commits in the background: poll until the call is in the database."""
    deadline = time.monotonic() + STARTUP_LIMIT_SECONDS
    while True:
        done = cluster.cli("audit", instance)
        if done.returncode == 0:
            calls: list[dict[str, Any]] = json.loads(done.stdout)
            return calls[0]
        assert time.monotonic() < deadline, done.stderr
        time.sleep(0.2)


def test_a_token_used_on_one_replica_is_refused_by_the_other(cluster: Cluster) -> None:
    token = cluster.token()
    headers = {"Authorization": f"Bearer {token}"}
    body = dict(REQUEST, hookInstance=str(uuid.uuid4()))
    first = httpx.post(cluster.replicas["a"].url + ORDER_SIGN_URL, json=body, headers=headers)
    again = httpx.post(cluster.replicas["b"].url + ORDER_SIGN_URL, json=body, headers=headers)
    assert (first.status_code, again.status_code) == (200, 401)


def test_the_balancer_spreads_calls_over_both_replicas(cluster: Cluster) -> None:
    statuses = [cluster.sign(cluster.balancer).status_code for _ in range(6)]
    assert statuses == [200] * 6
    served = {
        name: replica.log.read_text(errors="replace").count("hook=order-sign")
        for name, replica in cluster.replicas.items()
    }
    assert all(count >= 1 for count in served.values()), served


def test_feedback_to_the_other_replica_is_linked_and_both_are_reported(cluster: Cluster) -> None:
    instances = {name: str(uuid.uuid4()) for name in cluster.replicas}
    cards = {
        name: _card(cluster.sign(replica.url, instance=instances[name]))
        for name, replica in cluster.replicas.items()
    }
    for name in cluster.replicas:
        _wait_audited(cluster, instances[name])
    # Feedback on A's card goes to B, and on B's card through the balancer.
    assert cluster.feedback(cluster.replicas["b"].url, cards["a"]).status_code == 200
    assert cluster.feedback(cluster.balancer, cards["b"]).status_code == 200
    for name in cluster.replicas:
        call = _wait_audited(cluster, instances[name])
        card = next(c for c in call["cards"] if c["uuid"] == cards[name])
        assert [f["outcome"] for f in card["feedback"]] == ["overridden"], (name, call)
    report = cluster.cli("report", "--format", "json")
    assert report.returncode == 0, report.stderr
    by_topic = {t["topic"]: t for t in json.loads(report.stdout)["byTopic"]}
    bundling = by_topic[BUNDLING]
    assert (bundling["issued"], bundling["overridden"]) == (2, 2)


def test_killing_a_replica_mid_load_loses_no_answered_feedback(cluster: Cluster) -> None:
    """SIGKILL replica B halfway through: every feedback the balancer answered 200 is in the
    database, and the balancer keeps answering with replica A."""
    answered: list[str] = []
    outcomes: list[int] = []
    for i in itertools.count():
        if i == 60:
            break
        if i == 20:
            cluster.replicas["b"].process.kill()
        try:
            issued = cluster.sign(cluster.balancer)
            if issued.status_code != 200:
                outcomes.append(issued.status_code)
                continue
            card = _card(issued)
            acknowledged = cluster.feedback(cluster.balancer, card)
        except httpx.TransportError:
            outcomes.append(-1)
            continue
        outcomes.append(acknowledged.status_code)
        if acknowledged.status_code == 200:
            answered.append(card)
    assert cluster.replicas["b"].process.wait(timeout=10) == -signal.SIGKILL
    assert outcomes[-20:] == [200] * 20, outcomes  # the balancer answers with replica A alone
    assert len(answered) >= 50, outcomes
    assert cluster.feedback_rows(answered) == set(answered)
