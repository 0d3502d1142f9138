"""A real FHIR R4 server process for `bench.http_bench`: SEKMET (`sekmet-fhir`) under uvicorn.

Configured like tests/support/fhir_server.py (in-memory database, static bearer token, workflow
simulator off, no traffic log), but as its own process on loopback so the benchmark's fetch path
crosses a real socket. The benchmark loads the chart with PUTs before timing.

Usage (started by bench/http_bench.py): python -m bench.fhir_server_app --port P --token T
"""

from __future__ import annotations

import argparse

import uvicorn


def main() -> None:
    parser = argparse.ArgumentParser(description="SEKMET FHIR server for bench.http_bench")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True, help="the static bearer token it accepts")
    args = parser.parse_args()

    from sekmet.config import ServerAuth, Settings, SimulatorSettings, set_settings
    from sekmet.main import create_app

    settings = Settings(
        base_url=f"http://127.0.0.1:{args.port}/fhir",
        host="127.0.0.1",
        port=args.port,
        db_path=":memory:",
        log_inbound=False,
        server_auth=ServerAuth(types=["bearer"], tokens=[args.token]),
        simulator=SimulatorSettings(enabled=False),
    )
    set_settings(settings)
    app = create_app(settings)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
