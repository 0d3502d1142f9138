"""Measure in-process latency of an order-sign call with full prefetch.

Three layers are timed separately, so a regression can be located:
  pipeline  Runtime.answer(): parse drafts and prefetch, facts, rules, cards, coverage information
  http      the whole ASGI app over httpx.ASGITransport (routing, validation, JSON), auth disabled
  http+jwt  the same with a real ES384 JWT verified on every call (fresh jti each time)

Usage: .venv/bin/python -m bench.hook_latency [--request FILE] [--iterations N]
Timings are wall-clock on this machine; nothing here is asserted by the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from service.app import create_app
from service.cdshooks.models import HookRequest
from service.config import load_settings
from service.security.auth import Caller
from service.security.dev_client import ensure_dev_client, sign_dev_token

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REQUEST = ROOT / "examples" / "order-sign-bundling.json"
SERVICE_PATH = "/cds-services/cardiac-ct-order-sign"


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]

    return {
        "p50_ms": round(pct(0.50), 3),
        "p95_ms": round(pct(0.95), 3),
        "p99_ms": round(pct(0.99), 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
        "max_ms": round(ordered[-1], 3),
    }


async def _time(call: Callable[[], Awaitable[Any]], iterations: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        await call()
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _load_request(path: Path) -> dict[str, Any]:
    raw = json.loads(path.read_text(encoding="utf-8"))
    request: dict[str, Any] = raw.get("request", raw)
    return request


async def _bench(request_body: dict[str, Any], iterations: int, warmup: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            None,
            public_base_url="http://bench.local",
            environment="test",
            state_dir=tmp,
            storage={"url": f"sqlite:///{tmp}/bench.db"},
            auth={"enabled": False},
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            runtime = app.state.runtime
            service = runtime.services.get("cardiac-ct-order-sign")
            hook_request = HookRequest.model_validate(request_body)
            caller = Caller(None, None, ())
            evaluation = await runtime.answer(service, hook_request, caller)
            results["cards"] = [c.topic for c in evaluation.issued]

            async def pipeline() -> None:
                await runtime.answer(service, HookRequest.model_validate(request_body), caller)

            results["pipeline"] = _percentiles(await _time(pipeline, iterations, warmup))

            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench.local") as c:

                async def http() -> None:
                    body = dict(request_body, hookInstance=str(uuid.uuid4()))
                    response = await c.post(SERVICE_PATH, json=body)
                    response.raise_for_status()

                results["http"] = _percentiles(await _time(http, iterations, warmup))
        results["http+jwt"] = await _bench_jwt(request_body, iterations, warmup, tmp)
    return results


async def _bench_jwt(
    request_body: dict[str, Any], iterations: int, warmup: int, tmp: str
) -> dict[str, float]:
    """Same call with an ES384 JWT per request (the dev client's key pair).

    Tokens are signed before timing starts: signing is the EHR's cost, verifying is ours.
    """
    settings = load_settings(
        None,
        public_base_url="http://bench.local",
        environment="development",
        state_dir=tmp,
        storage={"url": f"sqlite:///{tmp}/bench-jwt.db"},
        auth={"enabled": True, "dev_client": True},
    )
    app = create_app(settings)
    keys = ensure_dev_client(settings.state_dir)
    audience = settings.service_url(SERVICE_PATH)
    tokens = iter([sign_dev_token(keys, audience) for _ in range(iterations + warmup)])
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench.local") as c:

            async def http_jwt() -> None:
                response = await c.post(
                    SERVICE_PATH,
                    json=dict(request_body, hookInstance=str(uuid.uuid4())),
                    headers={"Authorization": f"Bearer {next(tokens)}"},
                )
                response.raise_for_status()

            return _percentiles(await _time(http_jwt, iterations, warmup))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--request", type=Path, default=DEFAULT_REQUEST)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    args = parser.parse_args()
    request_body = _load_request(args.request)
    results = asyncio.run(_bench(request_body, args.iterations, args.warmup))
    results["machine"] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "iterations": args.iterations,
        "request": str(
            args.request.relative_to(ROOT) if args.request.is_absolute() else args.request
        ),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
