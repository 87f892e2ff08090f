"""Service configuration, read from the environment once, when the app is built."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from psycopg.conninfo import conninfo_to_dict
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ProviderName = Literal["extractive", "anthropic", "openai"]


class Settings(BaseSettings):
    """Settings of one ML replica.

    Every field reads ``TRINE_<FIELD>`` except the Anthropic key and base URL, which use the
    SDK's conventional names. Nothing reads the environment at import time: build one
    ``Settings()`` in the entry point (or pass values explicitly in tests).
    """

    model_config = SettingsConfigDict(
        env_prefix="TRINE_",
        extra="ignore",
        populate_by_name=True,
        frozen=True,
    )

    internal_token: SecretStr = Field(
        min_length=16,
        description="Shared credential the gateway sends in X-Trine-Internal-Token.",
    )
    service_id: str = Field(
        default="ml-0", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", description="Replica name."
    )
    llm_provider: Literal["auto", "extractive", "anthropic", "openai"] = Field(
        default="auto",
        description="auto = anthropic when an Anthropic API key is set, else extractive.",
    )
    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "anthropic_api_key")
    )
    anthropic_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_BASE_URL", "anthropic_base_url")
    )
    anthropic_model: str = Field(default="claude-sonnet-4-6", min_length=1)
    openai_base_url: str | None = Field(
        default=None, description="Any OpenAI-compatible server (vLLM, Ollama, llama.cpp)."
    )
    openai_api_key: SecretStr | None = None
    openai_model: str = Field(default="gpt-4o-mini", min_length=1)
    llm_max_tokens: int = Field(default=1024, ge=1, le=64_000)
    llm_timeout_s: float = Field(default=60.0, gt=0, le=600)
    llm_max_retries: int = Field(default=2, ge=0, le=5)
    # One inference thread by default: the machine has 2 cores shared by the gateway, the
    # sandbox and several ML replicas, so each replica runs its model on one core. With two
    # replicas embedding 200-token chunks at once, 2 threads each cost 7-15% more CPU per
    # chunk than 1 (OpenVINO, measured), so the pair would ingest less, not more.
    embed_threads: int = Field(default=1, ge=1, le=64)
    embed_batch_size: int = Field(default=32, ge=1, le=1024)
    embed_cache_size: int = Field(default=20_000, ge=0, le=10_000_000)
    data_dir: Path = Field(default=Path(".trine"), description="Where the SQLite file lives.")
    sqlite_path: Path | None = Field(
        default=None,
        description="The collections database; every replica must be given the same file.",
    )
    database_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "database_url"),
        description="postgresql://... selects the PostgreSQL + pgvector store; unset: SQLite.",
    )
    # Connections per replica: the pool grows to this under load (hybrid queries use two).
    database_pool_size: int = Field(default=4, ge=1, le=100)
    # How long a call waits for a pooled connection (and a new one for the server) before
    # failing with 503 unavailable.
    database_timeout_s: float = Field(default=5.0, gt=0, le=120)
    # HNSW candidates per dense query (pgvector's hnsw.ef_search); raised to top_k if lower.
    hnsw_ef_search: int = Field(default=200, ge=10, le=1000)
    chunk_tokens: int = Field(default=200, ge=16, le=250)
    chunk_overlap_tokens: int = Field(default=32, ge=0, le=128)
    # Chunks embedded and written per transaction: bounds the memory an ingest holds.
    ingest_batch_chunks: int = Field(default=256, ge=1, le=10_000)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("anthropic_api_key", "openai_api_key", mode="before")
    @classmethod
    def _blank_key_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("anthropic_base_url", "openai_base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("database_url", mode="before")
    @classmethod
    def _check_database_url(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        # The URL may carry a password: no message here repeats it.
        if not isinstance(raw, str) or not raw.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        try:
            conninfo_to_dict(raw)
        except Exception as exc:  # psycopg reports libpq's parse error
            raise ValueError("is not a valid PostgreSQL URL") from exc
        return raw

    @model_validator(mode="after")
    def _check_provider(self) -> Settings:
        if self.llm_provider == "anthropic" and self.anthropic_api_key is None:
            raise ValueError("TRINE_LLM_PROVIDER=anthropic needs ANTHROPIC_API_KEY")
        if self.llm_provider == "openai" and not (self.openai_base_url or self.openai_api_key):
            raise ValueError(
                "TRINE_LLM_PROVIDER=openai needs TRINE_OPENAI_BASE_URL or TRINE_OPENAI_API_KEY"
            )
        if self.chunk_overlap_tokens >= self.chunk_tokens // 2:
            raise ValueError("TRINE_CHUNK_OVERLAP_TOKENS must be under half of TRINE_CHUNK_TOKENS")
        return self

    @property
    def database_path(self) -> Path:
        """The SQLite file: ``TRINE_SQLITE_PATH``, else ``ml.sqlite3`` in ``TRINE_DATA_DIR``."""
        return self.sqlite_path or self.data_dir / "ml.sqlite3"

    @property
    def resolved_provider(self) -> ProviderName:
        """The provider actually used once ``auto`` is decided."""
        if self.llm_provider == "auto":
            return "anthropic" if self.anthropic_api_key is not None else "extractive"
        return self.llm_provider
