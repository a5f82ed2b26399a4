"""Usage sink service: ``llm.usage`` (group ``llmgw-usage-sink``) -> the usage ledger on S3, and
``llm.realtime.sessions`` -> its Realtime session summaries (``sessions``; never summed).

State: none of its own. What is stored is in the bucket, and what a restarted (or newly
assigned) sink needs to know — how far each partition was written — is read back from it
(``ledger``). Records that do not parse go to ``llm.dlq`` (the Consumer does that).
"""

from __future__ import annotations

from services.contracts.events import RealtimeSessionSummarized, UsageRecorded
from services.runtime.s3 import ObjectStore
from services.runtime.settings import Settings
from services.runtime.sink import SinkSource, SinkSpec, serve_sink

from .handlers import record_session, record_usage
from .ledger import S3UsagePlugin
from .settings import SinkSettings

GROUP = "llmgw-usage-sink"

SPEC = SinkSpec(
    name="usage-sink",
    group=GROUP,
    source="usage",
    role="usage",
    model=UsageRecorded,
    handler=record_usage,
    bucket=lambda settings: settings.usage_bucket,
    plugin=lambda store, s: S3UsagePlugin(store, max_records=s.batch_records, max_wait_s=s.batch_ms / 1000),
    settings=lambda settings: SinkSettings.from_env(runtime=settings),
    also=(SinkSource("realtime_sessions", RealtimeSessionSummarized, record_session),),
)


async def serve(settings: Settings, *, store: ObjectStore | None = None) -> None:
    await serve_sink(SPEC, settings, store=store)
