"""The framework floor for `bench.http_bench`: a bare FastAPI app, no service code.

`POST /floor/{case}` reads the request body, parses it as JSON and returns the canned response
bytes the real service returned for that request (`{canned_dir}/{case}.json`).
`POST /verify/{case}` does the same after verifying one ES384 JWT from the Authorization header
(PyJWT: signature, `iss`, `aud` = the exact URL called, `exp`, `iat` and `jti` present), with the
public key parsed once at startup. No `jti` replay cache, no rules, no FHIR models.

It is served by uvicorn with the same `uvicorn.run` arguments as `cardiac-ct-cds serve`, so the
difference to the service is the service's own work.

Usage (started by bench/http_bench.py):
  python -m bench.floor_app --port P --canned-dir DIR --jwks FILE --issuer ISS --base-url URL
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import jwt
import uvicorn
from fastapi import FastAPI, Request, Response
from jwt.algorithms import ECAlgorithm

REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "jti"]


def create_app(canned_dir: Path, jwks_file: Path, issuer: str, base_url: str) -> FastAPI:
    canned = {path.stem: path.read_bytes() for path in sorted(canned_dir.glob("*.json"))}
    if not canned:
        raise SystemExit(f"floor_app: no canned responses (*.json) in {canned_dir}")
    jwks: dict[str, Any] = json.loads(jwks_file.read_text(encoding="utf-8"))
    public_key = ECAlgorithm.from_jwk(jwks["keys"][0])
    base_url = base_url.rstrip("/")
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    def answer(case: str, body: bytes) -> Response:
        json.loads(body)
        response = canned.get(case)
        if response is None:
            return Response(status_code=404)
        return Response(response, media_type="application/json")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/floor/{case}")
    async def floor(case: str, request: Request) -> Response:
        return answer(case, await request.body())

    @app.post("/verify/{case}")
    async def floor_verify(case: str, request: Request) -> Response:
        authorization = request.headers.get("authorization", "")
        if not authorization.startswith("Bearer "):
            return Response(status_code=401)
        try:
            jwt.decode(
                authorization[7:],
                public_key,  # type: ignore[arg-type]
                algorithms=["ES384"],
                audience=f"{base_url}/verify/{case}",
                issuer=issuer,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError:
            return Response(status_code=401)
        return answer(case, await request.body())

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="Bare FastAPI floor for bench.http_bench")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--canned-dir", type=Path, required=True)
    parser.add_argument("--jwks", type=Path, required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--base-url", required=True)
    args = parser.parse_args()
    app = create_app(args.canned_dir, args.jwks, args.issuer, args.base_url)
    # Same arguments as `cardiac-ct-cds serve` (service/cli.py) apart from the log level.
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
