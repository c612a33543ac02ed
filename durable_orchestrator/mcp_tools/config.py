"""What an operator writes to plug in MCP servers: `ORCH_MCP_SERVERS` (a JSON list) or
`ORCH_MCP_SERVERS_FILE` (a JSON or YAML file holding the same list, or `{"servers": [...]}`).

Each server is reached over stdio (`command`, `args`, `env`, `cwd`) or streamable HTTP (`url`,
`headers`). Its tools are registered as `<prefix><tool name>`; `agents`, `requires_approval` and
`timeout_secs` apply to every tool of the server unless `tools.<name>` says otherwise.
`capabilities` is a free set of named flags per tool (what it reads, whether it sends data out),
kept with the tool and shown by `GET /tools`, so tool-safety rules can be applied to MCP tools
by configuration alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

TOOL_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # what the OpenAI tools API accepts


class McpToolPolicy(BaseModel):
    """Overrides for one tool of a server; unset fields take the server's value."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="`false`: the tool is not registered.")
    agents: list[str] | None = Field(
        None,
        description="Agents that may call the tool (`*` = every agent); unset = the server's list.",
    )
    requires_approval: bool | None = Field(
        None, description="A human approves each call before it runs; unset = the server's setting."
    )
    timeout_secs: float | None = Field(None, gt=0, le=3600, description="Timeout of one call.")
    capabilities: dict[str, bool] = Field(
        default_factory=dict,
        description="What the tool does, for the prompt-injection policy (docs/guarantees.md): "
        "`reads_private`, `brings_untrusted`, `sends_out`.",
    )

    @model_validator(mode="after")
    def _known_capabilities(self) -> McpToolPolicy:
        # Imported here: the tools package imports the settings, which import this module.
        from durable_orchestrator.tools.provenance import BRINGS_UNTRUSTED, READS_PRIVATE, SENDS_OUT

        known = {READS_PRIVATE, BRINGS_UNTRUSTED, SENDS_OUT}
        if unknown := set(self.capabilities) - known:
            raise ValueError(f"unknown capabilities {sorted(unknown)}; known: {sorted(known)}")
        return self


class McpServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", description="Short id; origin is `mcp:<name>`."
    )
    command: str | None = Field(None, min_length=1, description="stdio: the program to start.")
    args: list[str] = Field(default_factory=list, description="stdio: its arguments.")
    env: dict[str, str] = Field(
        default_factory=dict, repr=False, description="stdio: extra environment variables."
    )
    cwd: str | None = Field(None, description="stdio: working directory.")
    url: str | None = Field(
        None, pattern=r"^https?://", description="streamable HTTP: the endpoint URL."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, repr=False, description="streamable HTTP: request headers."
    )
    prefix: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{0,32}$",
        description="Registered names are `<prefix><tool>`; unset = `<name>_`.",
    )
    agents: list[str] = Field(
        default_factory=list,
        description="Agents that may call this server's tools (`*` = every agent).",
    )
    requires_approval: bool = Field(
        False, description="Every call of this server's tools needs a human approval."
    )
    timeout_secs: float = Field(30.0, gt=0, le=3600, description="Timeout of one tool call.")
    include: list[str] | None = Field(
        None, description="Only these tools of the server (unset = all)."
    )
    tools: dict[str, McpToolPolicy] = Field(
        default_factory=dict, description="Per-tool overrides by MCP tool name."
    )

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError(
                f"MCP server {self.name!r}: set exactly one of `command` (stdio) or `url` (HTTP)"
            )
        return self

    @property
    def transport(self) -> Literal["stdio", "http"]:
        return "stdio" if self.command else "http"

    @property
    def origin(self) -> str:
        return f"mcp:{self.name}"

    @property
    def name_prefix(self) -> str:
        return f"{self.name}_" if self.prefix is None else self.prefix

    def policy(self, tool: str) -> McpToolPolicy:
        """The effective policy of one tool: its overrides over the server's defaults."""
        own = self.tools.get(tool, McpToolPolicy())
        return McpToolPolicy(
            enabled=own.enabled and (self.include is None or tool in self.include),
            agents=own.agents if own.agents is not None else list(self.agents),
            requires_approval=(
                own.requires_approval
                if own.requires_approval is not None
                else self.requires_approval
            ),
            timeout_secs=own.timeout_secs or self.timeout_secs,
            capabilities=dict(own.capabilities),
        )


def catalog_freshness_secs(settings: Any) -> float:
    """Catalog rows not renewed for this long (three missed re-lists) are stale."""
    return 3 * settings.mcp_refresh_interval_secs + settings.mcp_connect_timeout_secs


def load_servers_file(path: Path) -> list[dict[str, Any]]:
    """The raw server list of a JSON or YAML file (validated by Settings)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"ORCH_MCP_SERVERS_FILE: cannot read {str(path)!r}: {exc}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:
        raise ValueError(
            f"ORCH_MCP_SERVERS_FILE: {str(path)!r} is not valid {path.suffix or 'JSON'}: {exc}"
        ) from None
    if isinstance(data, dict) and "servers" in data:
        data = data["servers"]
    if not isinstance(data, list):
        raise ValueError(
            f"ORCH_MCP_SERVERS_FILE: {str(path)!r} must hold a list of servers (or {{servers: [...]}})"
        )
    return data
