"""`serve --workers N`: every worker shares the JWT replay cache, or the service does not start.

Real processes: uvicorn's process manager with two workers, the real Redis on loopback, tokens
signed by the dev client's key pair made for the test.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import httpx

from service.config import load_settings
from service.security.dev_client import ensure_dev_client, sign_dev_token
from tests.api.test_invoke_smoke import ORDER_SIGN_URL, REQUEST
from tests.security.conftest import REDIS_URL
from tests.storage.conftest import unused_loopback_port
from tests.support.serve import dev_client_config, serve_command, serve_process

WORKERS = ("--workers", "2")


def _config(tmp_path: Path, port: int, redis: bool) -> Path:
    lines = ["[storage]", f'url = "sqlite:///{tmp_path / "var" / "audit.db"}"']
    if redis:
        lines += ["[cache]", f'redis_url = "{REDIS_URL}"', f'key_prefix = "t-{uuid.uuid4().hex}"']
    return dev_client_config(tmp_path, f"http://127.0.0.1:{port}", *lines, name="workers")


def test_more_than_one_worker_without_redis_refuses_to_start(tmp_path: Path) -> None:
    config = _config(tmp_path, unused_loopback_port(), redis=False)
    done = subprocess.run(
        [*serve_command(), "serve", "--config", str(config), "--workers", "2"],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert b"cache.redis_url" in done.stderr


def test_a_token_is_accepted_once_whichever_worker_gets_it(tmp_path: Path) -> None:
    port = unused_loopback_port()
    config = _config(tmp_path, port, redis=True)
    settings = load_settings(config)
    keys = ensure_dev_client(settings.state_dir)
    with serve_process(tmp_path, config, port, *WORKERS) as (_, log_path):
        base = f"http://127.0.0.1:{port}"
        token = sign_dev_token(keys, settings.service_url(ORDER_SIGN_URL))
        statuses = []
        for _ in range(8):  # a new connection each time: the workers share the listener
            with httpx.Client(base_url=base, timeout=10) as client:
                response = client.post(
                    ORDER_SIGN_URL, json=REQUEST, headers={"Authorization": f"Bearer {token}"}
                )
            statuses.append(response.status_code)
        assert sorted(statuses) == [200] + [401] * 7, statuses
        started = log_path.read_text(errors="replace").count("Started server process")
        assert started == 2, "two workers behind one listener"
