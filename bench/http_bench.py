"""HTTP benchmark on loopback: the service next to a bare FastAPI floor, side by side, one run.

Starts, on 127.0.0.1 and as separate processes:
  service  `cardiac-ct-cds serve` with a temporary config: auth on, one trusted client whose ES384
           key pair is generated for this run (`jwks_file`), allowed to name the FHIR server below
  floor    bench/floor_app.py: FastAPI + uvicorn, parses the same JSON body and returns the bytes
           the service returned for that request; its /verify route adds one ES384 JWT verify
  fhir     bench/fhir_server_app.py: a SEKMET FHIR R4 server holding the chart (fetch path)

and measures, for each request: throughput at a fixed concurrency (closed loop: wrk with
bench/wrk_hook.lua, or an asyncio+httpx driver when wrk is missing) and p50/p99 latency at a fixed
arrival rate (open loop: sends scheduled at fixed intervals, latency counted from the scheduled
time). Every request carries a fresh single-use JWT signed before the timed phase (aud = the URL
called). Then a scaling table: the in-scope request with chart and draft orders replicated.

Usage: .venv/bin/python -m bench.http_bench [--quick] [--driver auto|wrk|python]
Timings are wall-clock on this machine; nothing here is asserted anywhere. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import ctypes
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
BENCH_DIR = ROOT / "bench"
LUA_SCRIPT = BENCH_DIR / "wrk_hook.lua"
RESULTS_DIR = BENCH_DIR / "results"

SIGN_PATH = "/cds-services/cardiac-ct-order-sign"
SELECT_PATH = "/cds-services/cardiac-ct-order-select"
EXAMPLE = ROOT / "examples" / "order-sign-bundling.json"
ORDER_SELECT = ROOT / "fhir_fixtures" / "scenarios" / "protocol-order-select-selected-cac.json"
DISCOVERY = ROOT / "service" / "cdshooks" / "discovery.yaml"

REDIS_URL = "redis://127.0.0.1:6379/0"
ISSUER = "urn:cardiac-ct-cds:bench-ehr"
# hookInstance in the body files; the drivers replace its last 12 hex digits per request.
PLACEHOLDER = "00000000-0000-4000-8000-000000000000"
OUT_OF_SCOPE = {
    "system": "http://www.ama-assn.org/go/cpt",
    "code": "71046",
    "display": "Radiologic examination, chest; 2 views",
}
SCALES = (1, 10, 50)
MAX_BODY = 1_048_576


class BenchError(Exception):
    """Something the benchmark needs did not work; the message says what."""


# --- keys and tokens ------------------------------------------------------------------------


@dataclass(frozen=True)
class Client:
    """The EHR of this run: an ES384 key pair generated now, its public JWK Set on disk."""

    pem: bytes
    kid: str
    jwks_file: Path

    @classmethod
    def create(cls, directory: Path) -> Client:
        key = ec.generate_private_key(ec.SECP384R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        public: dict[str, str] = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        kid = "bench-" + secrets.token_hex(8)
        public.update({"kid": kid, "alg": "ES384", "use": "sig"})
        jwks_file = directory / "jwks.json"
        jwks_file.write_text(json.dumps({"keys": [public]}), encoding="utf-8")
        return cls(pem, kid, jwks_file)


def _sign_batch(pem: bytes, kid: str, audience: str, count: int, lifetime: int) -> list[str]:
    key = serialization.load_pem_private_key(pem, password=None)
    now = int(time.time())
    tokens = []
    for _ in range(count):
        claims = {
            "iss": ISSUER,
            "aud": audience,
            "iat": now,
            "exp": now + lifetime,
            "jti": str(uuid.uuid4()),
        }
        tokens.append(
            jwt.encode(claims, key, algorithm="ES384", headers={"kid": kid, "typ": "JWT"})  # type: ignore[arg-type]
        )
    return tokens


class Signer:
    """Signs batches of single-use tokens before a timed phase, on every core."""

    def __init__(self, client: Client, lifetime: int = 540) -> None:
        self.client = client
        # Seconds a token lives (and stays in the service's replay cache): under the service's
        # 600 s maximum; long enough to outlast a timed phase signed in advance.
        self.lifetime = lifetime
        self.workers = max(1, os.cpu_count() or 1)
        self.pool = ProcessPoolExecutor(max_workers=self.workers)
        self.signed = 0
        self.seconds = 0.0

    def tokens(self, audience: str, count: int) -> list[str]:
        started = time.perf_counter()
        if count < 400:
            result = _sign_batch(self.client.pem, self.client.kid, audience, count, self.lifetime)
        else:
            share = math.ceil(count / self.workers)
            futures = [
                self.pool.submit(
                    _sign_batch, self.client.pem, self.client.kid, audience, share, self.lifetime
                )
                for _ in range(self.workers)
            ]
            result = [token for future in futures for token in future.result()][:count]
        self.signed += count
        self.seconds += time.perf_counter() - started
        return result

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


# --- processes ------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Child side of Popen: get SIGTERM if the benchmark dies without cleaning up (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Process:
    """A subprocess this benchmark started; stopped by `stop` (and by the ExitStack)."""

    def __init__(self, name: str, argv: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = cwd / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us; we stop the children in order
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def wait_ready(self, url: str, timeout: float, headers: dict[str, str] | None = None) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise BenchError(
                    f"{self.name} exited with code {self.popen.returncode} before it was ready."
                    f"\n--- last lines of {self.log_path} ---\n{self.log_tail()}"
                )
            try:
                response = httpx.get(url, headers=headers, timeout=2.0)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.2)
        raise BenchError(
            f"{self.name} not ready at {url} after {timeout:.0f} s ({last})."
            f"\n--- last lines of {self.log_path} ---\n{self.log_tail()}"
        )

    def rss_mb(self) -> float | None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text(encoding="utf-8")
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return None

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=8)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        self._log.close()


# --- requests -------------------------------------------------------------------------------


@dataclass
class Case:
    key: str
    label: str
    path: str  # service path
    body: dict[str, Any]
    canned: bytes = b""
    topics: list[str] = field(default_factory=list)

    def body_bytes(self) -> bytes:
        body = json.dumps(dict(self.body, hookInstance=PLACEHOLDER), separators=(",", ":"))
        return body.encode()


def _request_of(path: Path) -> dict[str, Any]:
    raw = json.loads(path.read_text(encoding="utf-8"))
    request: dict[str, Any] = raw.get("request", raw)
    return request


def _draft_entries(request: dict[str, Any]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = request["context"]["draftOrders"].get("entry") or []
    return entries


def out_of_scope(request: dict[str, Any]) -> dict[str, Any]:
    """The same chart with every draft order recoded to a chest x-ray."""
    recoded = copy.deepcopy(request)
    for entry in _draft_entries(recoded):
        resource = entry["resource"]
        resource["code"] = {"coding": [dict(OUT_OF_SCOPE)], "text": OUT_OF_SCOPE["display"]}
    return recoded


def chart_resources(request: dict[str, Any]) -> list[dict[str, Any]]:
    """Every resource in the prefetch, once (by type and id)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for value in (request.get("prefetch") or {}).values():
        if not isinstance(value, dict):
            continue
        if value.get("resourceType") == "Bundle":
            items = [e.get("resource") for e in value.get("entry") or []]
        else:
            items = [value]
        for item in items:
            if isinstance(item, dict) and item.get("id"):
                found.setdefault((item["resourceType"], item["id"]), item)
    return list(found.values())


