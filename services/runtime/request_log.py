"""The request log: one JSON line per request outcome, on the standard output of the service that
decided it (the router for requests it refused and for ``models.list`` answers, the executor for
requests it ran, the edge for the requests it refused itself: 401, 413, 400).

A line, keys in this order, absent values as ``null``::

    {"log": "request", "ts": "2026-12-01T21:40:00.123Z", "service": "executor", "request_id": "...",
     "tenant": "demo", "user": "u1", "api_key": "demo key", "client_id": null, "operation": "chat",
     "model": "demo-openai", "provider": "emulator-openai", "status": "ok", "error": null,
     "http_status": null, "prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20,
     "cost_usd": 6e-06, "latency_ms": 4.2}

``status`` is ``ok``, ``error`` or ``cancelled``; ``error`` the error code; ``http_status`` only
at the edge; ``api_key`` the name of the caller's API key when the request carries it (never the
key). ``"log": "request"`` tells these lines from anything else a process prints.

Where it goes: the service's logs (``logging``) go to standard error, the request log to standard
output, one ``write`` and flush per line, so the two never interleave within a line even when
both land in one file (``llmgw up`` writes both to ``.llmgw/logs/<service>.log``; in a container
they stay two streams). ``LLMGW_REQUEST_LOG=0`` turns it off (``Settings.request_log``).
A line is written synchronously: a reader that stops reading a pipe stalls the service, as it
would for ``logging``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import IO, Any, Protocol

import orjson

from services.contracts.events import RequestBase, UsageRecorded

from .settings import Settings


def _ts() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


class RequestLog:
    """``outcome(...)`` writes one line; a disabled log (``enabled=False``) does nothing at all."""

    __slots__ = ("enabled", "service", "_out")

    def __init__(self, service: str, *, enabled: bool = True, out: IO[str] | None = None):
        self.service = service
        self.enabled = enabled
        self._out = out

    @classmethod
    def of(cls, settings: Settings, service: str) -> RequestLog:
        return cls(service, enabled=settings.request_log)

    def outcome(
        self,
        *,
        request_id: str,
        tenant: str | None,
        status: str,
        user: str | None = None,
        api_key: str | None = None,
        client_id: str | None = None,
        operation: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        error: str | None = None,
        http_status: int | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        total_tokens: int | None = None,
        cost_usd: float | None = None,
        latency_ms: float | None = None,
    ) -> None:
        if not self.enabled:
            return
        line: dict[str, Any] = {
            "log": "request",
            "ts": _ts(),
            "service": self.service,
            "request_id": request_id,
            "tenant": tenant,
            "user": user,
            "api_key": api_key,
            "client_id": client_id,
            "operation": operation,
            "model": model,
            "provider": provider,
            "status": status,
            "error": error,
            "http_status": http_status,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": total_tokens,
            "cost_usd": cost_usd,
            "latency_ms": None if latency_ms is None else round(latency_ms, 3),
        }
        out = self._out or sys.stdout
        out.write(orjson.dumps(line).decode() + "\n")
        out.flush()

    def rejected(
        self, req: RequestBase, code: str, *, model: str | None = None, latency_ms: float | None = None
    ) -> None:
        """A request refused before any provider call (no tokens, no cost)."""
        if self.enabled:
            self.outcome(
                request_id=req.request_id,
                tenant=req.tenant_id,
                user=req.user_id,
                api_key=getattr(req, "api_key", None),
                client_id=req.client_id,
                operation=req.operation,
                model=model or getattr(req, "model", None),
                status="error",
                error=code,
                latency_ms=latency_ms,
            )

    def executed(self, usage: UsageRecorded, api_key: str | None = None) -> None:
        """A request a provider was called for, from its usage record."""
        if self.enabled:
            self.outcome(
                request_id=usage.request_id,
                tenant=usage.tenant_id,
                user=usage.user_id,
                api_key=api_key,
                client_id=usage.client_id,
                operation=usage.operation,
                model=usage.alias,
                provider=usage.provider,
                status=usage.status,
                error=usage.error_code,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                total_tokens=usage.total_tokens,
                cost_usd=usage.cost_usd,
                latency_ms=usage.total_ms,
            )


class _Publisher(Protocol):
    async def publish(self, topic: str, event: Any, **kw: Any) -> asyncio.Future[object]: ...


class UsageLogging:
    """A publisher that also writes the request-log line of each usage record it publishes (one per
    executed request): for code that publishes usage without knowing about the log (the executor's
    embeddings runner). ``api_keys``: request id -> API key name, for requests in flight."""

    def __init__(self, publisher: _Publisher, usage_topic: str, log: RequestLog, api_keys: dict[str, str]):
        self._publisher, self._topic, self._log, self._keys = publisher, usage_topic, log, api_keys

    async def publish(self, topic: str, event: Any, **kw: Any) -> asyncio.Future[object]:
        if topic == self._topic and isinstance(event, UsageRecorded):
            self._log.executed(event, self._keys.get(event.request_id))
        return await self._publisher.publish(topic, event, **kw)
