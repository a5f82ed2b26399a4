"""Provider-executor service: ``llm.exec`` -> provider HTTP -> chunks, result, usage, audit.

Every output of a request is acknowledged by the broker before its ``llm.exec``
offset is committed. Cancels arrive on ``llm.control``, read in full by every
instance (no consumer group) from the moment it starts.

Plans name deployments only; the provider URL, credential and price come from this
process's configuration (``targets.py``), and a plan naming anything else is dead-lettered.
Each operation has its runner (``chat.py``, ``embed.py``, ``images.py``, ``speech.py``,
``transcribe.py``, ``video.py``, ``batch_run.py``); a plan whose request carries media gets its bytes from S3 first
(``media.py``), and a media answer goes to ``llm.media.out`` for the media-store to store; ``attempts.py`` tries the plan's
deployments and keeps the record of what was tried, which ``outcome.py`` publishes from.

State: the ids of requests finished recently (a redelivered plan whose id is there is committed
without running) and the tasks in flight. What finished is also on ``llm.finished``, read back
for each ``llm.exec`` partition as it is assigned, before its plans are served (``finished.py``):
a plan redelivered after a restart is not sent to a provider again either.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections import OrderedDict
from datetime import datetime
from typing import Protocol, TypeVar, runtime_checkable

import pydantic
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from services.contracts.errors import GatewayError
from services.contracts.events import (
    AuditAction,
    AuditRecorded,
    CancelRequested,
    ExecutionPlanned,
    carries_media,
    utcnow,
)
from services.runtime.audit import audit_content
from services.runtime.config import GatewayConfig, load_config
from services.runtime.hooks import TenantHooks
from services.runtime.jobs import JobsView, job_key, job_state
from services.runtime.kafka import Consumer, DeadLetter, DeadLetters, Publisher, validation_reason
from services.runtime.media.storage import FileStorage, S3FileStorage
from services.runtime.replies import answer_invalid
from services.runtime.request_log import RequestLog
from services.runtime.service import mark_ready
from services.runtime.settings import Settings
from services.runtime.tail import Malformed, Tail
from services.runtime.topics import Topics, apply_topics

from . import observed
from .attempts import Attempts, Deadline, RetryPolicy, Until, attempt, queued_ms
from .batch_run import BatchRunner
from .breaker import Breakers
from .chat import ChatRunner
from .embed import EmbedRunner
from .finished import Finished, check_partitions
from .handlers import Outcome, settle
from .images import ImagesRunner
from .media import MediaIO
from .outcome import Outcomes
from .providers.transport import AiohttpTransport, HttpTransport
from .realtime import RealtimeSessions
from .settings import ExecutorSettings
from .speech import SpeechRunner
from .targets import Target, Targets
from .transcribe import TranscribeRunner
from .video import VideoRunner

log = logging.getLogger(__name__)
GROUP = "llmgw-executor"
RECENT = 100_000
V = TypeVar("V")


class PlanCall(Protocol):
    """One plan's provider calls, as a runner starts them (``ChatCall``, ``EmbedCall``)."""

    @property
    def acks(self) -> list[asyncio.Future[object]]: ...

    def prepare(self) -> None: ...

    def close(self) -> None: ...

    async def __call__(self, target: Target, fallback_from: Target | None, until: Until) -> Outcome: ...


@runtime_checkable
class CancelledAtProvider(Protocol):
    """A call whose cancel is its own: a provider batch is cancelled at the provider and polled
    until it has ended, so the run still publishes what its items did (``batch_run.py``)."""

    def cancel_at_provider(self, reason: str) -> None: ...


class Runner(Protocol):
    def start(self, plan: ExecutionPlanned) -> PlanCall: ...


