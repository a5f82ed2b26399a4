"""Usage sink service: ``llm.usage`` (group ``llmgw-usage-sink``) -> the usage ledger on S3.

State: none of its own. What is stored is in the bucket, and what a restarted (or newly
assigned) sink needs to know — how far each partition was written — is read back from it
(``ledger``). Records that do not parse go to ``llm.dlq`` (the Consumer does that).
"""

from __future__ import annotations

import asyncio
import functools
import logging

from services.contracts.events import UsageRecorded
from services.runtime.kafka import Consumer, DeadLetters, Publisher
from services.runtime.plugins import UsagePlugin
from services.runtime.s3 import ObjectStore, S3ObjectStore
from services.runtime.service import mark_ready
from services.runtime.settings import Settings
from services.runtime.topics import Topics, apply_topics

from .handlers import record_usage
from .ledger import S3UsagePlugin
from .settings import SinkSettings

log = logging.getLogger(__name__)
GROUP = "llmgw-usage-sink"
SOURCE = "usage"  # the topic role it reads


class UsageSink:
    def __init__(self, settings: SinkSettings, topics: Topics, plugin: UsagePlugin):
        rt = settings.runtime
        self.settings = settings
        self.topics = topics
        self.plugin = plugin
        self.publisher = Publisher(rt.bootstrap_servers, client_id=f"usage-sink-{rt.instance_id}")
        self.consumer: Consumer[UsageRecorded] = Consumer(
            bootstrap_servers=rt.bootstrap_servers,
            topics=[topics.usage.name],
            group_id=rt.topic_prefix + GROUP,
            model=UsageRecorded,
            handler=functools.partial(record_usage, plugin),
            dead_letters=DeadLetters(self.publisher, topics.dlq.name, "usage-sink"),
            max_in_flight=settings.max_in_flight,
            revoke_grace_s=settings.batch_ms / 1000 + 5,
            client_id=f"usage-sink-{rt.instance_id}",
        )

    async def start(self) -> None:
        await apply_topics(self.settings.runtime.bootstrap_servers, self.topics, create=False, only=[SOURCE, "dlq"])
        await self.publisher.start()
        await self.consumer.start()

    async def aclose(self) -> None:
        """Stop reading; open batches are written (for up to a batch window plus 5 s) and their
        offsets committed; what is still unwritten then is left to the next sink."""
        await self.consumer.aclose()
        await self.plugin.aclose()
        await self.publisher.aclose()


def s3_store(settings: Settings) -> S3ObjectStore:
    return S3ObjectStore(settings.usage_bucket, endpoint_url=settings.s3_url)


async def serve(settings: Settings, *, store: ObjectStore | None = None) -> None:
    sink_settings = SinkSettings.from_env(runtime=settings)
    topics = Topics.load(settings.topics_path, settings.topic_prefix)
    own_store = store is None
    if store is None:
        s3 = s3_store(settings)
        await s3.start()  # creates the bucket when it is missing
        store = s3
    plugin = S3UsagePlugin(store, max_records=sink_settings.batch_records, max_wait_s=sink_settings.batch_ms / 1000)
    sink = UsageSink(sink_settings, topics, plugin)
    await sink.start()
    mark_ready(f"usage-sink {settings.instance_id}")
    try:
        await asyncio.Event().wait()
    finally:
        await sink.aclose()
        if own_store:
            await store.aclose()
