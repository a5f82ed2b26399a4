"""What the executor publishes once a plan has run, for any operation: the result (to the
caller), the usage record, the audit events, and the request-log line.

Everything here reads the plan's ``Attempts`` record and its ``Outcome`` (or error); nothing
is handed back to the attempts while they run. The events of one request are enqueued
without a loop turn between them, so they travel in one produce request and one ack.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import datetime
from typing import Protocol

from services.contracts.errors import GatewayError, InternalError, ResponseBlocked
from services.contracts.events import (
    MEDIA_OUT_OPERATIONS,
    AuditAction,
    ExecutionPlanned,
    JobUpdated,
    Latency,
    MediaProduced,
    ResultProduced,
    UsageRecorded,
)
from services.runtime.job_results import spill
from services.runtime.jobs import PROVIDER_JOBS, job_key, outcome_state
from services.runtime.kafka import Publisher
from services.runtime.replies import result_target
from services.runtime.request_log import RequestLog
from services.runtime.topics import Topics

from . import observed
from .attempts import Attempts
from .finished import marker
from .handlers import Outcome, error_info, usage_record
from .media import MediaIO
from .targets import Target

log = logging.getLogger(__name__)

Ack = asyncio.Future[object]
#: How long a request runs before its ``started`` audit event is published (see ``StartedAudit``).
STARTED_AUDIT_DELAY_S = 0.05


class Audit(Protocol):
    """``Executor._audit``: publish one audit event of ``plan``; the ack future."""

    def __call__(
        self,
        plan: ExecutionPlanned,
        action: AuditAction,
        dep: Target | None = None,
        error: GatewayError | None = None,
        reason: str | None = None,
        at: datetime | None = None,
        completion: str | None = None,
    ) -> Awaitable[Ack]: ...


class StartedAudit:
    """The ``started`` audit event of one request, published ``STARTED_AUDIT_DELAY_S`` after
    the start, or with the outcome when the request ends sooner.

    A short request then has nothing but its provider call between its plan and its
    result: the event's produce request, and the broker's work on it, would otherwise
    compete with the call for the CPU, and aiokafka sends one produce request per broker at a
    time, so the result could wait for the event's ack. The event keeps the start as
    ``occurred_at`` and still precedes the request's other audit events on its partition.
    """

    __slots__ = ("_audit", "_plan", "_at", "_timer", "_task")

    def __init__(self, audit: Audit, plan: ExecutionPlanned, at: datetime):
        self._audit = audit
        self._plan = plan
        self._at = at
        self._task: asyncio.Future[Ack] | None = None
        self._timer = asyncio.get_running_loop().call_later(STARTED_AUDIT_DELAY_S, self._publish_now)

    def _publish_now(self) -> None:
        self._task = asyncio.ensure_future(self._audit(self._plan, "started", at=self._at))

    async def published(self) -> Ack:
        """The event's ack future, publishing it now if the delay has not passed. Later
        calls return the same future (the event goes out once).

        Published inline, not in a task: the event then joins the produce request of the
        events enqueued just before it (the result and usage), not a second one after it."""
        if self._task is None:
            self._timer.cancel()
            self._task = asyncio.get_running_loop().create_future()
            try:
                ack = await self._audit(self._plan, "started", at=self._at)
            except BaseException as exc:
                self._task.set_exception(exc)
                self._task.exception()  # retrieved: the exception goes to this caller
                raise
            self._task.set_result(ack)
            return ack
        return await self._task

    def discard(self) -> None:
        """The process is stopping: the plan runs again elsewhere, and is started there."""
        self._timer.cancel()


class Outcomes:
    """Publishes the outputs of finished plans (one instance per executor)."""

    def __init__(
        self,
        *,
        publisher: Publisher,
        topics: Topics,
        audit: Audit,
        request_log: RequestLog,
        media: MediaIO | None = None,
        result_inline_max_bytes: int | None = None,
    ):
        self.result_inline_max_bytes = result_inline_max_bytes  # jobs.*; None: media.inline_max_bytes
        self.publisher = publisher
        self.topics = topics
        self.audit = audit
        self.request_log = request_log
        self.media = media

    def started(self, plan: ExecutionPlanned, attempts: Attempts) -> StartedAudit:
        return StartedAudit(self.audit, plan, attempts.started_at)

    async def publish(
        self,
        plan: ExecutionPlanned,
        outcome: Outcome | None,
        error: GatewayError | None,
        attempts: Attempts,
        started: StartedAudit,
        source: tuple[int, int] | None = None,
    ) -> list[Ack]:
        """Result, usage, ``started`` (unless already out), one ``fallback_triggered`` per
        deployment given up, the final audit event, and the plan's ``llm.finished`` marker when its
        ``source`` (``llm.exec`` partition, offset) is known; their ack futures."""
        req = plan.request
        if outcome is not None and outcome.error is not None:
            error = outcome.error  # the provider answered, the answer was refused: billed, then failed
        total_ms = attempts.elapsed_ms()
        result = result_event(plan, outcome, error, attempts, total_ms)
        usage = usage_event(plan, outcome, error, attempts, result, total_ms)
        self.request_log.executed(usage, req.api_key)
        observed.record(usage, attempts)
        topic, partition = result_target(req, self.topics)
        answer = await self._answer(plan, result)
        if not isinstance(answer, ResultProduced):  # media to store first: the media-store answers
            result_ack = await self.publisher.publish(self.topics.media_out.name, answer, key=req.request_id)
        elif req.job:  # a job: its final state (with the result) instead of an answer
            state = await self._spilled(outcome_state(req, answer, attempts.started_at))
            result_ack = await self.publisher.publish(self.topics.jobs.name, state, key=job_key(state))
        else:
            result_ack = await self.publisher.publish(topic, answer, key=req.request_id, partition=partition)
            if req.operation in PROVIDER_JOBS:  # its provider job is on llm.jobs: end it there too
                state = outcome_state(req, answer, attempts.started_at)
                await self.publisher.publish(self.topics.jobs.name, state, key=job_key(state))
        acks = [
            result_ack,
            await self.publisher.publish(self.topics.usage.name, usage, key=req.tenant_id),
            await started.published(),
            *await self._audits(plan, outcome, error, attempts, usage.status),
        ]
        if source is not None:
            done = marker(plan, *source, usage.status)
            finished = self.topics.finished.name
            acks.append(await self.publisher.publish(finished, done, key=req.request_id, partition=source[0]))
        return acks

    async def _spilled(self, state: JobUpdated) -> JobUpdated:
        """The job's record, its result in FileStorage when above the inline limit (``job_results``)."""
        if self.media is None or state.result is None:
            return state
        limit = self.result_inline_max_bytes
        if limit is None:
            limit = self.media.media.inline_max_bytes
        storage = await self.media.storage()
        return await spill(state, storage, limit, self.media.media.url_expiry_s)

    async def _answer(self, plan: ExecutionPlanned, result: ResultProduced) -> ResultProduced | MediaProduced:
        """The result, or for media answers the ``MediaProduced`` that takes it to the media-store
        (large media staged in S3 first; if that fails, the caller gets ``internal_error``, and
        the provider call is billed all the same)."""
        req = plan.request
        if result.status != "ok" or req.operation not in MEDIA_OUT_OPERATIONS or req.stream:
            return result
        if self.media is None:
            raise RuntimeError("an executor without FileStorage produced media")
        try:
            return await self.media.produced(plan, result)
        except Exception as exc:
            log.exception("staging the media of %s failed", req.request_id)
            err = InternalError(f"storing the generated media failed: {type(exc).__name__}: {exc}")
            return result.model_copy(update={"status": "error", "output": None, "error": error_info(err)})

    async def _audits(
        self,
        plan: ExecutionPlanned,
        outcome: Outcome | None,
        error: GatewayError | None,
        attempts: Attempts,
        status: str,
    ) -> list[Ack]:
        """One ``fallback_triggered`` per deployment given up, then the request's final audit event."""
        acks = []
        for failed, nxt in attempts.fallbacks():
            assert failed.error is not None
            why = f"{failed.error.message}; next: {nxt.label}"
            acks.append(
                await self.audit(plan, "fallback_triggered", failed.target, failed.error, why, failed.at)
            )
        action: AuditAction = (
            "completed" if error is None else ("cancelled" if status == "cancelled" else "failed")
        )
        reason = None
        if isinstance(error, ResponseBlocked):  # a post-response hook refused the answer
            action, reason = "blocked", error.details.get("rule")
        dep = outcome.deployment if outcome else attempts.last
        completion = outcome.message.content if outcome is not None and outcome.message else None
        acks.append(await self.audit(plan, action, dep, error, reason=reason, completion=completion))
        return acks


