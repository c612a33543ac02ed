"""How CLI commands reach the API: URL and key from the environment, a running `orchestrator up`,
or the saved config; every failure becomes one readable line.

Resolution order, first found wins:

- URL: `ORCH_API_URL`; then `<data-dir>/api-url`, which `up` writes once its API answers and
  removes when it stops cleanly; then the saved config's `api_url`; then http://127.0.0.1:8000.
  A record left by an `up` that crashed is not skipped: its URL does not answer, and the
  command says that no running `up` was found in that data dir.
- Key: `ORCH_API_KEY`; then the saved config's `api_key`; then `<data-dir>/demo-api-key`
  (written by `up`).

The data dir is `--data-dir` (or `ORCH_DATA_DIR`, default `.orchestrator`), as for `up`. The
config is `$XDG_CONFIG_HOME/orchestrator/cli.json` (`~/.config/orchestrator/cli.json`),
written by `orchestrator keys create --save`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, connect_sse

from durable_orchestrator.cli.common import DEFAULT_DATA_DIR, fail

DEFAULT_API_URL = "http://127.0.0.1:8000"
API_URL_FILE = "api-url"


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


def record_api_url(data_dir: Path, url: str) -> Path:
    """Tell later CLI commands where this data dir's `up` serves its API."""
    path = data_dir / API_URL_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(url + "\n")
    tmp.replace(path)  # atomic: a command started meanwhile reads the whole URL or none
    return path


def recorded_api_url(data_dir: Path) -> str | None:
    path = data_dir / API_URL_FILE
    try:
        return path.read_text().strip().rstrip("/") or None
    except FileNotFoundError:
        return None


def _resolve_url(data_dir: Path) -> tuple[str, bool]:
    """The API URL, and whether it came from the data dir's record."""
    if url := os.environ.get("ORCH_API_URL"):
        return url.rstrip("/"), False
    if url := recorded_api_url(data_dir):
        return url, True
    return str(load_config().get("api_url") or DEFAULT_API_URL).rstrip("/"), False


def api_url(data_dir: Path = DEFAULT_DATA_DIR) -> str:
    return _resolve_url(data_dir)[0]


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
        self.url, self._recorded = _resolve_url(data_dir)
        self._data_dir = data_dir
        self._http = httpx.Client(
            base_url=self.url, headers={"X-API-Key": api_key(data_dir)}, timeout=timeout
        )

    def request(self, method: str, path: str, *, ok_404: bool = False, **kw: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            if self._recorded:
                # The record outlived its `up` (a crash or kill -9 skips the cleanup).
                raise fail(f"no running `orchestrator up` found in {self._data_dir}: the API it "
                           f"recorded ({self.url}) does not answer ({type(exc).__name__}); start "
                           "one with `orchestrator up`, or set ORCH_API_URL") from None
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

    def events(
        self, task_id: str, *, last_event_id: str | None = None, read_timeout: float | None = None
    ) -> Iterator[ServerSentEvent]:
        """The task's event stream from after `last_event_id`. Transport errors are raised as
        they are, so that the caller can reconnect; HTTP errors become one readable line."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        timeout = httpx.Timeout(30.0, read=read_timeout)
        with connect_sse(self._http, "GET", f"/tasks/{task_id}/events", headers=headers, timeout=timeout) as source:
            if source.response.status_code >= 400:
                source.response.read()
                raise fail(f"GET /tasks/{task_id}/events: HTTP {source.response.status_code}: "
                           f"{_message(source.response)}")
            yield from source.iter_sse()


def _message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200] or resp.reason_phrase
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("message") or err.get("code"))
    return str(body.get("detail", body))[:200] if isinstance(body, dict) else str(body)[:200]