def replicated(request: dict[str, Any], factor: int) -> dict[str, Any]:
    """Draft orders and every prefetched Bundle entry repeated `factor` times, ids kept unique."""
    scaled = copy.deepcopy(request)
    if factor == 1:
        return scaled

    def repeat(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for copy_no in range(factor):
            for entry in entries:
                clone = copy.deepcopy(entry)
                resource = clone.get("resource")
                if copy_no and isinstance(resource, dict) and resource.get("id"):
                    resource["id"] = f"{resource['id']}-x{copy_no}"
                    if "fullUrl" in clone:
                        clone["fullUrl"] = f"{clone['fullUrl']}-x{copy_no}"
                out.append(clone)
        return out

    drafts = scaled["context"]["draftOrders"]
    drafts["entry"] = repeat(drafts.get("entry") or [])
    for value in (scaled.get("prefetch") or {}).values():
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            value["entry"] = repeat(value.get("entry") or [])
    return scaled


def topics_of(response: bytes) -> list[str]:
    body = json.loads(response)
    return sorted(
        str((card.get("source") or {}).get("topic", {}).get("code", "?"))
        for card in body.get("cards") or []
    )


def filled_queries(request: dict[str, Any]) -> list[str]:
    from service.fhir.gather import fill_template

    discovery = yaml.safe_load(DISCOVERY.read_text(encoding="utf-8"))
    templates: dict[str, str] = discovery["prefetch"]
    queries = []
    for key, template in templates.items():
        query = fill_template(template, request["context"], request["context"].get("userId"))
        if query is None:
            raise BenchError(f"prefetch template {key} cannot be filled from the request context")
        queries.append(query)
    return queries


def bodies_with_instances(body: bytes, count: int) -> list[bytes]:
    head = PLACEHOLDER[:24].encode()
    placeholder = PLACEHOLDER.encode()
    return [body.replace(placeholder, head + f"{i:012x}".encode()) for i in range(1, count + 1)]


# --- measurement ----------------------------------------------------------------------------


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Throughput:
    rps: float  # 2xx responses per second
    requests: int
    errors: int  # non-2xx and socket errors
    seconds: float
    tool: str
    exhausted: int = 0
    marked: int = 0
    note: str = ""


@dataclass
class Latency:
    p50_ms: float
    p99_ms: float
    max_ms: float
    count: int
    errors: int
    max_lag_ms: float  # how late the driver was sending, worst case
    rate: float = 0.0


@dataclass
class Settings:
    duration: float
    latency_seconds: float
    rate: float
    fetch_rate: float  # the fetch path: one call is ~9 FHIR searches on the same 2 cores
    connections: int
    wrk_threads: int
    scaling_calls: int
    driver: str  # "wrk" or "python"
    wrk_version: str = ""
    workers: int = 1  # `serve --workers N`; more than one shares the replay cache in Redis


def run_wrk(
    cfg: Settings,
    url: str,
    body: bytes,
    tokens: list[str],
    *,
    cycle: bool,
    workdir: Path,
    marker: str = "",
) -> Throughput:
    body_file = workdir / "wrk-body.json"
    tokens_file = workdir / "wrk-tokens.txt"
    body_file.write_bytes(body)
    tokens_file.write_text("\n".join(tokens) + "\n", encoding="ascii")
    argv = [
        "wrk",
        "-t",
        str(cfg.wrk_threads),
        "-c",
        str(cfg.connections),
        "-d",
        f"{cfg.duration:g}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        str(body_file),
        str(tokens_file),
        str(cfg.wrk_threads),
        PLACEHOLDER,
        "cycle" if cycle else "once",
        marker,
    ]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=cfg.duration + 60, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish: {' '.join(argv)}") from exc
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(
            f"wrk failed (exit {done.returncode}) on {url}:\n{done.stdout[-2000:]}"
            f"{done.stderr[-2000:]}"
        )
    summary = json.loads(line.removeprefix("BENCH_JSON "))
    seconds = summary["duration_us"] / 1e6
    errors = sum(
        summary[k]
        for k in ("status_errors", "connect_errors", "read_errors", "write_errors", "timeouts")
    )
    ok = summary["requests"] - summary["status_errors"]
    return Throughput(
        rps=ok / seconds,
        requests=summary["requests"],
        errors=errors,
        seconds=seconds,
        tool="wrk",
        exhausted=summary["exhausted"],
        marked=summary["marked"],
    )


async def _python_closed_loop(
    cfg: Settings, url: str, body: bytes, tokens: list[str], *, cycle: bool, marker: str
) -> Throughput:
    """Fallback driver: `connections` workers, each sending as soon as its last answer came."""
    bodies = bodies_with_instances(body, min(len(tokens), 200_000))
    state = {"next": 0, "ok": 0, "errors": 0, "exhausted": 0, "marked": 0}
    limits = httpx.Limits(
        max_connections=cfg.connections, max_keepalive_connections=cfg.connections
    )
    async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:
        started = time.perf_counter()
        stop_at = started + cfg.duration

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                i = state["next"]
                state["next"] += 1
                if i >= len(tokens):
                    if not cycle:
                        state["exhausted"] += 1
                        return
                    i %= len(tokens)
                headers = {
                    "Authorization": f"Bearer {tokens[i]}",
                    "Content-Type": "application/json",
                }
                try:
                    response = await client.post(url, content=bodies[i], headers=headers)
                except httpx.HTTPError:
                    state["errors"] += 1
                    continue
                if response.status_code == 200:
                    state["ok"] += 1
                    if marker and marker.encode() in response.content:
                        state["marked"] += 1
                else:
                    state["errors"] += 1

        await asyncio.gather(*(worker() for _ in range(cfg.connections)))
        seconds = time.perf_counter() - started
    return Throughput(
        rps=state["ok"] / seconds,
        requests=state["ok"] + state["errors"],
        errors=state["errors"],
        seconds=seconds,
        tool="python",
        exhausted=state["exhausted"],
        marked=state["marked"],
    )


def closed_loop(
    cfg: Settings,
    url: str,
    body: bytes,
    token_source: Callable[[int], list[str]] | None,
    *,
    expected_rps: float,
    workdir: Path,
    marker: str = "",
) -> Throughput:
    """Throughput at `connections` concurrent connections; one fresh token per request unless
    `token_source` is None (the floor: it verifies nothing, a few tokens are cycled)."""
    estimate = expected_rps
    for attempt in range(3):
        if token_source is None:
            tokens, cycle = _FLOOR_TOKENS, True
        else:
            tokens, cycle = token_source(int(estimate * cfg.duration * 1.3) + 200), False
        if cfg.driver == "wrk":
            result = run_wrk(cfg, url, body, tokens, cycle=cycle, workdir=workdir, marker=marker)
        else:
            result = asyncio.run(
                _python_closed_loop(cfg, url, body, tokens, cycle=cycle, marker=marker)
            )
        if not result.exhausted:
            return result
        # Ran out of single-use tokens: the row is void. Again with more, from the rate seen.
        estimate = max(estimate * 2, result.requests / result.seconds * 1.5)
        print(
            f"    (ran out of tokens, attempt {attempt + 1}; re-signing for {estimate:.0f} req/s)"
        )
    result.note = "tokens ran out: row void"
    return result


_FLOOR_TOKENS: list[str] = []


async def _open_loop(
    rate: float, url: str, body: bytes, tokens: list[str], check: Callable[[bytes], bool]
) -> Latency:
    count = len(tokens)
    bodies = bodies_with_instances(body, count)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:
        # open a few connections first, so the first scheduled sends do not pay for them
        await asyncio.gather(*(client.get(_health_url(url)) for _ in range(4)))

        async def send(i: int) -> bool:
            headers = {"Authorization": f"Bearer {tokens[i]}", "Content-Type": "application/json"}
            response = await client.post(url, content=bodies[i], headers=headers)
            return response.status_code == 200 and check(response.content)

        return await _scheduled(rate, count, send)


def _health_url(url: str) -> str:
    parsed = httpx.URL(url)
    return str(parsed.copy_with(path="/health", query=None))


def open_loop(rate: float, url: str, body: bytes, tokens: list[str], marker: str = "") -> Latency:
    def check(content: bytes) -> bool:
        return not marker or marker.encode() not in content

    return asyncio.run(_open_loop(rate, url, body, tokens, check))


# --- the bare FHIR client (fetch path) ------------------------------------------------------


async def _bare_call(client: httpx.AsyncClient, queries: list[str], max_pages: int) -> int:
    """The filled prefetch queries at once, each following `next` links; resources read."""

    async def one(query: str) -> int:
        url: str | None = query
        found = 0
        for _ in range(max_pages):
            if url is None:
                break
            response = await client.get(url)
            response.raise_for_status()
            bundle = response.json()
            found += len(bundle.get("entry") or []) if bundle.get("resourceType") == "Bundle" else 1
            url = next(
                (
                    link["url"]
                    for link in bundle.get("link") or []
                    if isinstance(link, dict) and link.get("relation") == "next"
                ),
                None,
            )
        return found

    counts = await asyncio.gather(*(one(q) for q in queries))
    return sum(counts)


def _bare_client(base_url: str, token: str, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/") + "/",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"},
        limits=limits,
        timeout=10.0,
    )


