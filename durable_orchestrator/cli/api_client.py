"""How CLI commands reach the API: URL and key from the environment, the saved config, or the
key a local `orchestrator up` wrote; every failure becomes one readable line.

Resolution order — URL: ORCH_API_URL, config, http://127.0.0.1:8000. Key: ORCH_API_KEY, config,
`<data-dir>/demo-api-key`. The config is `$XDG_CONFIG_HOME/orchestrator/cli.json`
(`~/.config/orchestrator/cli.json`), written by `orchestrator keys create --save`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx

from durable_orchestrator.cli.common import DEFAULT_DATA_DIR, fail

DEFAULT_API_URL = "http://127.0.0.1:8000"


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "orchestrator" / "cli.json"


def load_config() -> dict[str, Any]:
    path = config_path()
    if not path.exists():
        return {}
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise fail(f"cannot read {path}: {exc}") from None


def save_config(**values: str) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**load_config(), **values}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def api_url() -> str:
    return (os.environ.get("ORCH_API_URL") or load_config().get("api_url") or DEFAULT_API_URL).rstrip("/")


def api_key(data_dir: Path = DEFAULT_DATA_DIR) -> str:
    key = os.environ.get("ORCH_API_KEY") or load_config().get("api_key")
    if key:
        return str(key)
    demo = data_dir / "demo-api-key"
    if demo.exists():
        return demo.read_text().strip()
    raise fail(
        "no API key: set ORCH_API_KEY, or run `orchestrator keys create --user NAME --save`"
    )


class Api:
    def __init__(self, data_dir: Path = DEFAULT_DATA_DIR, timeout: float = 30.0) -> None:
        self.url = api_url()
        self._http = httpx.Client(
            base_url=self.url, headers={"X-API-Key": api_key(data_dir)}, timeout=timeout
        )

    def request(self, method: str, path: str, *, ok_404: bool = False, **kw: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise fail(f"cannot reach the API at {self.url} ({type(exc).__name__}); is it running? "
                       "(`orchestrator up`, or set ORCH_API_URL)") from None
        if resp.status_code == 404 and ok_404:
            return None
        if resp.status_code >= 400:
            raise fail(f"{method} {path}: HTTP {resp.status_code}: {_message(resp)}")
        return resp.json() if resp.content else None

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)


def _message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200] or resp.reason_phrase
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("message") or err.get("code"))
    return str(body.get("detail", body))[:200] if isinstance(body, dict) else str(body)[:200]
