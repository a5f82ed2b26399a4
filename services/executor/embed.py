"""Running ``embed`` plans: attempts, retries and fallback over the plan's deployments, each
attempt through the micro-batcher (``batcher.py``), then the result, usage and audit events.

Same guarantees as chat (``app.py``): a plan whose request already ran or is running here is
not run again; a cancel stops the request (its inputs leave a batch still open); ``total_ms``
bounds the whole request; every output is acknowledged before the plan's offset is committed.
Retries and fallback follow chat's rules (``handlers.retryable``): retryable failures are
retried ``plan.retries`` times, then (like any other failure) the next deployment is tried.
A deployment whose provider kind has no embeddings adapter is ``capability_not_supported``
before any HTTP, and the next deployment is tried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from services.contracts.errors import GatewayError
from services.contracts.events import (
    Embedding,
    EmbeddingsOutput,
    EmbedRequested,
    ErrorInfo,
    ExecutionPlanned,
    FailedAttempt,
    Latency,
    ResultProduced,
)
from services.runtime.kafka import Publisher
from services.runtime.replies import result_target
from services.runtime.topics import Topics

from .batcher import EmbedBatcher, Share
from .handlers import SecretLookup, retryable, settle, usage_record
from .providers._embeddings import Embeddings
from .providers.registry import adapter_for
from .providers.transport import HttpTransport
from .targets import Target

log = logging.getLogger(__name__)

Ack = asyncio.Future[object]


class StartedAudit(Protocol):
    """The request's ``started`` audit event (``app._StartedAudit``)."""

    async def published(self) -> Ack: ...

    def discard(self) -> None: ...


class Audit(Protocol):
    def __call__(
        self,
        plan: ExecutionPlanned,
        action: str,
        dep: Target | None = None,
        error: GatewayError | None = None,
        reason: str | None = None,
        at: datetime | None = None,
    ) -> Awaitable[Ack]: ...


@dataclass
class EmbedOutcome:
    share: Share
    deployment: Target
    fallback_used: bool


@dataclass
class Requests:
    """The executor's request bookkeeping, shared with chat: in flight, finished, cancelled early."""

    running: dict[str, asyncio.Task[Any]]
    finished: OrderedDict[str, None]
    cancelled: OrderedDict[str, str]
    remember: Callable[[OrderedDict[str, Any], str, Any], None]