class Executor:
    def __init__(
        self,
        settings: Settings | ExecutorSettings,
        topics: Topics,
        config: GatewayConfig | None = None,
        http: HttpTransport | None = None,
        publisher: Publisher | None = None,
        storage: FileStorage | None = None,
    ):
        own = ExecutorSettings.of(settings)
        self.settings = settings = own.runtime
        self._exit_after_publish = own.fault_exit_after_publish
        self.topics = topics
        self.config = config or load_config(settings.config_path, settings.env)
        self.targets = Targets(self.config)
        self.hooks = TenantHooks.from_config(self.config)  # post-response hooks per tenant, built at start
        self.request_log = RequestLog.of(settings, "executor")
        self.http: HttpTransport = http or _transport(own)
        cid = f"executor-{settings.instance_id}"
        self.publisher = publisher or Publisher(settings.bootstrap_servers, client_id=cid)
        self.consumer: Consumer[ExecutionPlanned] = Consumer(
            bootstrap_servers=settings.bootstrap_servers,
            topics=[topics.exec.name],
            group_id=settings.topic_prefix + GROUP,
            model=ExecutionPlanned,
            handler=self.handle,
            dead_letters=DeadLetters(self.publisher, topics.dlq.name, "executor"),
            on_invalid=self.reject_invalid,
            on_assigned=self._assigned,
            on_revoked=self._revoked,
            max_in_flight=own.max_in_flight,
            client_id=cid,
        )
        check_partitions(topics)
        self.finished = Finished(
            bootstrap_servers=settings.bootstrap_servers,
            topics=topics,
            consumer=self.consumer,
            remember=lambda rid: _remember(self._finished, rid, None),
            client_id=cid,
        )
        self.control = Tail(
            settings.bootstrap_servers,
            topics.control.name,
            self._on_control,
            partitions=range(topics.control.partitions),
            client_id=cid,
            dead_letters=DeadLetters(self.publisher, topics.dlq.name, cid),
        )
        self._running: dict[str, asyncio.Task[Outcome]] = {}
        self._calls: dict[str, PlanCall] = {}  # the calls of the plans in flight
        self._finished: OrderedDict[str, None] = OrderedDict()
        #: request id -> (tenant, reason) of cancels that came before their plan
        self._cancelled: OrderedDict[str, tuple[str, str]] = OrderedDict()
        #: request id -> tenant of the plans in flight (a cancel names its tenant)
        self._owners: dict[str, str] = {}
        # jobs' provider-side work (a video submitted before a restart is polled, not resubmitted)
        self.jobs = JobsView(
            settings.bootstrap_servers,
            topics,
            retention_s=self.config.jobs.retention_s,
            client_id=f"{cid}-jobs",
        )
        self.embed = EmbedRunner(
            http=self.http, secret=settings.secret, window_ms=self.config.defaults.embed_batch_window_ms
        )
        self.chat = ChatRunner(
            publisher=self.publisher, topics=topics, http=self.http, secret=settings.secret, hooks=self.hooks
        )
        self._runners: dict[str, Runner] = {
            "chat": self.chat,
            "embed": self.embed,
            "image.generate": ImagesRunner(http=self.http, secret=settings.secret),
            "audio.speech": SpeechRunner(
                publisher=self.publisher, topics=topics, http=self.http, secret=settings.secret
            ),
            "audio.transcribe": TranscribeRunner(http=self.http, secret=settings.secret),
            "video.generate": VideoRunner(
                http=self.http,
                secret=settings.secret,
                publisher=self.publisher,
                topics=topics,
                jobs=self.jobs,
                config=self.config.jobs,
            ),
        }
        self.breakers = Breakers(
            bootstrap_servers=settings.bootstrap_servers,
            topics=topics,
            publisher=self.publisher,
            instance=cid,
            defaults=self.config.defaults.breaker,
        )
        media = self.config.media
        self.media = MediaIO(media, storage or S3FileStorage(media.bucket, endpoint_url=settings.s3_url))
        self._runners["batch.run"] = BatchRunner(
            http=self.http,
            secret=settings.secret,
            publisher=self.publisher,
            topics=topics,
            jobs=self.jobs,
            config=self.config,
            media=self.media,
            bootstrap_servers=settings.bootstrap_servers,
            client_id=f"{cid}-batches",
            exit_mid_batch=own.fault_exit_mid_batch,
        )
        self.outcomes = Outcomes(
            publisher=self.publisher,
            topics=topics,
            audit=self._audit,
            request_log=self.request_log,
            media=self.media,
            result_inline_max_bytes=self.config.jobs.result_inline_max_bytes,
        )

        self.realtime = RealtimeSessions(
            settings,
            topics,
            self.config,
            self.targets,
            self.publisher,
            media=self.media,
            max_session_s=self.config.defaults.realtime_max_session_s,
            idle_s=self.config.defaults.realtime_idle_s,
        )

    async def start(self) -> None:
        await apply_topics(self.settings.bootstrap_servers, self.topics, create=False)
        await self.publisher.start()
        await self.control.start()
        await self.breakers.start()  # every circuit's state, read back before a plan is served
        await self.jobs.start()  # every job's provider-side work, read back before a plan is served
        await self.consumer.start()
        await self.realtime.start()
        gc.freeze()  # start-up's objects out of the collector's scans: shorter pauses per frame

    async def aclose(self) -> None:
        await self.realtime.aclose()
        await self.consumer.aclose()
        await self.finished.aclose()
        await self.control.aclose()
        await self.breakers.aclose()
        await self.jobs.aclose()
        await self.embed.aclose()
        await self.publisher.aclose()
        await self.http.aclose()
        await self.media.aclose()

    def _assigned(self, tps: set[TopicPartition]) -> None:
        self.finished.on_assigned(tps)  # held until what finished there is read back

    async def _revoked(self, tps: set[TopicPartition]) -> None:
        await self.finished.on_revoked(tps)

    # --- control -------------------------------------------------------------------

    def _on_control(self, record: ConsumerRecord) -> None:
        try:
            cancel = CancelRequested.model_validate_json(record.value or b"")
        except pydantic.ValidationError as exc:
            raise Malformed(f"CancelRequested: {validation_reason(exc)}") from exc
        self.cancel(cancel.request_id, cancel.reason, cancel.tenant_id)

    def cancel(self, request_id: str, reason: str, tenant_id: str) -> None:
        """Cancel a request in flight here, if it is ``tenant_id``'s (a cancel naming another
        tenant is ignored: request ids can be chosen by callers); remember it in case its plan is
        still on the way."""
        task = self._running.get(request_id)
        if task is not None:
            if self._owners.get(request_id) == tenant_id:
                _stop(task, self._calls.get(request_id), reason)
            else:
                log.warning("ignoring a cancel of %s naming another tenant", request_id)
        elif request_id not in self._finished:
            _remember(self._cancelled, request_id, (tenant_id, reason))

    # --- execution -------------------------------------------------------------------

    async def reject_invalid(self, record: ConsumerRecord, exc: pydantic.ValidationError) -> None:
        """A plan that does not decode is already in the DLQ; its caller (if the plan says who
        and where) hears why: ``capability_not_supported`` for an operation this executor does
        not know, else ``validation_error``."""
        await answer_invalid(self.publisher, self.topics, record, exc, actor="executor", inner="request")

    async def handle(self, plan: ExecutionPlanned, record: ConsumerRecord | None) -> None:
        """Run one plan: its attempts in a task of their own (a cancel stops it), under the total
        deadline; then its outputs, all acknowledged before this returns (and the plan commits)."""
        rid = plan.request.request_id
        if rid in self._finished or rid in self._running:
            return  # redelivered while its first run finished or is still going: run once
        attempts = Attempts(self.targets.resolve(plan))  # DeadLetter: the plan names what we do not have
        runner = self._runners.get(plan.request.operation)
        if runner is None:  # the plan's type admits only executable operations
            raise DeadLetter(f"operation {plan.request.operation!r} has no runner in this executor")
        attempts.queued_ms = queued_ms(plan, attempts)
        deadline = Deadline.of(plan, attempts.queued_ms)  # time queued in llm.exec counts
        call = runner.start(plan)
        run = asyncio.create_task(self._attempts(plan, call, attempts, deadline))
        self._running[rid] = run
        self._calls[rid] = call
        self._owners[rid] = plan.request.tenant_id
        if rid in self._cancelled:
            tenant, reason = self._cancelled.pop(rid)
            if tenant == plan.request.tenant_id:
                _stop(run, call, reason)
            else:
                log.warning("ignoring a cancel of %s naming another tenant", rid)
        started = self.outcomes.started(plan, attempts)
        if plan.request.job:  # the job runs: acknowledged before anything can end it
            running = job_state(plan.request, "running", started_at=attempts.started_at)
            await (await self.publisher.publish(self.topics.jobs.name, running, key=job_key(running)))
        try:
            outcome, error = await settle(run, rid, deadline.at, plan.total_ms)
        except asyncio.CancelledError:  # this process is stopping: the plan runs again elsewhere
            started.discard()
            raise
        finally:
            self._running.pop(rid, None)
            self._calls.pop(rid, None)
            self._owners.pop(rid, None)
            call.close()
        source = (record.partition, record.offset) if record is not None else None
        acks = call.acks + await self.outcomes.publish(plan, outcome, error, attempts, started, source)
        await asyncio.gather(*acks)
        _remember(self._finished, rid, None)
        if rid == self._exit_after_publish:  # a test's fault point: outputs acknowledged, not committed
            log.warning("LLMGW_FAULT_EXIT_AFTER_PUBLISH: exiting after the outputs of %s", rid)
            os._exit(137)

    async def _attempts(
        self, plan: ExecutionPlanned, call: PlanCall, attempts: Attempts, deadline: Deadline
    ) -> Outcome:
        if carries_media(plan.request):  # the bytes of media too large to travel inline
            plan.request = await self.media.materialise(plan.request)  # in this process only
        call.prepare()  # may fail the request before any provider call
        policy = RetryPolicy.of(self.config.defaults, plan)
        return await attempt(attempts, policy, deadline, observed.traced(plan, call), self.breakers)

    async def _audit(
        self,
        plan: ExecutionPlanned,
        action: AuditAction,
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
            action=action,
            operation=req.operation,
            actor="executor",
            alias=dep.alias,
            provider=dep.provider,
            model=dep.upstream_model,
            client_id=req.client_id,
            error_code=error.code if error else None,
            reason=reason or (error.message if error else None),
            content=audit_content(self.config, req, completion),
        )
        return await self.publisher.publish(self.topics.audit.name, event, key=req.tenant_id)


