"""Push notification configs per task, and the webhook poster (docs/security-gateway.md).

Independent of the A2A SDK's types: a config is a :class:`PushTarget` (id, URL, token) and a
notification is the task as a JSON object. The store keeps the newest ``kept`` tasks' configs
and remembers the last state it notified per task, so a webhook hears of each state once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from itinerant.errors import NonRetryableError

log = logging.getLogger(__name__)

KEPT = 10_000
PER_TASK = 10
#: The header that carries a config's token to its webhook (the A2A spec's name for it).
TOKEN_HEADER = "X-A2A-Notification-Token"
POST_TIMEOUT_S = 5.0
RETRY_DELAYS_S = (0.2, 1.0, 3.0)
MAX_URL_CHARS = 2048


class InvalidWebhook(NonRetryableError):
    """A push config the gateway will not store (its URL, or too many for one task)."""

    reason = "invalid_webhook"


@dataclass(frozen=True)
class PushTarget:
    config_id: str
    url: str
    token: str | None = None
    #: The ``Authorization`` header the webhook asked for (the config's authentication).
    authorization: str | None = None


def check_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL with a host; else :class:`InvalidWebhook`."""
    if len(url) > MAX_URL_CHARS:
        raise InvalidWebhook(f"the webhook URL is longer than {MAX_URL_CHARS} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidWebhook(
            f"the webhook URL must be an absolute http:// or https:// URL with a host, not {url!r}"
        )
    return url


class PushConfigs:
    """task id -> its push targets by config id, for the newest ``kept`` tasks."""

    def __init__(self, kept: int = KEPT, per_task: int = PER_TASK) -> None:
        self.kept = kept
        self.per_task = per_task
        self._targets: OrderedDict[str, dict[str, PushTarget]] = OrderedDict()
        self._notified: dict[str, str] = {}

    def set(self, task_id: str, target: PushTarget) -> PushTarget:
        check_url(target.url)
        targets = self._targets.get(task_id, {})
        if target.config_id not in targets and len(targets) >= self.per_task:
            raise InvalidWebhook(
                f"task {task_id} has {self.per_task} push configs already; delete one first"
            )
        targets[target.config_id] = target
        self._targets[task_id] = targets
        self._targets.move_to_end(task_id)
        while len(self._targets) > self.kept:
            dropped, _ = self._targets.popitem(last=False)
            self._notified.pop(dropped, None)
        return target

    def get(self, task_id: str, config_id: str) -> PushTarget | None:
        return self._targets.get(task_id, {}).get(config_id)

    def targets(self, task_id: str) -> list[PushTarget]:
        return list(self._targets.get(task_id, {}).values())

    def delete(self, task_id: str, config_id: str) -> bool:
        targets = self._targets.get(task_id)
        if targets is None or targets.pop(config_id, None) is None:
            return False
        if not targets:
            del self._targets[task_id]
            self._notified.pop(task_id, None)
        return True

    def tasks(self) -> list[str]:
        return list(self._targets)

    def changed(self, task_id: str, state: str) -> bool:
        """Whether ``state`` is new for the task's webhooks (and remember it)."""
        if task_id not in self._targets or self._notified.get(task_id) == state:
            return False
        self._notified[task_id] = state
        return True


class PushSender:
    """POSTs a task (a JSON object) to webhooks, retrying connection errors and 5xx answers a
    few times; a webhook that never accepts is logged, never raised."""

    def __init__(
        self, timeout_s: float = POST_TIMEOUT_S, delays: tuple[float, ...] = RETRY_DELAYS_S
    ) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.delays = delays
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def send(self, target: PushTarget, payload: Mapping[str, Any]) -> bool:
        """Whether the webhook accepted (a 2xx) ``payload``."""
        headers = {"Content-Type": "application/json"}
        if target.token:
            headers[TOKEN_HEADER] = target.token
        if target.authorization:
            headers["Authorization"] = target.authorization
        attempts = (0.0, *self.delays)
        for attempt, delay in enumerate(attempts, start=1):
            if delay:
                await asyncio.sleep(delay)
            try:
                async with self._client().post(
                    target.url, json=dict(payload), headers=headers
                ) as response:
                    if 200 <= response.status < 300:
                        return True
                    if response.status < 500:
                        log.warning(
                            "webhook %s refused the notification: HTTP %s",
                            target.config_id,
                            response.status,
                        )
                        return False
                    why = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                why = f"{type(exc).__name__}: {exc}"
            log.info("webhook %s attempt %d failed: %s", target.config_id, attempt, why)
        log.warning("webhook %s not reached after %d attempts", target.config_id, len(attempts))
        return False
