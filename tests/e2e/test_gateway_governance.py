"""Gateway governance against the real stack: keys created and reloaded on SIGHUP, per-key rate
limits, collection-name checks, fan-out over the ML replicas, streaming and trace continuation."""

from __future__ import annotations

import json
import re
import secrets
import signal
import subprocess

import httpx

from conftest import ROOT, assert_envelope, schema_validator, wait_for
from trine.credentials import ApiKey
from trine.stack import Stack

DOCUMENTS = [
    "Paris is the capital of France and is known for the Eiffel Tower.",
    "Bananas are yellow fruit rich in potassium.",
]
QUERY = {"query": "Which city is the capital of France?", "documents": DOCUMENTS, "top_k": 1}


def _create_key(stack: Stack, key_id: str, *extra: str) -> str:
    """Add a key with `trine-gateway keys create` and have the running gateway reload it."""
    keys_file = stack.config.state_dir / "keys.json"
    out = subprocess.run(
        [
            str(ROOT / "bin" / "trine-gateway"),
            "keys",
            "create",
            "--keys-file",
            str(keys_file),
            "--id",
            key_id,
            *extra,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    raw = out.stdout.strip()
    assert raw.startswith("trn_") and raw not in keys_file.read_text()
    stack.service("gateway").proc.send_signal(signal.SIGHUP)
    return raw


def test_key_created_and_reloaded_on_sighup_is_rate_limited(stack: Stack) -> None:
    key_id = "limited-" + secrets.token_hex(4)
    raw = _create_key(stack, key_id, "--scopes", "rag", "--rate", "0.05", "--burst", "2")
    headers = {"Authorization": f"Bearer {raw}"}
    with httpx.Client(base_url=stack.gateway_url, headers=headers, timeout=60) as c:
        assert wait_for(lambda: c.post("/v1/rag/query", json=QUERY).status_code != 401)
        # The probe above used one of the two; the next uses the last one.
        ok = c.post("/v1/rag/query", json=QUERY)
        assert ok.status_code == 200, ok.text
        assert ok.headers["RateLimit-Limit"] == "2"
        assert ok.headers["RateLimit-Remaining"] == "0"
        assert int(ok.headers["RateLimit-Reset"]) >= 1
        refused = c.post("/v1/rag/query", json=QUERY)
        assert_envelope(refused, 429, "rate_limited")
        assert int(refused.headers["Retry-After"]) >= 1
    assert wait_for(lambda: f'"key_id":"{key_id}"' in stack.log_text("gateway"))


def test_a_broken_keys_file_keeps_the_old_keys(stack: Stack, client: httpx.Client) -> None:
    keys_file = stack.config.state_dir / "keys.json"
    good = keys_file.read_text()
    try:
        keys_file.write_text('{"keys": [')
        stack.service("gateway").proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "keys file not reloaded" in stack.log_text("gateway"))
        assert client.post("/v1/rag/query", json=QUERY).status_code == 200
    finally:
        keys_file.write_text(good)
        stack.service("gateway").proc.send_signal(signal.SIGHUP)


def test_default_limits_leave_normal_use_alone(client: httpx.Client) -> None:
    resp = client.post("/v1/rag/query", json=QUERY)
    assert resp.status_code == 200, resp.text
    assert int(resp.headers["RateLimit-Limit"]) >= 100
    timing = resp.headers["Server-Timing"]
    assert re.fullmatch(r"gw;dur=\d+\.\d{3}, upstream;dur=\d+\.\d{3}", timing)


def test_invalid_collection_names_are_refused_at_the_gateway(client: httpx.Client) -> None:
    for path in ("/v1/collections/Upper", "/v1/collections/-dash", "/v1/collections/" + "a" * 64):
        assert_envelope(client.get(path), 400, "invalid_request")
    assert_envelope(
        client.post("/v1/collections/bad.name/documents", json={"documents": [{"text": "x"}]}),
        400,
        "invalid_request",
    )


def test_collection_writes_need_the_ingest_scope(stack: Stack, rag_only_key: ApiKey) -> None:
    headers = {"Authorization": f"Bearer {rag_only_key.key}"}
    with httpx.Client(base_url=stack.gateway_url, headers=headers, timeout=60) as c:
        body = {"documents": [{"text": "x"}]}
        assert_envelope(c.post("/v1/collections/docs/documents", json=body), 403, "forbidden")
        assert_envelope(c.delete("/v1/collections/docs"), 403, "forbidden")
        assert_envelope(c.delete("/v1/collections/docs/documents/a"), 403, "forbidden")


def test_fanout_all_answers_from_every_replica(stack: Stack, client: httpx.Client) -> None:
    resp = client.post("/v1/rag/query", json={**QUERY, "fanout": "all"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    schema_validator("FanoutResult").validate(body)
    results = {r["service_id"]: r for r in body["results"]}
    assert set(results) == {f"ml-{i}" for i in range(len(stack.ml_urls))}
    for r in results.values():
        assert r["error"] is None, r
        assert "Paris" in r["answer"]
        assert r["sources"] == [0]
        assert r["latency_ms"] > 0


def test_fanout_hedge_returns_one_answer(client: httpx.Client) -> None:
    resp = client.post("/v1/rag/query", json={**QUERY, "fanout": "hedge"})
    assert resp.status_code == 200, resp.text
    assert "Paris" in resp.json()["answer"]


def test_invalid_fanout_is_refused(client: httpx.Client) -> None:
    assert_envelope(
        client.post("/v1/rag/query", json={**QUERY, "fanout": "some"}), 400, "invalid_request"
    )


def test_stream_passes_through_frame_by_frame(client: httpx.Client) -> None:
    with client.stream("POST", "/v1/rag/query", json={**QUERY, "stream": True}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [
            line.removeprefix("event: ") for line in resp.iter_lines() if line.startswith("event: ")
        ]
    assert events[0] == "passage"
    assert events[-1] == "done"
    assert "token" in events


def test_trace_id_reaches_the_ml_service(stack: Stack, client: httpx.Client) -> None:
    trace_id = secrets.token_hex(16)
    request_id = "trace-check-" + secrets.token_hex(4)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    headers = {"traceparent": traceparent, "X-Request-ID": request_id}
    resp = client.post("/v1/rag/query", json=QUERY, headers=headers)
    assert resp.status_code == 200, resp.text

    def ml_lines() -> list[dict[str, object]]:
        lines = []
        for i in range(len(stack.ml_urls)):
            for line in stack.log_text(f"ml-{i}").splitlines():
                if request_id in line:
                    lines.append(json.loads(line))
        return lines

    assert wait_for(lambda: bool(ml_lines()))
    assert {entry.get("trace_id") for entry in ml_lines()} == {trace_id}