def usage_event(
    plan: ExecutionPlanned,
    outcome: Outcome | None,
    error: GatewayError | None,
    attempts: Attempts,
    result: ResultProduced,
    total_ms: float,
) -> UsageRecorded:
    """The request's ``llm.usage`` record: what the answering (or last tried) deployment reported."""
    req = plan.request
    return usage_record(
        req,
        outcome.deployment if outcome else attempts.last,
        result.model,
        outcome.usage if outcome else None,
        error,
        total_ms,
        ttft_ms=outcome.ttft_ms if outcome else None,
        fallback_used=result.fallback_used,
        failures=attempts.failures(),
        attempts=attempts.count,
    )


def result_event(
    plan: ExecutionPlanned,
    outcome: Outcome | None,
    error: GatewayError | None,
    attempts: Attempts,
    total_ms: float,
) -> ResultProduced:
    """The caller's answer: the outcome's message or output, or ``error`` (with the usage of
    an answer that was refused)."""
    req = plan.request
    dep = outcome.deployment if outcome else attempts.last
    fallback = outcome is not None and attempts.calls[-1].index > 0
    return ResultProduced(
        request_id=req.request_id,
        tenant_id=req.tenant_id,
        user_id=req.user_id,
        operation=req.operation,
        status="ok" if error is None else "error",
        message=outcome.message if outcome and error is None else None,
        output=outcome.output if outcome and error is None else None,
        finish_reason=outcome.finish_reason if outcome and error is None else None,  # type: ignore[arg-type]
        error=error_info(error) if error is not None else None,
        alias=dep.alias,
        provider=dep.provider,
        model=outcome.model if outcome else dep.upstream_model,
        fallback_used=fallback,
        fallback_from=attempts.planned[0].label if fallback else None,
        usage=outcome.usage if outcome else None,
        latency=Latency(
            ttft_ms=outcome.ttft_ms if outcome else None,
            total_ms=total_ms,
            provider_ms=outcome.provider_ms if outcome else None,
            queue_ms=attempts.queued_ms,
        ),
        attempts=attempts.count,
        streamed=req.stream,
        ratelimit=plan.ratelimit,
    )
