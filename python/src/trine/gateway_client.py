"""A small client of the public API, for the commands that talk to a running gateway."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import httpx

#: Bytes of JSON per ingest request. Small requests (64 KiB of text is about a second and a
#: half of model time) keep every ML replica busy until the end of an ingest, and show
#: progress; each one costs a few milliseconds more than its work.
MAX_BATCH_BYTES = 64 * 1024
#: Documents per ingest request, so progress shows and one failure costs little.
MAX_BATCH_DOCUMENTS = 32
_RETRYABLE = (429, 503)
_MAX_ATTEMPTS = 5


class GatewayError(RuntimeError):
    """The gateway answered with an error; the message is its envelope's."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class GatewayClient:
    """Calls the public API with one API key over one connection pool (safe to share
    between threads). 429 and 503 are retried after ``Retry-After`` (bounded), anything
    else non-2xx raises."""

    def __init__(self, url: str, key: str, *, timeout_s: float = 120.0) -> None:
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout_s,
        )

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def request(self, method: str, path: str, body: object | None = None) -> Any:
        for attempt in range(_MAX_ATTEMPTS):
            resp = self._http.request(method, path, json=body)
            if resp.status_code in _RETRYABLE and attempt + 1 < _MAX_ATTEMPTS:
                time.sleep(_retry_after(resp, attempt))
                continue
            if resp.status_code >= 400:
                raise GatewayError(resp.status_code, _message(resp))
            return resp.json() if resp.content else None
        raise AssertionError("unreachable: the last attempt returns or raises")

    def ingest(self, collection: str, documents: Sequence[dict[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", f"/v1/collections/{collection}/documents", {"documents": list(documents)}
        )
        return result

    def query(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/v1/rag/query", body)
        return result

    def delete_collection(self, collection: str) -> None:
        try:
            self.request("DELETE", f"/v1/collections/{collection}")
        except GatewayError as err:
            if err.status != 404:
                raise


def ingest_all(
    client: GatewayClient,
    collection: str,
    documents: Sequence[dict[str, Any]],
    *,
    parallel: int = 2,
) -> Iterator[tuple[int, int]]:
    """Ingests ``documents`` in batches, ``parallel`` requests in flight so that several
    ML replicas embed at once; yields (documents, chunks) as each batch is stored."""
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        pending: dict[Future[dict[str, Any]], int] = {}

        def finished() -> Iterator[tuple[int, int]]:
            # Whichever request ends first frees its place, so one slow batch does not hold
            # the others back.
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield pending.pop(future), int(future.result()["chunks"])

        for batch in batches(documents):
            pending[pool.submit(client.ingest, collection, batch)] = len(batch)
            if len(pending) >= parallel:
                yield from finished()
        while pending:
            yield from finished()


def batches(documents: Sequence[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Consecutive groups of documents under both batch limits (a single document larger
    than the byte limit goes alone)."""
    batch: list[dict[str, Any]] = []
    size = 0
    for doc in documents:
        doc_size = len(doc.get("text", "").encode()) + 256
        if batch and (size + doc_size > MAX_BATCH_BYTES or len(batch) == MAX_BATCH_DOCUMENTS):
            yield batch
            batch, size = [], 0
        batch.append(doc)
        size += doc_size
    if batch:
        yield batch


def _retry_after(resp: httpx.Response, attempt: int) -> float:
    try:
        return min(float(resp.headers.get("Retry-After", "")), 30.0)
    except ValueError:
        return min(0.5 * 2.0**attempt, 10.0)


def _message(resp: httpx.Response) -> str:
    try:
        return str(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return resp.text[:200] or resp.reason_phrase
