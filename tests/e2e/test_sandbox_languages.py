"""Python and JavaScript runs through the gateway, on interpreters the launcher warmed."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, assert_envelope, make_config, run_sandbox
from trine.credentials import ApiKey
from trine.stack import Stack, sandbox_runtimes


def test_python_prints_and_reads_stdin(client: httpx.Client) -> None:
    code = "import sys\nprint('hello,', sys.stdin.read().strip())"
    result = run_sandbox(client, {"language": "python", "code": code, "stdin": "trine\n"})
    assert (result["status"], result["exit_code"]) == ("ok", 0), result
    assert result["stdout"] == "hello, trine\n"


def test_python_with_numpy_and_pandas(client: httpx.Client) -> None:
    code = (
        "import numpy as np, pandas as pd\n"
        "print(int(np.ones(4).sum()), list(pd.Series([3, 1]).sort_values()))"
    )
    limits = {"fuel": 10_000_000_000, "timeout_ms": 30_000, "memory_mb": 512}
    result = run_sandbox(client, {"language": "python", "code": code, "limits": limits})
    assert result["status"] == "ok", result
    assert result["stdout"] == "4 [1, 3]\n"


def test_python_exception_is_error_with_traceback(client: httpx.Client) -> None:
    result = run_sandbox(client, {"language": "python", "code": "1 / 0"})
    assert (result["status"], result["exit_code"]) == ("error", 1)
    assert "ZeroDivisionError" in result["stderr"]
    assert "Traceback" in result["stderr"]


def test_javascript_prints(client: httpx.Client) -> None:
    result = run_sandbox(client, {"language": "javascript", "code": "console.log(6 * 7)"})
    assert (result["status"], result["stdout"]) == ("ok", "42\n"), result


def test_javascript_exception_is_error(client: httpx.Client) -> None:
    result = run_sandbox(client, {"language": "javascript", "code": "null.x"})
    assert result["status"] == "error"
    assert "TypeError" in result["stderr"]


def test_the_sandbox_never_compiled_an_interpreter(client: httpx.Client, stack: Stack) -> None:
    """The launcher warmed the on-disk cache, so serve only loaded compiled interpreters."""
    run_sandbox(client, {"language": "python", "code": "print(1)"})
    log = stack.log_text("sandbox")
    assert "python: loaded compiled" in log
    assert "javascript: loaded compiled" in log
    assert "compiling" not in log


@pytest.fixture(scope="module")
def stack_without_javascript(
    tmp_path_factory: pytest.TempPathFactory, dev_key: ApiKey
) -> Iterator[Stack]:
    env = {"sandbox": {"TRINE_SANDBOX_JS_WASM": ""}}
    config = make_config(tmp_path_factory.mktemp("no-js"), [dev_key], ml_replicas=1, env=env)
    with Stack(config, console=None) as s:
        yield s


def test_a_missing_interpreter_is_a_clear_503(
    stack_without_javascript: Stack, dev_key: ApiKey
) -> None:
    headers = {"Authorization": f"Bearer {dev_key.key}"}
    with httpx.Client(
        base_url=stack_without_javascript.gateway_url, headers=headers, timeout=60
    ) as c:
        resp = c.post("/v1/sandbox/run", json={"language": "javascript", "code": "1"})
        assert_envelope(resp, 503, "unavailable")
        assert "'javascript' is not installed" in resp.json()["error"]["message"]
        assert run_sandbox(c, {"language": "python", "code": "print(1)"})["stdout"] == "1\n"
    assert "TRINE_SANDBOX_JS_WASM is not set" in stack_without_javascript.log_text("sandbox")


def test_warm_reports_progress_and_keeps_a_private_cache(stack: Stack) -> None:
    """The step `trine up` runs before the sandbox starts; the session stack filled the cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRINE_")}
    env.update(sandbox_runtimes(ROOT / ".venv" / "bin" / "python"))
    assert set(env) >= {"TRINE_SANDBOX_PYTHON_WASM", "TRINE_SANDBOX_JS_WASM"}
    out = subprocess.run(
        [str(ROOT / "bin" / "trine-sandbox"), "warm"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "python: loaded compiled" in out, out
    assert "javascript: loaded compiled" in out, out
    assert out.rstrip().endswith("ready"), out
    cache = Path(out.splitlines()[0].split("cache ", 1)[1])
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