async def bare_closed_loop(
    cfg: Settings, base_url: str, token: str, queries: list[str]
) -> Throughput:
    state = {"ok": 0, "errors": 0}
    async with _bare_client(base_url, token, cfg.connections * len(queries)) as client:
        await _bare_call(client, queries, 5)
        started = time.perf_counter()
        stop_at = started + cfg.duration

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                try:
                    await _bare_call(client, queries, 5)
                    state["ok"] += 1
                except httpx.HTTPError:
                    state["errors"] += 1

        await asyncio.gather(*(worker() for _ in range(cfg.connections)))
        seconds = time.perf_counter() - started
    return Throughput(
        state["ok"] / seconds, state["ok"] + state["errors"], state["errors"], seconds, "python"
    )


async def bare_open_loop(cfg: Settings, base_url: str, token: str, queries: list[str]) -> Latency:
    async with _bare_client(base_url, token, 64) as client:
        await _bare_call(client, queries, 5)

        async def send(_: int) -> bool:
            await _bare_call(client, queries, 5)
            return True

        return await _scheduled(cfg.fetch_rate, int(cfg.fetch_rate * cfg.latency_seconds), send)


async def _scheduled(rate: float, count: int, send: Callable[[int], Awaitable[bool]]) -> Latency:
    """Open loop: call i is sent at start + i/rate whatever the earlier ones do; its latency
    counts from that scheduled time (no coordinated omission). `send` says whether it was OK."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    latencies: list[float] = []
    lags: list[float] = []
    errors = 0

    async def fire(i: int) -> None:
        nonlocal errors
        at = start + i / rate
        await asyncio.sleep(max(0.0, at - loop.time()))
        lags.append(loop.time() - at)
        try:
            ok = await send(i)
        except httpx.HTTPError:
            errors += 1
            return
        latencies.append(loop.time() - at)
        if not ok:
            errors += 1

    await asyncio.gather(*(fire(i) for i in range(count)))
    ms = [x * 1000 for x in latencies]
    return Latency(
        p50_ms=percentile(ms, 50),
        p99_ms=percentile(ms, 99),
        max_ms=max(ms, default=float("nan")),
        count=len(ms),
        errors=errors,
        max_lag_ms=max(lags, default=0.0) * 1000,
        rate=rate,
    )


# --- orchestration --------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDIAC_CDS_")}
    env["PYTHONPATH"] = str(ROOT)
    env.pop("PYTHONSTARTUP", None)
    return env


def _write_config(
    path: Path, service_url: str, fhir_base: str, client: Client, workers: int = 1
) -> None:
    state = path.parent / "state"
    shared = (
        f'\n[cache]\nredis_url = "{REDIS_URL}"\nkey_prefix = "bench-{path.parent.name}"\n'
        if workers > 1
        else ""
    )
    path.write_text(
        f"""# generated by bench/http_bench.py for one run
