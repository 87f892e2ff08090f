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
        if name.startswith(("TRINE_", "ANTHROPIC_")) or name == "DATABASE_URL":
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
        {"internal_token": TOKEN, "database_url": "mysql://u:p@h/db"},
        {"internal_token": TOKEN, "database_url": "postgresql://u@h/db?bogus=1"},
        {"internal_token": TOKEN, "database_pool_size": 0},
        {"internal_token": TOKEN, "hnsw_ef_search": 5000},
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


def test_database_url_selects_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRINE_INTERNAL_TOKEN", TOKEN)
    assert Settings().database_url is None  # type: ignore[call-arg]
    monkeypatch.setenv("DATABASE_URL", "  ")
    assert Settings().database_url is None  # type: ignore[call-arg]
    url = "postgresql://trine:s3cret-pw@db.internal:5432/trine?sslmode=require"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("TRINE_DATABASE_POOL_SIZE", "8")
    settings = Settings()  # type: ignore[call-arg]
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == url
    assert settings.database_pool_size == 8
    assert "s3cret-pw" not in repr(settings)


def test_a_bad_database_url_is_reported_without_its_password() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRINE_", "ANTHROPIC_"))}
    env["TRINE_INTERNAL_TOKEN"] = TOKEN
    env["DATABASE_URL"] = "postgresql://trine:s3cret-pw@db/trine?nonsense=1"
    result = subprocess.run(
        [sys.executable, "-m", "trine_ml", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["event"] == "invalid_settings"
    assert line["errors"][0]["field"] == "DATABASE_URL"
    assert "PostgreSQL URL" in line["errors"][0]["problem"]
    assert "s3cret-pw" not in result.stderr
