"""`serve` with `admin.enabled`: the dashboard on its own listener beside the CDS service, in a real
process (one worker, and `--workers 2` where the listener runs once, in the parent). A hook call
answered on the EHR-facing port shows up on the dashboard; the dashboard is not on that port."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.api.test_invoke_smoke import ORDER_SIGN_URL, REQUEST
from tests.dashboard.conftest import PASSWORD, PASSWORD_HASH, USERNAME
from tests.security.conftest import REDIS_URL
from tests.storage.conftest import unused_loopback_port
from tests.support.serve import serve_command, serve_process

LIMIT_SECONDS = 30


def write_config(tmp_path: Path, port: int, admin_port: int, *, redis: bool = False) -> Path:
    lines = [
        f'public_base_url = "http://127.0.0.1:{port}"',
        'environment = "test"',
        f'state_dir = "{tmp_path / "var"}"',
        "[auth]",
        "enabled = false",
        "[storage]",
        f'url = "sqlite:///{tmp_path / "var" / "audit.db"}"',
        "[admin]",
        "enabled = true",
        f"port = {admin_port}",
        f'username = "{USERNAME}"',
        f"password_hash = '{PASSWORD_HASH}'",
    ]
    if redis:
        lines += ["[cache]", f'redis_url = "{REDIS_URL}"', f'key_prefix = "t-{uuid.uuid4().hex}"']
    config = tmp_path / "serve.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


@contextmanager
def serving(tmp_path: Path, *options: str, redis: bool = False) -> Iterator[tuple[int, int, Path]]:
    port, admin_port = unused_loopback_port(), unused_loopback_port()
    config = write_config(tmp_path, port, admin_port, redis=redis)
    with serve_process(tmp_path, config, port, *options) as (_, log_path):
        yield port, admin_port, log_path


def check_both_listeners(port: int, admin_port: int) -> None:
    cds = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    admin = httpx.Client(base_url=f"http://127.0.0.1:{admin_port}", timeout=10)
    with cds, admin:
        answered = cds.post(ORDER_SIGN_URL, json=REQUEST)
        assert answered.status_code == 200, answered.text
        assert "cac-bundling-conflict" in answered.text
        assert cds.get("/dashboard").status_code == 404  # not on the EHR-facing port
        assert cds.get("/dashboard/data.json").status_code == 404
        assert admin.get("/dashboard").status_code == 401
        assert admin.get("/cds-services").status_code in (401, 404)  # no CDS route here
        deadline = time.monotonic() + LIMIT_SECONDS
        while True:  # the audit record is written in the background
            data = admin.get("/dashboard/data.json", auth=(USERNAME, PASSWORD))
            assert data.status_code == 200, data.text
            topics = {r["topic"]: r["fires"] for r in data.json()["tables"]["topics"]}
            if topics.get("cac-bundling-conflict"):
                break
            assert time.monotonic() < deadline, data.json()
            time.sleep(0.2)
        page = admin.get("/dashboard", auth=(USERNAME, PASSWORD))
        assert page.status_code == 200 and "cac-bundling-conflict" in page.text


def test_serve_starts_the_admin_listener_beside_the_service(tmp_path: Path) -> None:
    with serving(tmp_path) as (port, admin_port, log):
        check_both_listeners(port, admin_port)
    assert f"rule owners' dashboard at http://127.0.0.1:{admin_port}/dashboard" in log.read_text()


def test_with_workers_the_admin_listener_runs_once_in_the_parent(tmp_path: Path) -> None:
    with serving(tmp_path, "--workers", "2", redis=True) as (port, admin_port, log):
        check_both_listeners(port, admin_port)
    assert log.read_text().count("rule owners' dashboard at") == 1


def test_serve_stops_when_the_admin_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = write_config(tmp_path, unused_loopback_port(), taken.getsockname()[1])
        done = subprocess.run(
            [*serve_command(), "serve", "--config", str(config)],
            cwd=tmp_path,
            capture_output=True,
            timeout=60,
        )
    assert done.returncode == 2, done.stderr
    assert b"startup failed: admin listener" in done.stderr
