"""Runs one job: ``rag.query`` and ``ingest`` in process with the routes' own code,
``sandbox.run`` through the sandbox's internal ``POST /run``. Every way a run can end is
mapped to an outcome here: permanent refusals (what the synchronous route answers with a
4xx) fail the job, everything transient asks for a retry."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import aiohttp
from pydantic import ValidationError

from trine_ml.collection_service import NewDocument
from trine_ml.dependencies import INTERNAL_TOKEN_HEADER
from trine_ml.errors import InvalidRequest, TrineError, invalid_request_from
from trine_ml.jobs.callback import Outcome
from trine_ml.jobs.queue import ClaimedJob
from trine_ml.rag import response_body
from trine_ml.routes import check_rag_query, retrieve_and_answer
from trine_ml.schemas import COLLECTION_NAME, IngestRequest, IngestResponse, RagQueryRequest
from trine_ml.services import Services

logger = logging.getLogger(__name__)

_COLLECTION_NAME = re.compile(COLLECTION_NAME)
#: Statuses of the sandbox that a later attempt may not get: throttling, a wrong token
#: (an operator fixes the configuration), a request timeout.
_TRANSIENT_4XX = frozenset({401, 408, 429})
#: The sandbox's 503 for a language whose interpreter it does not have
#: (``ApiError::LanguageUnavailable`` in sandbox/src/error.rs): unlike "at capacity", no
#: later attempt on the same sandboxes can succeed, so the job fails at once.
_RUNTIME_MISSING = re.compile(r"^language '[^']*' is not installed on this sandbox$")


class JobRunner:
    def __init__(
        self,
        services: Services,
        sandbox: aiohttp.ClientSession,
        *,
        sandbox_url: str,
        internal_token: str,
        service_id: str,
        sandbox_timeout_s: float,
    ) -> None:
        self._services = services
        self._sandbox = sandbox
        self._sandbox_run_url = sandbox_url.rstrip("/") + "/run"
        self._token = internal_token
        self._service_id = service_id
        self._sandbox_timeout_s = sandbox_timeout_s

    async def run(self, job: ClaimedJob) -> Outcome:
        """The job's outcome; never raises except when cancelled."""
        try:
            if job.type == "rag.query":
                return Outcome.succeeded(await self._rag_query(job.input))
            if job.type == "ingest":
                return Outcome.succeeded(await self._ingest(job.input))
            if job.type == "sandbox.run":
                return await self._sandbox_run(job)
            return Outcome.failed("invalid_request", f"unknown job type {job.type!r}")
        except TrineError as exc:
            if 400 <= exc.status_code < 500:
                return Outcome.failed(exc.error_type, exc.message)
            return Outcome.retry(exc.error_type, exc.message)
        except Exception:
            logger.exception("job crashed", extra={"event": "job_error"})
            return Outcome.retry("internal_error", "internal error")

    async def _rag_query(self, raw: str) -> Any:
        try:
            body = RagQueryRequest.model_validate_json(raw)
        except ValidationError as exc:
            raise invalid_request_from(exc.errors(include_input=False)) from None
        check_rag_query(body)
        if body.stream:
            raise InvalidRequest("stream: a job cannot stream; leave it false")
        retrieval, answer = await retrieve_and_answer(self._services.rag, body)
        return response_body(retrieval, answer, self._service_id).model_dump(mode="json")

    async def _ingest(self, raw: str) -> Any:
        try:
            decoded = json.loads(raw)
        except ValueError:
            raise InvalidRequest("request body is not valid JSON") from None
        name = decoded.get("collection") if isinstance(decoded, dict) else None
        if not isinstance(name, str) or not _COLLECTION_NAME.match(name):
            raise InvalidRequest("collection name must match [a-z0-9][a-z0-9_-]{0,62}")
        try:
            body = IngestRequest.model_validate_json(raw)  # "collection" is ignored here
        except ValidationError as exc:
            raise invalid_request_from(exc.errors(include_input=False)) from None
        documents = [NewDocument(d.text, d.id, d.metadata) for d in body.documents]
        result = await self._services.collections.ingest(name, documents)
        response = IngestResponse(collection=name, documents=result.documents, chunks=result.chunks)
        return response.model_dump(mode="json")

    async def _sandbox_run(self, job: ClaimedJob) -> Outcome:
        headers = {
            "content-type": "application/json",
            INTERNAL_TOKEN_HEADER: self._token,
            "X-Request-ID": job.request_id,
        }
        try:
            async with self._sandbox.post(
                self._sandbox_run_url,
                data=job.input.encode(),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self._sandbox_timeout_s),
            ) as response:
                status, raw = response.status, await response.read()
        except TimeoutError:
            return Outcome.retry("upstream_timeout", "the sandbox did not answer in time")
        except aiohttp.ClientError:
            return Outcome.retry("upstream_error", "could not reach the sandbox")
        if status == 200:
            try:
                return Outcome.succeeded(json.loads(raw))
            except ValueError:
                return Outcome.retry("upstream_error", "the sandbox sent an unusable answer")
        error_type, message = _envelope(status, raw)
        if 400 <= status < 500 and status not in _TRANSIENT_4XX:
            return Outcome.failed(error_type, message)
        if status == 503 and _RUNTIME_MISSING.match(message):
            return Outcome.failed(error_type, message)
        return Outcome.retry(error_type, message)


def _envelope(status: int, raw: bytes) -> tuple[str, str]:
    """The error envelope's type and message, or a generic pair for the status."""
    try:
        error = json.loads(raw)["error"]
        return str(error["type"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        kind = "invalid_request" if status < 500 else "upstream_error"
        return kind, f"the sandbox answered {status}"