class EmbedRunner:
    """Runs one executor's embed plans through one shared ``EmbedBatcher``."""

    def __init__(
        self,
        *,
        publisher: Publisher,
        topics: Topics,
        http: HttpTransport,
        secret: SecretLookup,
        window_ms: float,
        audit: Audit,
        started: Callable[[ExecutionPlanned], StartedAudit],
        requests: Requests,
    ):
        self.publisher = publisher
        self.topics = topics
        self.http = http
        self.secret = secret
        self.audit = audit
        self.started = started
        self.requests = requests
        self.batcher = EmbedBatcher(self._call, window_ms)

    async def _call(self, req: EmbedRequested, target: Target) -> Embeddings:
        adapter = adapter_for(target.kind, "embed")
        return await adapter.embed(self.http, req, target, self.secret(target.api_key_env))  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        await self.batcher.aclose()

    async def run(self, plan: ExecutionPlanned, targets: list[Target]) -> None:
        req = plan.request
        assert isinstance(req, EmbedRequested)
        rid = req.request_id
        t0 = time.perf_counter()
        acks: list[Ack] = []
        attempted: list[Target] = []
        failures: list[FailedAttempt] = []

        async def on_fallback(failed: Target, nxt: Target, err: GatewayError) -> None:
            failures.append(
                FailedAttempt(
                    alias=failed.alias,
                    provider=failed.provider,
                    model=failed.upstream_model,
                    error_code=err.code,
                )
            )  # type: ignore[arg-type]
            acks.append(await started.published())
            acks.append(
                await self.audit(
                    plan, "fallback_triggered", failed, err, reason=f"{err.message}; next: {nxt.label}"
                )
            )

        book = self.requests
        run = asyncio.create_task(self._attempts(plan, req, targets, attempted, on_fallback))
        book.running[rid] = run
        if rid in book.cancelled:
            run.cancel(book.cancelled.pop(rid))
        started = self.started(plan)
        try:
            outcome, error = await settle(run, rid, plan.total_ms, started.discard)
        finally:
            book.running.pop(rid, None)
        total_ms = (time.perf_counter() - t0) * 1000
        dep = outcome.deployment if outcome else (attempted[-1] if attempted else targets[0])
        acks += await self._publish(plan, req, targets, dep, outcome, error, total_ms, started, failures)
        await asyncio.gather(*acks)
        book.remember(book.finished, rid, None)

    async def _attempts(
        self,
        plan: ExecutionPlanned,
        req: EmbedRequested,
        targets: list[Target],
        attempted: list[Target],
        on_fallback: Callable[[Target, Target, GatewayError], Awaitable[None]],
    ) -> EmbedOutcome:
        """Each deployment in order, with ``plan.retries`` retries of retryable failures."""
        last: GatewayError | None = None
        for i, target in enumerate(targets):
            if i > 0 and last is not None:
                await on_fallback(targets[i - 1], target, last)
            attempted.append(target)
            for _ in range(plan.retries + 1):
                try:
                    adapter_for(target.kind, "embed")  # capability_not_supported before any HTTP
                    share = await self.batcher.embed(req, target)
                    return EmbedOutcome(share, target, i > 0)
                except GatewayError as err:
                    last = err
                    if not retryable(err):
                        break
        assert last is not None
        raise last

    async def _publish(
        self,
        plan: ExecutionPlanned,
        req: EmbedRequested,
        targets: list[Target],
        dep: Target,
        outcome: EmbedOutcome | None,
        error: GatewayError | None,
        total_ms: float,
        started: StartedAudit,
        failures: list[FailedAttempt],
    ) -> list[Ack]:
        ids = {
            "request_id": req.request_id,
            "tenant_id": req.tenant_id,
            "user_id": req.user_id,
            "operation": "embed",
        }
        if outcome is not None:
            share = outcome.share
            usage = share.usage
            result = ResultProduced(
                **ids,
                status="ok",
                output=EmbeddingsOutput(
                    data=[Embedding(index=i, embedding=v) for i, v in enumerate(share.vectors)]
                ),
                alias=dep.alias,
                provider=dep.provider,
                model=share.model or dep.upstream_model,
                fallback_used=outcome.fallback_used,
                fallback_from=targets[0].label if outcome.fallback_used else None,
                usage=usage,
                latency=Latency(total_ms=total_ms, provider_ms=share.provider_ms),
            )
        else:
            assert error is not None
            usage = None
            result = ResultProduced(
                **ids,
                status="error",
                alias=dep.alias,
                provider=dep.provider,
                model=dep.upstream_model,
                error=ErrorInfo(
                    code=error.code,  # type: ignore[arg-type]
                    message=error.message,
                    retryable=error.retryable,
                    param=error.param,
                    upstream_status=error.details.get("upstream_status"),
                ),
                latency=Latency(total_ms=total_ms),
            )
        record = usage_record(
            ids,
            req,
            dep,
            result.model,
            usage,
            error,
            total_ms,
            fallback_used=outcome.fallback_used if outcome else False,
            failures=failures,
        )
        status = record.status
        topic, partition = result_target(req, self.topics)
        action = "completed" if outcome else ("cancelled" if status == "cancelled" else "failed")
        return [
            await self.publisher.publish(topic, result, key=req.request_id, partition=partition),
            await self.publisher.publish(self.topics.usage.name, record, key=req.tenant_id),
            await started.published(),
            await self.audit(plan, action, dep, error),
        ]
