"""Media-store service: media in requests before they run, media in answers after.

* ``llm.media.in`` (plans whose request carries media, from the router) -> ``resolve.py`` ->
  the resolved plan on ``llm.exec``; a reference that is refused (``validation_error``,
  ``media_not_found``, ``payload_too_large``) answers the caller with that error, with an audit
  record and a usage record (status ``error``, nothing billed: it settles the router's
  reservation).
* ``llm.media.out`` (``MediaProduced``, from the executor) -> ``outputs.py`` -> the result, with
  stored media and presigned URLs, to the caller.

One consumer group (``llmgw-media-store``) reads both. Each output is acknowledged by the broker
before the record's offset is committed; a record handled twice (a restart between the two)
writes the same objects again (media ids come from the request id) and sends the same plan or
result again, which the executor (finished request ids) and the caller (one answer per request)
take once.

State: none. Objects are in S3 (bucket ``media.bucket``); a restarted media-store has nothing to
rebuild.
"""

from __future__ import annotations

import asyncio
import logging

import pydantic
from aiokafka.structs import ConsumerRecord

from services.contracts.errors import GatewayError
from services.contracts.events import (
    ErrorInfo,
    ExecutionPlanned,
    JobUpdated,
    MediaProduced,
    UsageRecorded,
    utcnow,
)
from services.runtime.config import GatewayConfig, load_config
from services.runtime.job_results import spill
from services.runtime.jobs import PROVIDER_JOBS, job_key, job_state
from services.runtime.kafka import Consumer, DeadLetters, Publisher, Subscription
from services.runtime.media.fetch import SafeFetcher
from services.runtime.media.storage import FileStorage, S3FileStorage
from services.runtime.replies import answer_invalid, reject
from services.runtime.service import mark_ready
from services.runtime.settings import Settings
from services.runtime.topics import Topics, apply_topics

from .outputs import Outputs
from .resolve import Resolver
from .settings import MediaStoreSettings

log = logging.getLogger(__name__)
GROUP = "llmgw-media-store"


class MediaStore:
    def __init__(
        self,
        settings: Settings | MediaStoreSettings,
        topics: Topics,
        config: GatewayConfig | None = None,
        storage: FileStorage | None = None,
        fetcher: SafeFetcher | None = None,
    ):
        own = settings if isinstance(settings, MediaStoreSettings) else MediaStoreSettings.from_env(settings)
        self.settings = rt = own.runtime
        self.topics = topics
        self.config = config or load_config(rt.config_path, rt.env)
        media = self.config.media
        self.storage: FileStorage = storage or S3FileStorage(media.bucket, endpoint_url=rt.s3_url)
        self.fetcher = fetcher or SafeFetcher(media.fetch, max_bytes=media.max_bytes)
        self.resolver = Resolver(self.config, self.storage, self.fetcher)
        self.outputs = Outputs(media, self.storage)
        cid = f"media-store-{rt.instance_id}"
        self.publisher = Publisher(rt.bootstrap_servers, client_id=cid)
        self.consumer: Consumer[pydantic.BaseModel] = Consumer(
            bootstrap_servers=rt.bootstrap_servers,
            group_id=rt.topic_prefix + GROUP,
            dead_letters=DeadLetters(self.publisher, topics.dlq.name, "media-store"),
            subscriptions={
                topics.media_in.name: Subscription.of(
                    ExecutionPlanned, self.resolve, name="ExecutionPlanned", on_invalid=self._invalid_plan
                ),
                topics.media_out.name: Subscription.of(MediaProduced, self.store, name="MediaProduced"),
            },
            max_in_flight=own.max_in_flight,
            client_id=cid,
        )

    async def start(self) -> None:
        await apply_topics(self.settings.bootstrap_servers, self.topics, create=False)
        await self.storage.start()
        await self.publisher.start()
        await self.consumer.start()

    async def aclose(self) -> None:
        await self.consumer.aclose()
        await self.publisher.aclose()
        await self.fetcher.aclose()
        await self.storage.aclose()

    async def resolve(self, plan: ExecutionPlanned, record: ConsumerRecord | None) -> None:
        try:
            resolved = await self.resolver.plan(plan)
        except GatewayError as err:
            await self.refuse(plan, err)
            return
        await (await self.publisher.publish(self.topics.exec.name, resolved, key=plan.request.request_id))

    async def refuse(self, plan: ExecutionPlanned, err: GatewayError) -> None:
        """Answer the caller with ``err``; the usage record (nothing billed) settles the request."""
        req = plan.request
        dep = plan.deployments[0]
        usage = UsageRecorded(
            request_id=req.request_id,
            tenant_id=req.tenant_id,
            user_id=req.user_id,
            status="error",
            operation=req.operation,
            alias=dep.alias,
            client_id=req.client_id,
            api_key=req.api_key,
            error_code=err.code,
            streamed=req.stream,
        )
        ack = await self.publisher.publish(self.topics.usage.name, usage, key=req.tenant_id)
        await reject(self.publisher, self.topics, req, err, "media-store", alias=dep.alias)
        if req.job:
            failed = job_state(req, "failed", error=ErrorInfo.of(err))
            await (await self.publisher.publish(self.topics.jobs.name, failed, key=job_key(failed)))
        await ack

    async def store(self, produced: MediaProduced, record: ConsumerRecord | None) -> None:
        result = await self.outputs.store(produced)
        if produced.job or result.operation in PROVIDER_JOBS:  # the job's final state, with its media
            state = JobUpdated(
                request_id=result.request_id,
                tenant_id=result.tenant_id,
                user_id=result.user_id,
                job_id=result.request_id,
                status="completed",
                operation=result.operation,
                model=result.alias,
                created_at=produced.occurred_at,  # the executor's times are in its running record
                started_at=produced.occurred_at,
                finished_at=utcnow(),
                result=result,
            )
            jobs, media = self.config.jobs, self.config.media
            limit = (
                media.inline_max_bytes
                if jobs.result_inline_max_bytes is None
                else jobs.result_inline_max_bytes
            )
            state = await spill(state, self.storage, limit, media.url_expiry_s)
            await (await self.publisher.publish(self.topics.jobs.name, state, key=job_key(state)))
            if produced.job:
                return
        topic, partition = self.topics.results.name, None
        if produced.reply_to is not None:
            topic, partition = produced.reply_to.topic, produced.reply_to.partition
        await (await self.publisher.publish(topic, result, key=result.request_id, partition=partition))

    async def _invalid_plan(self, record: ConsumerRecord, exc: pydantic.ValidationError) -> None:
        await answer_invalid(self.publisher, self.topics, record, exc, actor="media-store", inner="request")


async def serve(settings: Settings) -> None:
    topics = Topics.load(settings.topics_path, settings.topic_prefix)
    store = MediaStore(
        MediaStoreSettings.from_env(settings), topics, load_config(settings.config_path, settings.env)
    )
    await store.start()
    mark_ready("media-store", settings)
    try:
        await asyncio.Event().wait()
    finally:
        await store.aclose()
