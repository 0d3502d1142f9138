"""Soak: one `cardiac-ct-cds serve` process under closed-loop load for minutes; its RSS over time.

Reuses bench/http_bench.py's parts (a SEKMET FHIR server process, a service process with a key
pair made for the run, wrk or the Python driver, single-use tokens signed before each round).
Round after round it sends one of the benchmark's requests for `--round` seconds: (a) in scope
with full prefetch, (b) out of scope, (c) order-select, (d) the fetch path, in turn. After each
round it reads the service's VmRSS. Memory that grows with the number of calls served (a cache
without a bound, a queue that is not drained) shows as a rising column.

Usage: .venv/bin/python -m bench.soak [--minutes 10] [--round 30]
Nothing here is asserted anywhere; see bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import http_bench as hb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--round", type=float, default=30.0, help="seconds per round")
    parser.add_argument("--driver", choices=["auto", "wrk", "python"], default="auto")
    args = parser.parse_args()
    driver = args.driver if args.driver != "auto" else ("wrk" if shutil.which("wrk") else "python")
    cfg = hb.Settings(
        duration=args.round,
        latency_seconds=2,
        rate=50,
        fetch_rate=5,
        connections=8,
        wrk_threads=1,
        scaling_calls=10,
        driver=driver,
    )
    with contextlib.ExitStack() as stack, hb._signals_raise():
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
        bench = hb.Bench(cfg, stack, tmp)
        # Tokens of the lifetime EHRs and the CDS Hooks sandbox use (5 minutes): the replay
        # cache holds each until it expires, so its size follows calls/s x lifetime.
        bench.signer.lifetime = 300
        example = hb._request_of(hb.EXAMPLE)
        fetch = bench.fetch_request(example)
        bench.start_fhir()
        bench.load_chart(example)
        service = bench.start_service()
        cases = [
            hb.Case("a", "in scope, full prefetch", hb.SIGN_PATH, example),
            hb.Case("b", "out of scope", hb.SIGN_PATH, hb.out_of_scope(example)),
            hb.Case("c", "order-select", hb.SELECT_PATH, hb._request_of(hb.ORDER_SELECT)),
            hb.Case("d", "fetch path", hb.SIGN_PATH, fetch),
        ]
        for case in cases:
            bench.call_once(bench.service_url + case.path, case.body_bytes())
        started = time.monotonic()
        rss_start = service.rss_mb() or 0.0
        print(f"driver {driver}; service RSS after warm-up: {rss_start:.0f} MB", flush=True)
        print("| minute | request | req/s | errors | calls so far | RSS |")
        print("|---|---|---|---|---|---|")
        served, samples, turn = 0, [rss_start], 0
        while time.monotonic() - started < args.minutes * 60:
            case = cases[turn % len(cases)]
            turn += 1
            result = bench.throughput(bench.service_url + case.path, case.body_bytes(), "service")
            served += result.requests
            rss = service.rss_mb() or 0.0
            samples.append(rss)
            minute = (time.monotonic() - started) / 60
            print(
                f"| {minute:.1f} | ({case.key}) {case.label} | {result.rps:,.0f} "
                f"| {result.errors} | {served:,} | {rss:.0f} MB |",
                flush=True,
            )
        half = samples[len(samples) // 2 :]
        print(
            f"\nRSS: {rss_start:.0f} MB after warm-up, max {max(samples):.0f} MB, "
            f"{samples[-1]:.0f} MB at the end; second half {min(half):.0f}-{max(half):.0f} MB; "
            f"{served:,} calls in {(time.monotonic() - started) / 60:.1f} min."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
