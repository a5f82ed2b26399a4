"""What the usage and audit sinks share: one topic read in a group of its own, each record
handed to the sink's plugin, whose batches are written to S3 before their offsets commit.

A sink is a ``SinkSpec`` (its name, group, topic role, event model, handler and bucket); this
module runs it. Each record goes to its tenant's plugin (``tenants.<t>.plugins.<role>``:
``s3``, the sink's own ledger and the default; ``noop``; or an entry point), built at start. Records that do not parse go to ``llm.dlq`` (the Consumer does that).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from aiokafka.structs import ConsumerRecord
from pydantic import BaseModel

from . import telemetry
from .config import load_config
from .kafka import Consumer, DeadLetters, Publisher, Subscription
from .plugins import TenantPlugins
from .s3 import ObjectStore, S3ObjectStore
from .service import mark_ready
from .settings import Settings
from .topics import Topics, apply_topics


class SinkPlugin(Protocol):
    """The part of a Usage / Audit plugin the service drives: its batches close on ``aclose``."""

    async def aclose(self) -> None: ...


class BatchSettings(Protocol):
    """What a sink's settings (``services/<sink>/settings.py``) give the sink service."""

    @property
    def runtime(self) -> Settings: ...
    @property
    def batch_records(self) -> int: ...
    @property
    def batch_ms(self) -> int: ...
    @property
    def max_in_flight(self) -> int: ...


@dataclass(frozen=True)
class SinkSource:
    """A further topic a sink reads into the same plugins (``SinkSpec.also``)."""

    source: str  # the topic role (topics.yaml)
    model: type[BaseModel]
    handler: Callable[[Any, Any, Any], Awaitable[None]]  # (TenantPlugins, event, record)


@dataclass(frozen=True)
class SinkSpec:
    name: str  # e.g. "usage-sink": client ids, the DLQ's consumer header, readiness
    group: str
    source: str  # the topic role it reads (topics.yaml)
    role: Literal["usage", "audit"]  # the plugin role (``tenants.<t>.plugins.<role>``)
    model: type[BaseModel]
    handler: Callable[[Any, Any, Any], Awaitable[None]]  # (TenantPlugins, event, record)
    bucket: Callable[[Settings], str]
    plugin: Callable[[ObjectStore, BatchSettings], SinkPlugin]  # the default (S3) plugin
    settings: Callable[[Settings], BatchSettings]
    also: tuple[SinkSource, ...] = ()


class SinkService:
    def __init__(
        self, spec: SinkSpec, settings: BatchSettings, topics: Topics, plugin: TenantPlugins[SinkPlugin]
    ):
        rt = settings.runtime
        self.spec = spec
        self.settings = settings
        self.topics = topics
        self.plugin = plugin
        self.publisher = Publisher(rt.bootstrap_servers, client_id=f"{spec.name}-{rt.instance_id}")
        # no span per record from the Consumer: the built-in plugins make one per batch written
        # (``traces_batches``); the record of a plugin that does not gets its span here
        sources = (SinkSource(spec.source, spec.model, spec.handler), *spec.also)
        subs = {
            getattr(topics, s.source).name: Subscription.of(
                s.model, self._handler(s.handler), name=s.model.__name__, spans=False
            )
            for s in sources
        }
        self.consumer: Consumer[BaseModel] = Consumer(
            bootstrap_servers=rt.bootstrap_servers,
            subscriptions=subs,
            group_id=rt.topic_prefix + spec.group,
            dead_letters=DeadLetters(self.publisher, topics.dlq.name, spec.name),
            max_in_flight=settings.max_in_flight,
            revoke_grace_s=settings.batch_ms / 1000 + 5,
            client_id=f"{spec.name}-{rt.instance_id}",
        )

    def _handler(
        self, handler: Callable[[Any, Any, Any], Awaitable[None]]
    ) -> Callable[[Any, ConsumerRecord], Awaitable[None]]:
        async def handle(event: Any, record: ConsumerRecord) -> None:
            if telemetry.recording() and not getattr(
                self.plugin.for_tenant(event.tenant_id), "traces_batches", False
            ):
                with telemetry.consuming(record.topic, record.headers, record.partition, record.offset):
                    await handler(self.plugin, event, record)
                return
            await handler(self.plugin, event, record)

        return handle

    async def start(self) -> None:
        await apply_topics(
            self.settings.runtime.bootstrap_servers,
            self.topics,
            create=False,
            only=[self.spec.source, *(s.source for s in self.spec.also), "dlq"],
        )
        await self.publisher.start()
        await self.consumer.start()

    async def aclose(self) -> None:
        """Stop reading; open batches are written (for up to a batch window plus 5 s) and their
        offsets committed; what is still unwritten then is left to the next sink."""
        await self.consumer.aclose()
        await self.plugin.aclose()
        await self.publisher.aclose()


async def serve_sink(spec: SinkSpec, settings: Settings, *, store: ObjectStore | None = None) -> None:
    """Run one sink until cancelled; ``store`` replaces the S3 bucket (tests)."""
    batch = spec.settings(settings)
    topics = Topics.load(settings.topics_path, settings.topic_prefix)
    own_store = store is None
    if store is None:
        s3 = S3ObjectStore(spec.bucket(settings), endpoint_url=settings.s3_url)
        await s3.start()  # creates the bucket when it is missing
        store = s3
    config = load_config(settings.config_path, settings.env)
    plugins = TenantPlugins.build(config, spec.role, spec.plugin(store, batch))
    sink = SinkService(spec, batch, topics, plugins)
    await sink.start()
    mark_ready(spec.name, settings)
    try:
        await asyncio.Event().wait()
    finally:
        await sink.aclose()
        if own_store:
            await store.aclose()
