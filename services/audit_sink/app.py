"""Audit sink service: ``llm.audit`` (group ``llmgw-audit-sink``) -> the audit ledger on S3.

State: each partition's chain head (last seq, hash and offset), rebuilt from the bucket at the
first batch of a partition and whenever another writer appended to it (``ledger``). Records that do not parse go to ``llm.dlq`` (the Consumer does that).
"""

from __future__ import annotations

import asyncio
import functools
import logging

from services.contracts.events import AuditRecorded
from services.runtime.kafka import Consumer, DeadLetters, Publisher
from services.runtime.plugins import AuditPlugin
from services.runtime.s3 import ObjectStore, S3ObjectStore
from services.runtime.service import mark_ready
from services.runtime.settings import Settings
from services.runtime.topics import Topics, apply_topics

from .handlers import record_audit
from .ledger import S3AuditPlugin
from .settings import SinkSettings

log = logging.getLogger(__name__)
GROUP = "llmgw-audit-sink"
SOURCE = "audit"  # the topic role it reads


class AuditSink:
    def __init__(self, settings: SinkSettings, topics: Topics, plugin: AuditPlugin):
        rt = settings.runtime
        self.settings = settings
        self.topics = topics
        self.plugin = plugin
        self.publisher = Publisher(rt.bootstrap_servers, client_id=f"audit-sink-{rt.instance_id}")
        self.consumer: Consumer[AuditRecorded] = Consumer(
            bootstrap_servers=rt.bootstrap_servers,
            topics=[topics.audit.name],
            group_id=rt.topic_prefix + GROUP,
            model=AuditRecorded,
            handler=functools.partial(record_audit, plugin),
            dead_letters=DeadLetters(self.publisher, topics.dlq.name, "audit-sink"),
            max_in_flight=settings.max_in_flight,
            revoke_grace_s=settings.batch_ms / 1000 + 5,
            client_id=f"audit-sink-{rt.instance_id}",
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
    return S3ObjectStore(settings.audit_bucket, endpoint_url=settings.s3_url)


async def serve(settings: Settings, *, store: ObjectStore | None = None) -> None:
    sink_settings = SinkSettings.from_env(runtime=settings)
    topics = Topics.load(settings.topics_path, settings.topic_prefix)
    own_store = store is None
    if store is None:
        s3 = s3_store(settings)
        await s3.start()  # creates the bucket when it is missing
        store = s3
    plugin = S3AuditPlugin(store, max_records=sink_settings.batch_records, max_wait_s=sink_settings.batch_ms / 1000)
    sink = AuditSink(sink_settings, topics, plugin)
    await sink.start()
    mark_ready(f"audit-sink {settings.instance_id}")
    try:
        await asyncio.Event().wait()
    finally:
        await sink.aclose()
        if own_store:
            await store.aclose()
