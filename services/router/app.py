"""Router service: ``llm.requests`` -> ``llm.exec``, or ``llm.media.in`` for a request with media (or a rejection to the caller).

State: the model catalog (the Model Registry's: the configuration's ``models``, or an HTTP
registry's, re-read every ``cache_ttl_s``) and per-deployment routing statistics (moving
averages of time to first token, recent failures, the executors' circuit breakers: ``stats.py``),
rebuilt at start from the last hour of ``llm.usage`` and ``llm.breakers`` before the first request
is read (``feed.py``).
Rate limits and budgets of governed tenants (``admission.py``): the router's group reads
``llm.requests`` and ``llm.usage`` with the range assignor, so the instance owning a tenant's
requests also sees its usage; the ledger of each owned partition is rebuilt from
``llm.ledger``, ``llm.admissions`` and ``llm.usage`` before its requests are admitted
(``keeper.py``). With no governed tenant, the router reads ``llm.requests`` alone.
"""

from __future__ import annotations

import asyncio
import logging

import pydantic
from aiokafka.structs import ConsumerRecord
from pydantic import TypeAdapter

from services.contracts.errors import GatewayError
from services.contracts.events import (
    AnyRequest,
    BatchRunRequested,
    ChatRequested,
    ErrorInfo,
    ExecutionPlanned,
    ModelsListRequested,
    RealtimeTurnRequested,
    RequestBase,
    ResultProduced,
    carries_media,
)
from services.runtime import metrics
from services.runtime.audit import audit_content
from services.runtime.config import GatewayConfig, load_config
from services.runtime.hooks import TenantHooks
from services.runtime.jobs import job_key, job_state
from services.runtime.kafka import Consumer, DeadLetters, Publisher, Subscription
from services.runtime.model_registry import model_registry
from services.runtime.plugins import NoopUsagePlugin, TenantPlugins, UsagePlugin
from services.runtime.replies import answer_invalid, reject, result_target
from services.runtime.request_log import RequestLog
from services.runtime.service import mark_ready
from services.runtime.settings import Settings
from services.runtime.topics import Topics, apply_topics
from services.runtime.types import type_registry

from .admission import Governor, Grant
from .discovery import answer_models
from .feed import StatsFeed
from .handlers import admit, plan
from .hooks import pre_call
from .keeper import LedgerKeeper
from .plugins import check_budget
from .settings import RouterSettings
from .stats import Key, RoutingStats, deployment_key
from .tools import registry_schemas

log = logging.getLogger(__name__)
GROUP = "llmgw-router"
REQUEST = TypeAdapter(AnyRequest)


