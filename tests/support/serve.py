"""A real `cardiac-ct-cds serve` process for tests: its command, the development config most of
them use, starting it with its output in a log file, waiting for /health, and SIGTERM at the end.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

STARTUP_LIMIT_SECONDS = 60  # a bound for a slow machine, not a timing assertion


def serve_command() -> list[str]:
    script = Path(sys.executable).with_name("cardiac-ct-cds")
    return [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]


def start_logged(argv: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """A process with stdout and stderr in `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until `url`/health answers 200; fails with the log if the process exits or never does."""
    deadline = time.monotonic() + STARTUP_LIMIT_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited: {log.read_text(errors='replace')}"
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not come up: {log.read_text(errors='replace')}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@contextmanager
def serve_process(
    tmp_path: Path, config: Path, port: int, *options: str, name: str = "serve"
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`serve --config CONFIG --port PORT OPTIONS`, up on /health; its log is tmp_path/NAME.log."""
    log = tmp_path / f"{name}.log"
    argv = [*serve_command(), "serve", "--config", str(config), "--port", str(port), *options]
    process = start_logged(argv, log, tmp_path)
    try:
        wait_until_up(f"http://127.0.0.1:{port}", process, log)
        yield process, log
    finally:
        stop(process)


def dev_client_config(
    tmp_path: Path,
    base_url: str,
    *sections: str,
    top: Sequence[str] = (),
    name: str = "serve",
) -> Path:
    """A development profile trusting the dev client's key pair (state under tmp_path/var),
    plus top-level `top` lines and then `sections` lines (TOML tables)."""
    path = tmp_path / f"{name}.toml"
    lines = [
        f'public_base_url = "{base_url}"',
        'environment = "development"',
        f'state_dir = "{tmp_path / "var"}"',
        *top,
        "[auth]",
        "dev_client = true",
        *sections,
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