public_base_url = "{service_url}"
environment = "development"
state_dir = "{state}"

[auth]
enabled = true

[[auth.clients]]
issuer = "{ISSUER}"
jwks_file = "{client.jwks_file}"
algorithms = ["ES384"]

[[auth.clients.fhir_servers]]
base_url = "{fhir_base}"
allow_without_token = true

[storage]
url = "sqlite:///{path.parent / "bench.db"}"
"""
        + shared,
        encoding="utf-8",
    )


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text(encoding="utf-8").split()[:3])
    except OSError:
        return "?"


def _machine(cfg: Settings) -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    git = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load average at start": _loadavg(),
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load tool": (
            f"{cfg.wrk_version} (Debian package), -t{cfg.wrk_threads} -c{cfg.connections}, "
            "bench/wrk_hook.lua"
            if cfg.driver == "wrk"
            else f"asyncio+httpx closed-loop driver, {cfg.connections} connections (wrk not used)"
        ),
        "latency driver": (
            f"asyncio+httpx open loop, {cfg.rate:g} req/s ({cfg.fetch_rate:g} req/s fetch path)"
        ),
        "service tree": git or "?",
        "service workers": str(cfg.workers),
    }


@dataclass
class Row:
    case: Case
    floor: Throughput | None = None
    verify: Throughput | None = None
    service: Throughput | None = None
    latency: Latency | None = None
    verify_latency: Latency | None = None
    rss_mb: float | None = None


def _fmt_rps(t: Throughput | None) -> str:
    if t is None:
        return "—"
    text = f"{t.rps:,.0f}"
    if t.errors:
        text += f" ({t.errors} errors)"
    if t.marked:
        text += f" ({t.marked} degraded)"
    if t.note:
        text += f" ({t.note})"
    return text


def _fmt_lat(lat: Latency | None, usual_rate: float = 0.0) -> str:
    if lat is None:
        return "—"
    text = f"{lat.p50_ms:.1f} / {lat.p99_ms:.1f} ms"
    if usual_rate and lat.rate != usual_rate:
        text += f" at {lat.rate:g} req/s"
    if lat.errors:
        text += f" ({lat.errors} errors)"
    return text


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "—"
    return f"{a / b:.2f}"


class Bench:
    def __init__(self, cfg: Settings, stack: contextlib.ExitStack, tmp: Path) -> None:
        self.cfg = cfg
        self.stack = stack
        self.tmp = tmp
        self.client = Client.create(tmp)
        self.signer = Signer(self.client)
        stack.callback(self.signer.close)
        self.service_port, self.floor_port, self.fhir_port = free_port(), free_port(), free_port()
        self.service_url = f"http://127.0.0.1:{self.service_port}"
        self.floor_url = f"http://127.0.0.1:{self.floor_port}"
        self.fhir_base = f"http://127.0.0.1:{self.fhir_port}/fhir"
        self.fhir_token = secrets.token_urlsafe(24)
        self.expected = {"verify": 1000.0, "service": 400.0}

    # processes
    def _start(self, name: str, argv: list[str]) -> Process:
        process = Process(name, argv, cwd=self.tmp, env=_env())
        self.stack.callback(process.stop)
        return process

    def start_fhir(self) -> Process:
        fhir = self._start(
            "fhir",
            [
                sys.executable,
                "-m",
                "bench.fhir_server_app",
                "--port",
                str(self.fhir_port),
                "--token",
                self.fhir_token,
            ],
        )
        fhir.wait_ready(
            f"{self.fhir_base}/metadata", 60, {"Authorization": f"Bearer {self.fhir_token}"}
        )
        return fhir

    def start_service(self) -> Process:
        config = self.tmp / "service.toml"
        _write_config(config, self.service_url, self.fhir_base, self.client, self.cfg.workers)
        cli = VENV_BIN / "cardiac-ct-cds"
        if not cli.exists():
            raise BenchError(f"{cli} not found: install the service into the venv first")
        service = self._start(
            "service",
            [
                *(str(cli), "serve", "--config", str(config)),
                *("--port", str(self.service_port), "--workers", str(self.cfg.workers)),
            ],
        )
        service.wait_ready(f"{self.service_url}/health", 90)
        return service

    def start_floor(self, canned_dir: Path) -> Process:
        floor = self._start(
            "floor",
            [
                sys.executable,
                "-m",
                "bench.floor_app",
                "--port",
                str(self.floor_port),
                "--canned-dir",
                str(canned_dir),
                "--jwks",
                str(self.client.jwks_file),
                "--issuer",
                ISSUER,
                "--base-url",
                self.floor_url,
            ],
        )
        floor.wait_ready(f"{self.floor_url}/health", 60)
        return floor

    def load_chart(self, request: dict[str, Any]) -> int:
        resources = chart_resources(request)
        headers = {"Authorization": f"Bearer {self.fhir_token}"}
        with httpx.Client(base_url=self.fhir_base + "/", headers=headers, timeout=10) as client:
            for resource in resources:
                response = client.put(f"{resource['resourceType']}/{resource['id']}", json=resource)
                if response.status_code not in (200, 201):
                    raise BenchError(
                        f"FHIR server refused {resource['resourceType']}/{resource['id']}: "
                        f"HTTP {response.status_code} {response.text[:300]}"
                    )
        return len(resources)

    def fetch_request(self, request: dict[str, Any]) -> dict[str, Any]:
        """`request` without its prefetch, naming the FHIR server of this run (fetch path)."""
        fetch = copy.deepcopy(request)
        del fetch["prefetch"]
        fetch["fhirServer"] = self.fhir_base
        fetch["fhirAuthorization"] = {
            "access_token": self.fhir_token,
            "token_type": "Bearer",
            "expires_in": 3600,
            "scope": "user/*.read",
            "subject": "cardiac-ct-cds",
        }
        return fetch

    # one call, outside timing
    def call_once(self, url: str, body: bytes) -> bytes:
        token = self.signer.tokens(url, 1)[0]
        instance = str(uuid.uuid4())
        response = httpx.post(
            url,
            content=body.replace(PLACEHOLDER.encode(), instance.encode()),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=30,
        )
        if response.status_code != 200:
            raise BenchError(f"{url} answered HTTP {response.status_code}: {response.text[:500]}")
        return response.content

    def warm(self, url: str, body: bytes, calls: int) -> None:
        tokens = self.signer.tokens(url, calls)
        with httpx.Client(timeout=30) as client:
            for i, content in enumerate(bodies_with_instances(body, calls)):
                client.post(
                    url,
                    content=content,
                    headers={
                        "Authorization": f"Bearer {tokens[i]}",
                        "Content-Type": "application/json",
                    },
                )

    def token_source(self, url: str) -> Callable[[int], list[str]]:
        return lambda count: self.signer.tokens(url, count)

    def throughput(self, url: str, body: bytes, kind: str | None, marker: str = "") -> Throughput:
        source = self.token_source(url) if kind else None
        expected = self.expected.get(kind or "", 0.0)
        result = closed_loop(
            self.cfg, url, body, source, expected_rps=expected, workdir=self.tmp, marker=marker
        )
        if kind and not result.exhausted:
            self.expected[kind] = max(self.expected[kind], result.rps * 1.2)
        return result

    def latency(self, url: str, body: bytes, rate: float, marker: str = "") -> Latency:
        tokens = self.signer.tokens(url, int(rate * self.cfg.latency_seconds))
        return open_loop(rate, url, body, tokens, marker)


def run(cfg: Settings, stack: contextlib.ExitStack, tmp: Path) -> dict[str, Any]:
    global _FLOOR_TOKENS
    bench = Bench(cfg, stack, tmp)
    machine = _machine(cfg)
    print("machine: " + "; ".join(f"{k} {v}" for k, v in machine.items()), flush=True)

    example = _request_of(EXAMPLE)
    fetch_request = bench.fetch_request(example)
    cases = [
        Case("a", "(a) `order-sign-bundling.json`, in scope, full prefetch", SIGN_PATH, example),
        Case(
            "b",
            "(b) same chart, every draft order recoded to CPT 71046 (out of scope)",
            SIGN_PATH,
            out_of_scope(example),
        ),
        Case(
            "c",
            "(c) order-select, `protocol-order-select-selected-cac.json`",
            SELECT_PATH,
            _request_of(ORDER_SELECT),
        ),
        Case(
            "d",
            "(d) fetch path: (a) without prefetch, `fhirServer` = SEKMET on loopback",
            SIGN_PATH,
            fetch_request,
        ),
    ]

    print("starting the FHIR server, the service and the floor ...", flush=True)
    fhir = bench.start_fhir()
    loaded = bench.load_chart(example)
    service = bench.start_service()
    rss_idle = service.rss_mb()

    canned_dir = tmp / "canned"
    canned_dir.mkdir()
    for case in cases:
        body = case.body_bytes()
        if len(body) > MAX_BODY:
            raise BenchError(f"request {case.key} is {len(body)} bytes, over the 1 MiB limit")
        case.canned = bench.call_once(bench.service_url + case.path, body)
        case.topics = topics_of(case.canned)
        (canned_dir / f"{case.key}.json").write_bytes(case.canned)
        print(f"  {case.key}: service answers cards {case.topics}", flush=True)
    bench.start_floor(canned_dir)
    _FLOOR_TOKENS = bench.signer.tokens(f"{bench.floor_url}/floor", 50)

    # The fetch path must really fetch: a data-incomplete card would mean it did not.
    fetch_marker = "data-incomplete" if "data-incomplete" not in cases[3].topics else ""
    if not fetch_marker:
        print("  warning: the fetch-path answer already reports data-incomplete", flush=True)
    if topics_of(cases[3].canned) != cases[0].topics:
        print("  note: fetch-path cards differ from the prefetch cards", flush=True)

    rows: list[Row] = []
    warmup = 10 if cfg.duration < 5 else 50
    for case in cases:
        row = Row(case)
        rows.append(row)
        body = case.body_bytes()
        marker = fetch_marker if case.key == "d" else ""
        svc_url = bench.service_url + case.path
        floor_url = f"{bench.floor_url}/floor/{case.key}"
        verify_url = f"{bench.floor_url}/verify/{case.key}"
        print(f"{case.label}", flush=True)
        bench.warm(svc_url, body, warmup)
        bench.warm(verify_url, body, warmup)
        row.floor = bench.throughput(floor_url, body, None)
        print(f"    floor            {_fmt_rps(row.floor)} req/s", flush=True)
        row.verify = bench.throughput(verify_url, body, "verify")
        print(f"    floor+verify     {_fmt_rps(row.verify)} req/s", flush=True)
        row.service = bench.throughput(svc_url, body, "service", marker)
        print(f"    service          {_fmt_rps(row.service)} req/s", flush=True)
        rate = cfg.fetch_rate if case.key == "d" else cfg.rate
        row.latency = bench.latency(svc_url, body, rate, marker)
        row.rss_mb = service.rss_mb()
        print(f"    service @ {rate:g}/s   {_fmt_lat(row.latency)}", flush=True)
        row.verify_latency = bench.latency(verify_url, body, rate)
        print(f"    verify  @ {rate:g}/s   {_fmt_lat(row.verify_latency)}", flush=True)

    print("bare client, same queries ...", flush=True)
    queries = filled_queries(fetch_request)
    bare_tp = asyncio.run(bare_closed_loop(cfg, bench.fhir_base, bench.fhir_token, queries))
    bare_lat = asyncio.run(bare_open_loop(cfg, bench.fhir_base, bench.fhir_token, queries))
    print(f"    bare client      {_fmt_rps(bare_tp)} calls/s, {_fmt_lat(bare_lat)}", flush=True)

    print("scaling ...", flush=True)
    scaling = scale_rows(bench, example, cfg)

    rss_end = service.rss_mb()
    machine["load average at end"] = _loadavg()
    fhir.stop()
    return {
        "machine": machine,
        "settings": {
            "throughput_seconds": cfg.duration,
            "connections": cfg.connections,
            "rate": cfg.rate,
            "fetch_rate": cfg.fetch_rate,
            "latency_seconds": cfg.latency_seconds,
            "driver": cfg.driver,
        },
        "chart_resources_on_fhir_server": loaded,
        "fetch_queries": queries,
        "rows": rows,
        "bare": (bare_tp, bare_lat),
        "scaling": scaling,
        "rss_idle_mb": rss_idle,
        "rss_end_mb": rss_end,
        "tokens": (bench.signer.signed, bench.signer.seconds),
    }


def scale_rows(bench: Bench, example: dict[str, Any], cfg: Settings) -> list[dict[str, Any]]:
    url = bench.service_url + SIGN_PATH
    out = []
    for factor in SCALES:
        request = replicated(example, factor)
        body = json.dumps(dict(request, hookInstance=PLACEHOLDER), separators=(",", ":")).encode()
        if len(body) > MAX_BODY:
            raise BenchError(f"scaled request x{factor} is {len(body)} bytes, over 1 MiB")
        orders = len(_draft_entries(request))
        resources = len(chart_resources(request))
        calls = cfg.scaling_calls
        tokens = bench.signer.tokens(url, calls + 5)
        bodies = bodies_with_instances(body, calls + 5)
        samples: list[float] = []
        response_bytes = 0
        deadline = time.monotonic() + 60
        with httpx.Client(timeout=30) as client:
            for i in range(calls + 5):
                headers = {
                    "Authorization": f"Bearer {tokens[i]}",
                    "Content-Type": "application/json",
                }
                started = time.perf_counter()
                response = client.post(url, content=bodies[i], headers=headers)
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code != 200:
                    raise BenchError(
                        f"scaled request x{factor}: HTTP {response.status_code} "
                        f"{response.text[:300]}"
                    )
                response_bytes = len(response.content)
                if i >= 5:  # the first few are warm-up
                    samples.append(elapsed)
                if time.monotonic() > deadline:
                    break
        out.append(
            {
                "factor": factor,
                "draft_orders": orders,
                "prefetch_resources": resources,
                "body_kib": len(body) / 1024,
                "response_kib": response_bytes / 1024,
                "calls": len(samples),
                "p50_ms": percentile(samples, 50),
                "mean_ms": sum(samples) / len(samples),
            }
        )
        print(
            f"    x{factor}: p50 {out[-1]['p50_ms']:.1f} ms over {len(samples)} calls", flush=True
        )
    return out


def render(result: dict[str, Any]) -> str:
    cfg = result["settings"]
    rows: list[Row] = result["rows"]
    bare_tp, bare_lat = result["bare"]
    rate = f"{cfg['rate']:g} req/s"
    lines = [
        f"Throughput: closed loop, {cfg['connections']} connections, "
        f"{cfg['throughput_seconds']:g} s per cell ({cfg['driver']}); "
        f"latency: open loop at {rate} for "
        f"{cfg['latency_seconds']:g} s (fetch path: {cfg['fetch_rate']:g} req/s, as one call there "
        "is a burst of FHIR searches), counted from each scheduled send. "
        "RSS: service process VmRSS after the row.",
        "",
        f"| request | floor | floor+verify | service | service ÷ (floor+verify) "
        f"| service p50 / p99 at {rate} | floor+verify p50 / p99 at {rate} | RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        rss = f"{row.rss_mb:.0f} MB" if row.rss_mb else "—"
        ratio = _ratio(
            row.service.rps if row.service else None, row.verify.rps if row.verify else None
        )
        lines.append(
            f"| {row.case.label} | {_fmt_rps(row.floor)} | {_fmt_rps(row.verify)} "
            f"| {_fmt_rps(row.service)} "
            f"| {ratio} "
            f"| {_fmt_lat(row.latency, cfg['rate'])} "
            f"| {_fmt_lat(row.verify_latency, cfg['rate'])} | {rss} |"
        )
    fetch = rows[-1]
    queries = len(result["fetch_queries"])
    lines.append(
        f"| bare client, same queries ({queries} GETs at once per call) | | "
        f"| {_fmt_rps(bare_tp)} calls/s "
        f"| service ÷ bare: {_ratio(fetch.service.rps if fetch.service else None, bare_tp.rps)} "
        f"| {_fmt_lat(bare_lat, cfg['rate'])} | | |"
    )
    if fetch.latency and bare_lat.p50_ms:
        lines += [
            "",
            f"Fetch path at {cfg['fetch_rate']:g} req/s: service p50 ÷ bare-client p50 = "
            f"{fetch.latency.p50_ms / bare_lat.p50_ms:.2f}, p99 ÷ p99 = "
            f"{fetch.latency.p99_ms / bare_lat.p99_ms:.2f} "
            f"(the service's fetch-path latency includes its JWT verify and its evaluation, "
            f"and the HTTP hop from the driver, which the bare client does not make).",
        ]
        if fetch.verify_latency:
            # The floor+verify row at the same rate is the hop from the driver plus one verify:
            # what is left is the service's fetching and evaluating, the bare client's work.
            own = fetch.latency.p50_ms - fetch.verify_latency.p50_ms
            lines.append(
                f"Without that hop (service p50 minus floor+verify p50 = {own:.1f} ms): "
                f"{own / bare_lat.p50_ms:.2f} times the bare client."
            )
    lines += [
        "",
        "Scaling: (a) with its draft orders and every prefetched Bundle entry replicated; "
        "sequential calls on one connection.",
        "",
        "| factor | draft orders | prefetch resources | body | response | service p50 "
        "| mean | p50 ÷ (1x p50) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = result["scaling"][0]["p50_ms"]
    for s in result["scaling"]:
        lines.append(
            f"| {s['factor']}x | {s['draft_orders']} | {s['prefetch_resources']} "
            f"| {s['body_kib']:.0f} KiB | {s['response_kib']:.0f} KiB | {s['p50_ms']:.1f} ms "
            f"| {s['mean_ms']:.1f} ms | {s['p50_ms'] / base:.1f} |"
        )
    signed, seconds = result["tokens"]
    lines += [
        "",
        f"Service RSS: {result['rss_idle_mb']:.0f} MB after start, "
        f"{result['rss_end_mb']:.0f} MB at the end. Tokens signed before timed phases: "
        f"{signed:,} ({seconds:.1f} s). Chart on the FHIR server: "
        f"{result['chart_resources_on_fhir_server']} resources.",
        "",
        "Machine: " + "; ".join(f"{k}: {v}" for k, v in result["machine"].items()),
    ]
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Row):
        return {
            "case": value.case.key,
            "label": value.case.label,
            "topics": value.case.topics,
            "floor": _jsonable(value.floor),
            "floor_verify": _jsonable(value.verify),
            "service": _jsonable(value.service),
            "service_latency": _jsonable(value.latency),
            "floor_verify_latency": _jsonable(value.verify_latency),
            "rss_mb": value.rss_mb,
        }
    if isinstance(value, Throughput | Latency):
        return dict(value.__dict__)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP end the run through the cleanup in `main`."""

    def handler(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    # Ctrl-C too, even when started from a shell that ignores SIGINT for background jobs.
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 s per cell instead of 10 s")
    parser.add_argument("--driver", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rate", type=float, default=50.0, help="open-loop arrival rate")
    parser.add_argument(
        "--fetch-rate", type=float, default=5.0, help="open-loop arrival rate, fetch path"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="service worker processes (needs Redis if > 1)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "http_bench-latest")
    args = parser.parse_args()

    wrk = shutil.which("wrk")
    if args.driver == "wrk" and wrk is None:
        print("wrk is not installed (apt-get install -y wrk), or use --driver python")
        return 2
    driver = "wrk" if wrk and args.driver != "python" else "python"
    seconds = 2.0 if args.quick else 10.0
    cfg = Settings(
        duration=seconds,
        latency_seconds=seconds,
        fetch_rate=args.fetch_rate,
        rate=args.rate,
        connections=max(1, min(args.connections, 64)),
        wrk_threads=1,
        scaling_calls=20 if args.quick else 100,
        driver=driver,
        workers=max(1, args.workers),
    )
    if driver == "wrk":
        version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        cfg.wrk_version = (version.stdout or version.stderr).split(" [")[0].strip() or "wrk"
    print(f"load tool: {'wrk' if driver == 'wrk' else 'asyncio+httpx closed-loop driver'}")

    with (
        _signals_raise(),
        tempfile.TemporaryDirectory(prefix="http-bench-") as tmp_name,
        contextlib.ExitStack() as stack,
    ):
        try:
            result = run(cfg, stack, Path(tmp_name))
        except BenchError as exc:
            print(f"\nbenchmark failed: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\ninterrupted: stopping the processes this run started", file=sys.stderr)
            return 130
    table = render(result)
    print("\n" + table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".md").write_text(table + "\n", encoding="utf-8")
    args.output.with_suffix(".json").write_text(
        json.dumps(_jsonable(result), indent=2, default=str), encoding="utf-8"
    )
    print(f"\nwritten: {args.output.with_suffix('.md')} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