class Router:
    def __init__(self, settings: Settings | RouterSettings, config: GatewayConfig, topics: Topics):
        own = RouterSettings.of(settings)
        self.settings = settings = own.runtime
        self.config = config
        self.topics = topics
        self.publisher = Publisher(settings.bootstrap_servers, client_id=f"router-{settings.instance_id}")
        self.types = type_registry(config.types, settings.config_path.parent)
        self.models = model_registry(config)
        self.stats = RoutingStats()
        self.hooks = TenantHooks.from_config(config)  # every tenant's hooks, built (and checked) at start
        self.request_log = RequestLog.of(settings, "router")
        self.feed = StatsFeed(
            settings.bootstrap_servers,
            [topics.usage.name, topics.breakers.name],  # outcomes, and the executors' circuit breakers
            self.stats,
            self._deployment,
            client_id=f"router-{settings.instance_id}-stats",
        )
        # rate limits and budgets: a ledger per owned partition holding a governed tenant
        self.governor = Governor(config, self.models.catalog)
        # tenants' own Usage plugins (entry points): asked at admission, told every usage
        self.usage_plugins: TenantPlugins[UsagePlugin] = TenantPlugins.build(
            config, "usage", NoopUsagePlugin()
        )
        self.keeper: LedgerKeeper | None = None
        subscriptions = {
            topics.requests.name: Subscription.of(
                REQUEST, self.handle, name="request", on_invalid=self.reject_invalid
            )
        }
        if self.governor.tenants:
            self.keeper = LedgerKeeper(
                settings.bootstrap_servers,
                topics,
                self.governor,
                self.publisher,
                client_id=f"router-{settings.instance_id}-ledger",
                usage_plugins=self.usage_plugins.custom,
            )
            subscriptions[topics.usage.name] = self.keeper.subscription()
        self.consumer: Consumer[RequestBase] = Consumer(
            bootstrap_servers=settings.bootstrap_servers,
            subscriptions=subscriptions,
            group_id=settings.topic_prefix + GROUP,
            dead_letters=DeadLetters(self.publisher, topics.dlq.name, "router"),
            on_assigned=self.keeper.on_assigned if self.keeper else None,
            on_revoked=self.keeper.on_revoked if self.keeper else None,
            max_in_flight=own.max_in_flight,
            assignor="range",  # partition i of llm.requests and of llm.usage on one instance
            client_id=f"router-{settings.instance_id}",
        )
        if self.keeper is not None:
            self.keeper.attach(self.consumer)

    async def start(self) -> None:
        await apply_topics(self.settings.bootstrap_servers, self.topics, create=False)
        await self.publisher.start()
        await self.feed.start()  # the statistics are rebuilt before the first request is planned
        if self.keeper is not None:
            self.keeper.start()
        await self.consumer.start()

    async def aclose(self) -> None:
        await self.consumer.aclose()
        if self.keeper is not None:
            await self.keeper.aclose()
        await self.feed.aclose()
        await self.publisher.aclose()
        await self.types.aclose()
        await self.models.aclose()
        await self.usage_plugins.aclose()

    def _deployment(self, alias: str, provider: str, model: str | None) -> Key | None:
        return deployment_key(self.models.catalog(), alias, provider, model)

    async def handle(self, req: AnyRequest, record: ConsumerRecord) -> None:
        try:
            if isinstance(req, ModelsListRequested):
                await answer_models(
                    self.publisher, self.topics, self.config, req, self.stats.health, self.models.catalog()
                )
                self.request_log.outcome(
                    request_id=req.request_id,
                    tenant=req.tenant_id,
                    user=req.user_id,
                    client_id=req.client_id,
                    operation=req.operation,
                    status="ok",
                )
                return
            # policies, then the tenant's pre-call hooks, before planning (the hooks' outcomes: .hooks)
            admit(req, self.config, raw_size=len(record.value or b""))
            # (a realtime turn carries no text for the hooks: the session's events are the provider's;
            # a provider batch carries no text: its items are in FileStorage, which hooks do not read)
            if (
                not isinstance(req, RealtimeTurnRequested | BatchRunRequested)
                and (chain := self.hooks.pre(req.tenant_id)) is not None
            ):
                checked = await pre_call(
                    chain, req, self.publisher, self.topics, self.request_log, audit_content(self.config, req)
                )
                if checked is None:
                    return  # blocked: answered and audited
                req = checked
            schemas = None
            if isinstance(req, ChatRequested) and req.params.tools:
                schemas = await registry_schemas(req.params.tools, self.types)
            execution = plan(
                req,
                self.config,
                raw_size=len(record.value or b""),
                tool_schemas=schemas,
                catalog=self.models.catalog(),
                stats=self.stats,
                admitted=True,
            )
            # a tenant's own Usage plugin, then the router's limits and budgets: after the plan,
            # which prices the reservation
            if (usage_plugin := self.usage_plugins.custom.get(req.tenant_id)) is not None:
                await check_budget(usage_plugin, execution, self.models.catalog())
            grant = self.keeper.admit(execution.request, execution, record.partition) if self.keeper else None
        except GatewayError as err:
            await self.reject(req, err)
            return
        if grant is not None:
            execution.ratelimit = grant.ratelimit
            metrics.ratelimit_left(grant.ratelimit)
        if isinstance(execution.request, RealtimeTurnRequested):  # admitted: answered, never executed
            await self._admitted_turn(execution, grant, record.partition)
            return
        # the plan and the admission record are enqueued back to back: one produce request. A plan
        # with media goes to the media-store first, which resolves it and sends it on to llm.exec
        topic = self.topics.media_in if carries_media(execution.request) else self.topics.exec
        if req.job:  # the job is pending before its plan exists: no later state can land before it
            pending = job_state(execution.request, "pending")
            await (await self.publisher.publish(self.topics.jobs.name, pending, key=job_key(pending)))
        futs = [await self.publisher.publish(topic.name, execution, key=req.request_id)]
        if grant is not None and self.keeper is not None:  # a grant comes from the keeper
            if (adm := await self.keeper.write(grant, record.partition)) is not None:
                futs.append(adm)
        await asyncio.gather(*futs)

    async def _admitted_turn(self, execution: ExecutionPlanned, grant: Grant | None, partition: int) -> None:
        """A Realtime turn's admission: an ``ok`` result (with the rate-limit figures), and the
        admission record of its reservation, both acknowledged."""
        req = execution.request
        topic, reply_partition = result_target(req, self.topics)
        result = ResultProduced(
            request_id=req.request_id,
            tenant_id=req.tenant_id,
            user_id=req.user_id,
            status="ok",
            operation=req.operation,
            alias=execution.deployments[0].alias,
            ratelimit=execution.ratelimit,
        )
        futs = [await self.publisher.publish(topic, result, key=req.request_id, partition=reply_partition)]
        if grant is not None and self.keeper is not None:
            if (adm := await self.keeper.write(grant, partition)) is not None:
                futs.append(adm)
        await asyncio.gather(*futs)

    async def reject(self, req: RequestBase, err: GatewayError) -> None:
        await reject(self.publisher, self.topics, req, err, "router", content=audit_content(self.config, req))
        if req.job:
            failed = job_state(req, "failed", error=ErrorInfo.of(err))
            await (await self.publisher.publish(self.topics.jobs.name, failed, key=job_key(failed)))
        self.request_log.rejected(req, err.code)
        metrics.rejected(req.operation, err.code)

    async def reject_invalid(self, record: ConsumerRecord, exc: pydantic.ValidationError) -> None:
        """A request that fails validation is already in the DLQ; if it says who asked and where
        to answer, the caller also hears why (``capability_not_supported`` for an operation
        nobody here knows, else ``validation_error`` naming the problem)."""
        await answer_invalid(self.publisher, self.topics, record, exc, actor="router")


async def serve(settings: Settings) -> None:
    config = load_config(settings.config_path, settings.env)
    topics = Topics.load(settings.topics_path, settings.topic_prefix)
    router = Router(RouterSettings.from_env(settings), config, topics)
    await router.start()
    mark_ready("router", settings)
    try:
        await asyncio.Event().wait()
    finally:
        await router.aclose()