def _transport(settings: ExecutorSettings) -> HttpTransport:
    """The one provider client: aiohttp, a pool of at most ``LLMGW_PROVIDER_MAX_CONNECTIONS``
    connections, honouring ``HTTP(S)_PROXY`` / ``NO_PROXY`` with ``LLMGW_PROVIDER_TRUST_ENV=1``."""
    return AiohttpTransport(
        trust_env=settings.provider_trust_env, max_connections=settings.provider_max_connections
    )


def _stop(task: asyncio.Task[Outcome], call: PlanCall | None, reason: str) -> None:
    """Cancel a plan in flight: its task, or for a call that cancels itself, the call."""
    if isinstance(call, CancelledAtProvider):
        call.cancel_at_provider(reason)
    else:
        task.cancel(reason)


def _remember(store: OrderedDict[str, V], key: str, value: V) -> None:
    store[key] = value
    if len(store) > RECENT:
        store.popitem(last=False)


async def serve(settings: Settings) -> None:
    topics = Topics.load(settings.topics_path, settings.topic_prefix)
    executor = Executor(
        ExecutorSettings.from_env(settings), topics, load_config(settings.config_path, settings.env)
    )
    await executor.start()
    mark_ready("executor", settings)
    try:
        await asyncio.Event().wait()
    finally:
        await executor.aclose()
