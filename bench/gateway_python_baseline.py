"""A minimal Python API gateway, the baseline of bench/gateway_overhead.py.

It does the least a gateway must: check a bearer key against a stored SHA-256 in constant time,
then relay the body to one upstream with a shared httpx client and return the answer. Run it with
`uvicorn --factory gateway_python_baseline:create_app`; settings come from the environment.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request, Response


def create_app() -> FastAPI:
    upstream = os.environ["BASELINE_UPSTREAM"]
    key_hash = bytes.fromhex(os.environ["BASELINE_KEY_SHA256"])
    clients: dict[str, httpx.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(base_url=upstream, timeout=10) as client:
            clients["upstream"] = client
            yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/rag/query")
    async def rag(request: Request) -> Response:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        presented = hashlib.sha256(key.strip().encode()).digest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented, key_hash):
            return Response('{"error":{"type":"unauthorized"}}', 401, media_type="application/json")
        answer = await clients["upstream"].post(
            "/rag/query",
            content=await request.body(),
            headers={"content-type": "application/json"},
        )
        return Response(answer.content, answer.status_code, media_type="application/json")

    return app
