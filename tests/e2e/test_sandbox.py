"""Sandbox runs through the gateway, one per way a run can end."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from conftest import assert_envelope, run_sandbox, wait_for
from trine.stack import Stack

HELLO = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from wasm\\n")
  (func (export "run")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"""
SPIN = '(module (func (export "run") (loop $forever (br $forever))))'
GROW = """
(module
  (memory 1)
  (func (export "run")
    (if (i32.eq (memory.grow (i32.const 1024)) (i32.const -1)) (then unreachable))))
"""
UNREACHABLE = '(module (func (export "run") unreachable))'
# The binary form of `(module (func (export "run")))`.
EMPTY_RUN_WASM = bytes.fromhex("0061736d01000000010401600000030201000707010372756e00000a040102000b")


def test_ok_with_output(client: httpx.Client) -> None:
    result = run_sandbox(client, {"language": "wat", "code": HELLO})
    assert result["status"] == "ok"
    assert result["exit_code"] == 0
    assert result["stdout"] == "hello from wasm\n"
    assert result["truncated"] is False
    assert result["fuel_consumed"] > 0


def test_binary_module(client: httpx.Client) -> None:
    module = base64.b64encode(EMPTY_RUN_WASM).decode()
    result = run_sandbox(client, {"language": "wasm", "module": module})
    assert result["status"] == "ok"


def test_out_of_fuel(client: httpx.Client) -> None:
    result = run_sandbox(client, {"language": "wat", "code": SPIN, "limits": {"fuel": 1_000_000}})
    assert result["status"] == "out_of_fuel"


def test_timeout(client: httpx.Client) -> None:
    limits = {"fuel": 10_000_000_000, "timeout_ms": 300}
    result = run_sandbox(client, {"language": "wat", "code": SPIN, "limits": limits})
    assert result["status"] == "timeout"


def test_memory_exceeded(client: httpx.Client) -> None:
    result = run_sandbox(client, {"language": "wat", "code": GROW, "limits": {"memory_mb": 16}})
    assert result["status"] == "memory_exceeded"


def test_trap(client: httpx.Client) -> None:
    result = run_sandbox(client, {"language": "wat", "code": UNREACHABLE})
    assert result["status"] == "trap"
    assert "unreachable" in result["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"language": "wat", "code": '(module (func (export "run") (i32.add)'},
        {"language": "wasm", "module": base64.b64encode(b"not wasm at all").decode()},
        {"language": "cobol", "code": "DISPLAY 'HI'."},
        {"language": "wat", "code": HELLO, "entrypoint": "missing"},
    ],
    ids=["bad-wat", "bad-wasm", "unknown-language", "unknown-entrypoint"],
)
def test_invalid_input_is_400(client: httpx.Client, body: dict[str, Any]) -> None:
    assert_envelope(client.post("/v1/sandbox/run", json=body), 400, "invalid_request")


def test_request_id_reaches_the_sandbox(client: httpx.Client, stack: Stack) -> None:
    rid = "e2e-sandbox-request-id-1"
    resp = client.post(
        "/v1/sandbox/run", json={"language": "wat", "code": HELLO}, headers={"X-Request-ID": rid}
    )
    assert resp.status_code == 200
    assert resp.headers["X-Request-ID"] == rid
    # The launcher copies service output to the log file from a thread, so allow it a moment.
    assert wait_for(lambda: rid in stack.log_text("sandbox"))
