"""Hostile code through the gateway: every attempt is contained, floods are bounded, and the
sandbox is healthy afterwards. Runs on a stack of its own whose sandbox holds a planted secret
in its environment."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from conftest import make_config, run_sandbox
from trine.credentials import ApiKey
from trine.stack import Stack

CANARY = "trine-canary-4f1d9c0b7e"
ESCAPES = [
    "open('/etc/passwd').read()",
    "open('/../../../etc/passwd').read()",
    "open('/tmp/../../../../etc/hostname').read()",
    "open('/usr/local/lib/evil.py', 'w').write('x')",
    "open('/usr/local/lib/python315.zip', 'ab').write(b'x')",
    "os.symlink('/etc/passwd', '/tmp/l') or open('/tmp/l').read()",
    "os.symlink('../../../../../etc', '/tmp/e') or os.listdir('/tmp/e')",
    "socket.create_connection(('127.0.0.1', 80), timeout=1)",
    "socket.socket(socket.AF_INET, socket.SOCK_DGRAM)",
    "subprocess.run(['id'])",
    "os.fork()",
    "threading.Thread(target=print).start()",
]


@pytest.fixture(scope="module")
def hostile_client(
    tmp_path_factory: pytest.TempPathFactory, dev_key: ApiKey
) -> Iterator[httpx.Client]:
    env = {
        "sandbox": {"TRINE_SANDBOX_CANARY_SECRET": CANARY},
        # Floods must meet the sandbox's own admission control, not the per-key rate limit.
        "gateway": {"TRINE_RATE_PER_SECOND": "10000", "TRINE_RATE_BURST": "10000"},
    }
    config = make_config(tmp_path_factory.mktemp("hostile"), [dev_key], ml_replicas=1, env=env)
    headers = {"Authorization": f"Bearer {dev_key.key}"}
    with Stack(config, console=None) as stack:
        with httpx.Client(base_url=stack.gateway_url, headers=headers, timeout=120) as c:
            yield c
        assert stack.first_exited() is None, "a service died during the hostile runs"


def python(code: str, **limits: int) -> dict[str, Any]:
    return {"language": "python", "code": code, "limits": limits}


def javascript(code: str, **limits: int) -> dict[str, Any]:
    return {"language": "javascript", "code": code, "limits": limits}


@pytest.mark.parametrize("attempt", ESCAPES)
def test_escapes_are_refused(hostile_client: httpx.Client, attempt: str) -> None:
    code = (
        "import os, socket, subprocess, threading\n"
        f"try:\n    {attempt}\n"
        "except BaseException as e:\n    print('blocked', type(e).__name__)\n"
        "else:\n    print('ALLOWED')"
    )
    result = run_sandbox(hostile_client, python(code))
    assert result["status"] == "ok", result
    assert result["stdout"].startswith("blocked"), result


def test_the_guest_sees_no_host_files_or_environment(hostile_client: httpx.Client) -> None:
    code = "import os; print(sorted(os.listdir('/'))); print(sorted(os.environ.items()))"
    result = run_sandbox(hostile_client, python(code))
    assert result["stdout"].splitlines()[0] == "['tmp', 'usr']"
    assert CANARY not in result["stdout"]
    assert "TRINE" not in result["stdout"]


HOSTILE: list[tuple[str, dict[str, Any], set[str]]] = [
    ("python loop", python("while True: pass", timeout_ms=300, fuel=10_000_000_000), {"timeout"}),
    ("js loop", javascript("for (;;) {}", timeout_ms=300, fuel=10_000_000_000), {"timeout"}),
    ("sleep", python("import time; time.sleep(60)", timeout_ms=300), {"timeout"}),
    ("memory bomb", python("x = bytearray(1 << 30)", memory_mb=64), {"memory_exceeded"}),
    (
        "js memory bomb",
        javascript(
            "const a = []; for (;;) a.push(new Array(1 << 20).fill(1.5));",
            memory_mb=64,
            fuel=10_000_000_000,
            timeout_ms=20_000,
        ),
        {"memory_exceeded"},
    ),
    ("recursion", python("def f(): f()\nf()", fuel=10_000_000_000), {"error"}),
    (
        "deep recursion",
        python(
            "import sys\nsys.setrecursionlimit(10**7)\ndef f(n): return f(n + 1) + 1\nf(0)",
            fuel=10_000_000_000,
        ),
        {"error", "trap", "memory_exceeded"},
    ),
    ("js recursion", javascript("function f() { return f() + 1; } f();"), {"error", "trap"}),
    (
        "100 MB of output",
        python(
            "import sys\nfor _ in range(100): sys.stdout.write('x' * (1 << 20))",
            fuel=10_000_000_000,
        ),
        {"ok"},
    ),
    (
        "huge declared memory",
        {"language": "wat", "code": '(module (memory 65536) (func (export "run")))'},
        {"memory_exceeded"},
    ),
]


@pytest.mark.parametrize(
    "body,expected", [(b, e) for _, b, e in HOSTILE], ids=[n for n, _, _ in HOSTILE]
)
def test_hostile_runs_end_contained(
    hostile_client: httpx.Client, body: dict[str, Any], expected: set[str]
) -> None:
    result = run_sandbox(hostile_client, body)
    assert result["status"] in expected, result
    if body["code"].startswith("import sys\nfor _ in range(100)"):
        assert result["truncated"] is True
        assert len(result["stdout"]) == 1_048_576


@pytest.mark.parametrize(
    "body",
    [
        {"language": "wat", "code": '(module (import "env" "steal" (func)) (func (export "run")))'},
        {"language": "wasm", "module": base64.b64encode(b"\0asm\x01\0\0\0\xff\xff\xff").decode()},
        {"language": "wasm", "module": base64.b64encode(b"MZ\x90\0 not wasm").decode()},
    ],
    ids=["unknown-import", "truncated-section", "not-wasm"],
)
def test_malformed_modules_are_400(hostile_client: httpx.Client, body: dict[str, Any]) -> None:
    resp = hostile_client.post("/v1/sandbox/run", json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["type"] == "invalid_request"


@pytest.mark.parametrize(
    "body,expected", [(b, e) for _, b, e in HOSTILE], ids=[n for n, _, _ in HOSTILE]
)
def test_fifty_at_once_are_bounded(
    hostile_client: httpx.Client, body: dict[str, Any], expected: set[str]
) -> None:
    def one(_: int) -> httpx.Response:
        return hostile_client.post("/v1/sandbox/run", json=body)

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(one, range(50)))
    ran = 0
    for resp in responses:
        if resp.status_code == 503:
            assert resp.json()["error"]["type"] == "unavailable"
            assert int(resp.headers["Retry-After"]) >= 1
            continue
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] in expected, resp.text
        ran += 1
    assert ran >= 1


def test_healthy_after_everything(hostile_client: httpx.Client) -> None:
    """Runs last in this module: the sandbox still answers correctly."""
    assert run_sandbox(hostile_client, python("print('still here')"))["stdout"] == "still here\n"
    assert run_sandbox(hostile_client, javascript("console.log('me too')"))["stdout"] == "me too\n"
