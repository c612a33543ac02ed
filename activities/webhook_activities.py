"""send_webhook: POST a task's outcome to the webhook_url it was submitted with.

Body: {"task_id", "status", "result", "error"} as compact JSON. Headers:
`X-Orchestrator-Timestamp: <unix seconds>` and
`X-Orchestrator-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" keyed with ORCH_WEBHOOK_SECRET>`
(the timestamp is inside the signature so a captured call cannot be replayed later unnoticed).
A non-2xx answer or a network error raises, and Temporal retries the activity. The client is
`outbound.checked_client`: a hook whose host resolves to a loopback, private, link-local or
metadata address is refused (not retried) unless ORCH_WEBHOOK_PRIVATE_HOSTS names it."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from durable_orchestrator.data.tasks import task_outcome
from durable_orchestrator.outbound import AddressRefused
from durable_orchestrator.settings import Settings
from durable_orchestrator.temporal.contracts import SEND_WEBHOOK, WebhookInput

log = structlog.get_logger(__name__)

SIGNATURE_HEADER = "X-Orchestrator-Signature"
TIMESTAMP_HEADER = "X-Orchestrator-Timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver does (also used by the tests)."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


@dataclass
class WebhookActivities:
    engine: AsyncEngine
    settings: Settings
    http: httpx.AsyncClient

    @activity.defn(name=SEND_WEBHOOK)
    async def send_webhook(self, inp: WebhookInput) -> int:
        task = await task_outcome(self.engine, inp.task_id)
        url = task.options.get("webhook_url") if task else None
        if task is None or not url:
            return 0  # deleted, or no hook: nothing to send
        if not self.settings.webhook_secret:
            raise ApplicationError(
                "webhook not sent: ORCH_WEBHOOK_SECRET is not set", non_retryable=True
            )
        host = (urlsplit(url).hostname or "").lower()
        if host not in {h.lower() for h in self.settings.webhook_allowed_hosts}:
            # Allowed when submitted, no longer allowed now: do not call it.
            raise ApplicationError(f"webhook host {host!r} is no longer allowed", non_retryable=True)
        body = json.dumps(
            {"task_id": inp.task_id, "status": task.status, "result": task.result, "error": task.error},
            separators=(",", ":"),
        ).encode()
        ts = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: ts,
            SIGNATURE_HEADER: sign(self.settings.webhook_secret, ts, body),
            "X-Orchestrator-Task-Id": inp.task_id,
            "X-Orchestrator-Delivery": f"{activity.info().workflow_id}:{activity.info().activity_id}",
        }
        try:
            resp = await self.http.post(url, content=body, headers=headers)
        except AddressRefused as exc:
            raise ApplicationError(
                f"webhook refused: {exc} (ORCH_WEBHOOK_PRIVATE_HOSTS names hosts allowed to)",
                non_retryable=True,
            ) from None
        except httpx.HTTPError as exc:
            raise ApplicationError(f"webhook unreachable: {type(exc).__name__}") from None
        if not 200 <= resp.status_code < 300:
            raise ApplicationError(f"webhook answered {resp.status_code}")
        log.info("webhook_sent", task_id=inp.task_id, status=task.status, http_status=resp.status_code)
        return resp.status_code
