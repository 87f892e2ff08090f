from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from trine_ml.settings import Settings

TOKEN = "0123456789abcdef"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("TRINE_", "ANTHROPIC_")):
            monkeypatch.delenv(name)


def test_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRINE_INTERNAL_TOKEN", TOKEN)
    monkeypatch.setenv("TRINE_SERVICE_ID", "ml-3")
    monkeypatch.setenv("TRINE_EMBED_THREADS", "2")
    settings = Settings()  # type: ignore[call-arg]
    assert settings.internal_token.get_secret_value() == TOKEN
    assert settings.service_id == "ml-3"
    assert settings.embed_threads == 2
    assert settings.anthropic_model == "claude-sonnet-4-6"
    assert settings.llm_max_tokens == 1024
    assert settings.llm_timeout_s == 60
    assert settings.resolved_provider == "extractive"


def test_auto_picks_anthropic_when_key_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRINE_INTERNAL_TOKEN", TOKEN)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-x")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9999")
    settings = Settings()  # type: ignore[call-arg]
    assert settings.resolved_provider == "anthropic"
    assert settings.anthropic_base_url == "http://127.0.0.1:9999"
    assert "sk-ant-x" not in repr(settings)


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"internal_token": "too-short"},
        {"internal_token": TOKEN, "llm_provider": "anthropic"},
        {"internal_token": TOKEN, "llm_provider": "openai"},
        {"internal_token": TOKEN, "embed_threads": 0},
        {"internal_token": TOKEN, "anthropic_base_url": "ftp://x"},
    ],
)
def test_rejects_invalid_settings(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**values)


def test_entry_point_refuses_to_start_with_invalid_settings() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRINE_", "ANTHROPIC_"))}
    env["TRINE_INTERNAL_TOKEN"] = "short"
    result = subprocess.run(
        [sys.executable, "-m", "trine_ml", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["event"] == "invalid_settings"
    assert line["errors"][0]["field"] == "internal_token"
    assert "short" not in json.dumps(line["errors"])
