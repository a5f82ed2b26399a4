"""Router service: ``llm.requests`` -> ``llm.exec`` (or a rejection to the caller).

State: none beyond the configuration (rate limits and budgets arrive with their
issue and are rebuilt from ``llm.usage``, co-partitioned with ``llm.requests``).
"""

from __future__ import annotations

import asyncio
import logging

import orjson
import pydantic
from aiokafka.structs import ConsumerRecord

from services.contracts.errors import GatewayError, ValidationError
from services.contracts.events import (
    AuditRecorded,
    ChatRequested,
    ErrorInfo,
    ReplyTo,
    ResultProduced,
)
from services.runtime.config import GatewayConfig, load_config
from services.runtime.kafka import Consumer, DeadLetters, Publisher, validation_reason
from services.runtime.replies import result_target
from services.runtime.service import mark_ready
from services.runtime.settings import Settings
from services.runtime.topics import Topics, apply_topics

from .handlers import plan

log = logging.getLogger(__name__)
GROUP = "llmgw-router"


class Router:
    def __init__(self, settings: Settings, config: GatewayConfig, topics: Topics):
        self.settings = settings
        self.config = config
        self.topics = topics
        self.publisher = Publisher(settings.bootstrap_servers, client_id=f"router-{settings.instance_id}")
        self.consumer: Consumer[ChatRequested] = Consumer(
            bootstrap_servers=settings.bootstrap_servers,
            topics=[topics.requests.name],
            group_id=settings.topic_prefix + GROUP,
            model=ChatRequested,
            handler=self.handle,
            dead_letters=DeadLetters(self.publisher, topics.dlq.name, "router"),
            on_invalid=self.reject_invalid,
            max_in_flight=settings.max_in_flight,
            client_id=f"router-{settings.instance_id}",
        )

    async def start(self) -> None:
        await apply_topics(self.settings.bootstrap_servers, self.topics, create=False)
        await self.publisher.start()
        await self.consumer.start()

    async def aclose(self) -> None:
        await self.consumer.aclose()
        await self.publisher.aclose()

    async def handle(self, req: ChatRequested, record: ConsumerRecord) -> None:
        try:
            execution = plan(req, self.config, raw_size=len(record.value or b""))
        except GatewayError as err:
            await self.reject(req, err)
            return
        fut = await self.publisher.publish(self.topics.exec.name, execution, key=req.request_id)
        await fut

    async def reject(self, req: ChatRequested, err: GatewayError) -> None:
        topic, partition = result_target(req, self.topics)
        result = ResultProduced(
            request_id=req.request_id,
            tenant_id=req.tenant_id,
            user_id=req.user_id,
            status="error",
            alias=req.model,
            error=ErrorInfo(code=err.code, message=err.message, param=err.param, retryable=err.retryable),  # type: ignore[arg-type]
        )
        audit = AuditRecorded(
            request_id=req.request_id,
            tenant_id=req.tenant_id,
            user_id=req.user_id,
            action="blocked",
            actor="router",
            alias=req.model,
            client_id=req.client_id,
            error_code=err.code,  # type: ignore[arg-type]
            reason=err.message,
        )
        futs = [
            await self.publisher.publish(topic, result, key=req.request_id, partition=partition),
            await self.publisher.publish(self.topics.audit.name, audit, key=req.tenant_id),
        ]
        await asyncio.gather(*futs)

    async def reject_invalid(self, record: ConsumerRecord, exc: pydantic.ValidationError) -> None:
        """A request that fails validation is already in the DLQ; if it says who asked and where
        to answer, the caller also gets a ``validation_error`` naming the problem."""
        try:
            doc = orjson.loads(record.value or b"")
            request_id, tenant_id = doc["request_id"], doc["tenant_id"]
            reply_to = ReplyTo.model_validate(doc["reply_to"]) if doc.get("reply_to") else None
            if not (isinstance(request_id, str) and isinstance(tenant_id, str)):
                return
        except (orjson.JSONDecodeError, KeyError, TypeError, pydantic.ValidationError):
            return
        stub = ChatRequested.model_construct(
            request_id=request_id, tenant_id=tenant_id, user_id=doc.get("user_id"),
            model=str(doc.get("model")), reply_to=reply_to, client_id=doc.get("client_id"),
        )
        await self.reject(stub, ValidationError(f"invalid request: {validation_reason(exc)}"))


async def serve(settings: Settings) -> None:
    config = load_config(settings.config_path)
    topics = Topics.load(settings.topics_path, settings.topic_prefix)
    router = Router(settings, config, topics)
    await router.start()
    mark_ready(f"router {settings.instance_id}")
    try:
        await asyncio.Event().wait()
    finally:
        await router.aclose()
