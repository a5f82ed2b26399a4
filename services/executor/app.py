"""Provider-executor service: ``llm.exec`` -> provider HTTP -> chunks, result, usage, audit.

Every output of a request is acknowledged by the broker before its ``llm.exec``
offset is committed. Cancels arrive on ``llm.control``, read in full by every
instance (no consumer group) from the moment it starts.

Plans name deployments only; the provider URL, credential and price come from this
process's configuration (``targets.py``), and a plan naming anything else is dead-lettered.
Each operation has its runner: chat here, embeddings in ``embed.py``.

State: the ids of requests finished recently (so a redelivered plan is not sent to
a provider twice while this process lives) and the tasks in flight. Neither
survives a restart; after one, plans not yet committed are run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Coroutine
from datetime import datetime
from typing import Any

import pydantic
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from services.contracts.errors import GatewayError, ResponseBlocked
from services.contracts.events import (
    AuditRecorded,
    CancelRequested,
    ExecutionPlanned,
    Latency,
    RateLimitInfo,
    ResultProduced,
    utcnow,
)
from services.runtime.audit import audit_content
from services.runtime.config import GatewayConfig, load_config
from services.runtime.hooks import TenantHooks
from services.runtime.kafka import Consumer, DeadLetter, DeadLetters, Publisher
from services.runtime.replies import answer_invalid, chunk_target, result_target
from services.runtime.request_log import RequestLog, UsageLogging
from services.runtime.service import mark_ready
from services.runtime.settings import Settings
from services.runtime.topics import Topics, apply_topics

from .chunker import ChunkEmitter
from .embed import EmbedRunner, Requests
from .handlers import Attempted, Outcome, chunk_template, error_info, execute, settle, usage_record
from .hooks import check_answer, response_guard
from .providers.transport import AiohttpTransport, HttpTransport
from .targets import Target, Targets

log = logging.getLogger(__name__)
GROUP = "llmgw-executor"
RECENT = 100_000
#: How long a request runs before its ``started`` audit event is published (see ``_StartedAudit``).
STARTED_AUDIT_DELAY_S = 0.05


class Executor:
    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        config: GatewayConfig | None = None,
        http: HttpTransport | None = None,
    ):
        self.settings = settings
        self.topics = topics
        self.config = config or load_config(settings.config_path, settings.env)
        self.targets = Targets(self.config)
        self.hooks = TenantHooks.from_config(self.config)  # post-response hooks per tenant, built at start
        self.request_log = RequestLog.of(settings, "executor")
        self._api_keys: dict[str, str] = {}  # embed requests in flight that name their API key
        self._ratelimits: dict[str, RateLimitInfo] = {}  # embed plans in flight with rate-limit numbers
        self.http: HttpTransport = http or _transport(settings)
        cid = f"executor-{settings.instance_id}"
        self.publisher = Publisher(settings.bootstrap_servers, client_id=cid)
        self.consumer: Consumer[ExecutionPlanned] = Consumer(
            bootstrap_servers=settings.bootstrap_servers,
            topics=[topics.exec.name],
            group_id=settings.topic_prefix + GROUP,
            model=ExecutionPlanned,
            handler=self.handle,
            dead_letters=DeadLetters(self.publisher, topics.dlq.name, "executor"),
            on_invalid=self.reject_invalid,
            max_in_flight=settings.max_in_flight,
            client_id=cid,
        )
        self._running: dict[str, asyncio.Task[Outcome]] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._cancelled: OrderedDict[str, str] = OrderedDict()
        self._control = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers, client_id=cid, enable_auto_commit=False
        )
        self._control_task: asyncio.Task[None] | None = None
        self.embed = EmbedRunner(
            publisher=UsageLogging(
                _RateLimited(self.publisher, self._ratelimits),  # type: ignore[arg-type]
                topics.usage.name,
                self.request_log,
                self._api_keys,
            ),
            topics=topics,
            http=self.http,
            secret=settings.secret,
            window_ms=self.config.defaults.embed_batch_window_ms,
            audit=self._audit,
            started=lambda plan: _StartedAudit(self, plan),
            requests=Requests(self._running, self._finished, self._cancelled, _remember),  # type: ignore[arg-type]
        )

    async def start(self) -> None:
        await apply_topics(self.settings.bootstrap_servers, self.topics, create=False)
        await self.publisher.start()
        await self._control.start()
        parts = self._control.partitions_for_topic(self.topics.control.name) or set()
        if not parts:
            await self._control._client.force_metadata_update()
            parts = self._control.partitions_for_topic(self.topics.control.name) or {0}
        tps = [TopicPartition(self.topics.control.name, p) for p in parts]
        self._control.assign(tps)
        await self._control.seek_to_end(*tps)
        self._control_task = asyncio.create_task(self._read_control())
        await self.consumer.start()

    async def aclose(self) -> None:
        await self.consumer.aclose()
        if self._control_task:
            self._control_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._control_task
        await self._control.stop()
        await self.embed.aclose()
        await self.publisher.aclose()
        await self.http.aclose()

    # --- control -------------------------------------------------------------------

    async def _read_control(self) -> None:
        while True:
            batches = await self._control.getmany(timeout_ms=1000)
            for records in batches.values():
                for r in records:
                    try:
                        cancel = CancelRequested.model_validate_json(r.value or b"")
                    except ValueError:
                        log.warning("ignoring invalid control event at offset %d", r.offset)
                        continue
                    self.cancel(cancel.request_id, cancel.reason)

    def cancel(self, request_id: str, reason: str) -> None:
        """Cancel a request in flight here; remember it in case its plan is still on the way."""
        task = self._running.get(request_id)
        if task is not None:
            task.cancel(reason)
        elif request_id not in self._finished:
            _remember(self._cancelled, request_id, reason)

    # --- execution -------------------------------------------------------------------

    async def reject_invalid(self, record: ConsumerRecord, exc: pydantic.ValidationError) -> None:
        """A plan that does not decode is already in the DLQ; its caller (if the plan says who
        and where) hears why: ``capability_not_supported`` for an operation this executor does
        not know, else ``validation_error``."""
        await answer_invalid(self.publisher, self.topics, record, exc, actor="executor", inner="request")

    async def handle(self, plan: ExecutionPlanned, record: ConsumerRecord) -> None:
        req = plan.request
        rid = req.request_id
        if rid in self._finished or rid in self._running:
            return  # redelivered while its first run finished or is still going: run once
        targets = self.targets.resolve(plan)  # DeadLetter: the plan names what we do not have
        if req.operation == "chat":
            await self._chat(plan, targets)
        elif req.operation == "embed":
            if key := getattr(req, "api_key", None):
                self._api_keys[rid] = key
            if plan.ratelimit is not None:
                self._ratelimits[rid] = plan.ratelimit
            try:
                await self.embed.run(plan, targets)
            finally:
                self._api_keys.pop(rid, None)
                self._ratelimits.pop(rid, None)
        else:  # the plan's type admits only executable operations
            raise DeadLetter(f"operation {req.operation!r} has no runner in this executor")

    async def _chat(self, plan: ExecutionPlanned, targets: list[Target]) -> None:
        req = plan.request
        rid = req.request_id
        t0 = time.perf_counter()
        acks: list[asyncio.Future[object]] = []
        emitter = None
        post = self.hooks.post(req.tenant_id)  # None: the tenant has no post-response hooks
        check = None
        if req.stream:
            topic, partition = chunk_target(req, self.topics)

            async def send(chunk):  # type: ignore[no-untyped-def]
                return await self.publisher.publish(topic, chunk, key=rid, partition=partition)

            guard = response_guard(post, req) if post is not None else None  # type: ignore[arg-type]
            template = chunk_template(plan)
            template.ratelimit = plan.ratelimit  # on the first chunk: the edge's response head
            emitter = ChunkEmitter(send, template, plan.chunk_window_ms, guard)
        elif post is not None:
            check = functools.partial(check_answer, post, req)
        attempted = Attempted(emitter=emitter)

        async def on_fallback(failed: Target, nxt: Target, err: GatewayError) -> None:
            attempted.failed(failed, err)
            acks.append(await started.published())
            acks.append(
                await self._audit(
                    plan, "fallback_triggered", failed, err, reason=f"{err.message}; next: {nxt.label}"
                )
            )

        run = asyncio.create_task(
            execute(plan, targets, self.http, self.settings.secret, emitter, attempted, on_fallback, check)
        )
        self._running[rid] = run
        if rid in self._cancelled:
            run.cancel(self._cancelled.pop(rid))
        started = _StartedAudit(self, plan)
        try:
            outcome, error = await settle(run, rid, plan.total_ms, started.discard)
        finally:
            self._running.pop(rid, None)
            if emitter is not None:
                emitter.cancel_timer()
        total_ms = (time.perf_counter() - t0) * 1000
        if emitter is not None:
            acks += emitter.acks
        acks += await self._publish_outcome(plan, targets, outcome, error, attempted, total_ms, started)
        await asyncio.gather(*acks)
        _remember(self._finished, rid, None)

    async def _publish_outcome(
        self,
        plan: ExecutionPlanned,
        targets: list[Target],
        outcome: Outcome | None,
        error: GatewayError | None,
        attempted: Attempted,
        total_ms: float,
        started: _StartedAudit,
    ) -> list[asyncio.Future[object]]:
        req = plan.request
        ids = {
            "request_id": req.request_id,
            "tenant_id": req.tenant_id,
            "user_id": req.user_id,
            "operation": req.operation,
        }
        dep = outcome.deployment if outcome else attempted.deployment or targets[0]
        if outcome is not None and outcome.error is not None:
            error = outcome.error  # the provider answered, the answer was refused: billed, then failed
        if error is None:
            assert outcome is not None
            result = ResultProduced(
                **ids,
                status="ok",
                message=outcome.message,
                finish_reason=outcome.finish_reason,  # type: ignore[arg-type]
                alias=dep.alias,
                provider=dep.provider,
                model=outcome.model,
                fallback_used=outcome.fallback_used,
                fallback_from=targets[0].label if outcome.fallback_used else None,
                usage=outcome.usage,
                latency=Latency(ttft_ms=outcome.ttft_ms, total_ms=total_ms, provider_ms=outcome.provider_ms),
                streamed=req.stream,
                ratelimit=plan.ratelimit,
            )
        else:
            result = ResultProduced(
                **ids,
                status="error",
                alias=dep.alias,
                provider=dep.provider,
                model=outcome.model if outcome else dep.upstream_model,
                error=error_info(error),
                fallback_used=outcome.fallback_used if outcome else False,
                fallback_from=targets[0].label if outcome and outcome.fallback_used else None,
                usage=outcome.usage if outcome else None,
                latency=Latency(
                    ttft_ms=outcome.ttft_ms if outcome else None,
                    total_ms=total_ms,
                    provider_ms=outcome.provider_ms if outcome else None,
                ),
                streamed=req.stream,
                ratelimit=plan.ratelimit,
            )
        usage = outcome.usage if outcome else None
        record = usage_record(
            ids,
            req,
            dep,
            result.model,
            usage,
            error,
            total_ms,
            ttft_ms=outcome.ttft_ms if outcome else None,
            fallback_used=outcome.fallback_used if outcome else False,
            failures=attempted.failures,
        )
        status = record.status
        topic, partition = result_target(req, self.topics)
        action = "completed" if error is None else ("cancelled" if status == "cancelled" else "failed")
        reason = None
        if isinstance(error, ResponseBlocked):  # a post-response hook refused the answer
            action, reason = "blocked", error.details.get("rule")
        self.request_log.executed(record, getattr(req, "api_key", None))
        return [
            await self.publisher.publish(topic, result, key=req.request_id, partition=partition),
            await self.publisher.publish(self.topics.usage.name, record, key=req.tenant_id),
            await started.published(),
            await self._audit(
                plan,
                action,
                dep,
                error,
                reason=reason,
                completion=outcome.message.content if outcome is not None else None,
            ),
        ]

    async def _audit(
        self,
        plan: ExecutionPlanned,
        action: str,
        dep: Target | None = None,
        error: GatewayError | None = None,
        reason: str | None = None,
        at: datetime | None = None,
        completion: str | None = None,
    ) -> asyncio.Future[object]:
        """One audit record of ``plan``'s request; ``content`` (its text and ``completion``) only
        for a tenant whose policy includes content (``services/runtime/audit.py``)."""
        req = plan.request
        dep = dep or self.targets.one(plan.deployments[0])
        event = AuditRecorded(
            occurred_at=at or utcnow(),
            request_id=req.request_id,
            tenant_id=req.tenant_id,
            user_id=req.user_id,
            action=action,  # type: ignore[arg-type]
            operation=req.operation,
            actor="executor",
            alias=dep.alias,
            provider=dep.provider,
            model=dep.upstream_model,
            client_id=req.client_id,
            error_code=error.code if error else None,  # type: ignore[arg-type]
            reason=reason or (error.message if error else None),
            content=audit_content(self.config, req, completion),
        )
        return await self.publisher.publish(self.topics.audit.name, event, key=req.tenant_id)


class _StartedAudit:
    """The ``started`` audit event of one request, published ``STARTED_AUDIT_DELAY_S`` after
    the start, or with the outcome when the request ends sooner.

    A short request then has nothing but its provider call between its plan and its
    result: the event's produce request, and the broker's work on it, would otherwise
    compete with the call for the CPU, and aiokafka sends one produce request per broker at a
    time, so the result could wait for the event's ack. The event keeps the start as
    ``occurred_at`` and still precedes the request's other audit events on its partition.
    """

    __slots__ = ("_executor", "_plan", "_at", "_timer", "_task")

    def __init__(self, executor: Executor, plan: ExecutionPlanned):
        self._executor = executor
        self._plan = plan
        self._at = utcnow()
        self._task: asyncio.Future[asyncio.Future[object]] | None = None
        self._timer = asyncio.get_running_loop().call_later(STARTED_AUDIT_DELAY_S, self._publish_now)

    def _send(self) -> Coroutine[None, None, asyncio.Future[object]]:
        return self._executor._audit(self._plan, "started", at=self._at)

    def _publish_now(self) -> None:
        self._task = asyncio.create_task(self._send())

    async def published(self) -> asyncio.Future[object]:
        """The event's ack future, publishing it now if the delay has not passed. Later
        calls return the same future (the event goes out once).

        Published inline, not in a task: the event then joins the produce request of the
        events enqueued just before it (the result and usage), not a second one after it."""
        if self._task is None:
            self._timer.cancel()
            self._task = asyncio.get_running_loop().create_future()
            try:
                ack = await self._send()
            except BaseException as exc:
                self._task.set_exception(exc)
                self._task.exception()  # retrieved: the exception goes to this caller
                raise
            self._task.set_result(ack)
            return ack
        return await self._task

    def discard(self) -> None:
        self._timer.cancel()


class _RateLimited:
    """The embeddings runner's publisher: the result of a plan with rate-limit numbers carries
    them (``ResultProduced.ratelimit``), as chat results do."""

    def __init__(self, publisher: Publisher, ratelimits: dict[str, RateLimitInfo]):
        self._publisher, self._ratelimits = publisher, ratelimits

    async def publish(self, topic: str, event: Any, **kw: Any) -> asyncio.Future[object]:
        if isinstance(event, ResultProduced) and event.ratelimit is None:
            event.ratelimit = self._ratelimits.get(event.request_id)
        return await self._publisher.publish(topic, event, **kw)


def _transport(settings: Settings) -> HttpTransport:
    """The one provider client: aiohttp, a pool of at most ``LLMGW_PROVIDER_MAX_CONNECTIONS``
    connections, honouring ``HTTP(S)_PROXY`` / ``NO_PROXY`` with ``LLMGW_PROVIDER_TRUST_ENV=1``."""
    return AiohttpTransport(
        trust_env=settings.provider_trust_env, max_connections=settings.provider_max_connections
    )


def _remember(store: OrderedDict[str, object], key: str, value: object) -> None:
    store[key] = value
    if len(store) > RECENT:
        store.popitem(last=False)


async def serve(settings: Settings) -> None:
    topics = Topics.load(settings.topics_path, settings.topic_prefix)
    executor = Executor(settings, topics, load_config(settings.config_path, settings.env))
    await executor.start()
    mark_ready("executor", settings)
    try:
        await asyncio.Event().wait()
    finally:
        await executor.aclose()
