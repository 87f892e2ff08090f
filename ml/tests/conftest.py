from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from constants import TOKEN
from servers import FakeAnthropic, FakeOpenAI, serve_in_thread
from trine_ml.app import create_app
from trine_ml.embedding import OnnxEmbedder
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
def onnx_model() -> OnnxEmbedder:
    return OnnxEmbedder.from_packages(threads=1)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "internal_token": TOKEN,
            "service_id": "ml-test",
            "llm_provider": "extractive",
            "data_dir": tmp_path,
        }
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture
def client(
    make_settings: Callable[..., Settings], onnx_model: OnnxEmbedder
) -> Iterator[TestClient]:
    app = create_app(make_settings(), embedder=onnx_model)
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
