"""Audit sink service: ``llm.audit`` (group ``llmgw-audit-sink``) -> the audit ledger on S3.

State: each partition's chain head (last seq, hash and offset), rebuilt from the bucket at the
first batch of a partition and whenever another writer appended to it (``ledger``). Records that do not parse go to ``llm.dlq`` (the Consumer does that).
"""

from __future__ import annotations

from services.contracts.events import AuditRecorded
from services.runtime.s3 import ObjectStore
from services.runtime.settings import Settings
from services.runtime.sink import SinkSpec, serve_sink

from .handlers import record_audit
from .ledger import S3AuditPlugin
from .settings import SinkSettings

GROUP = "llmgw-audit-sink"

SPEC = SinkSpec(
    name="audit-sink",
    group=GROUP,
    source="audit",
    role="audit",
    model=AuditRecorded,
    handler=record_audit,
    bucket=lambda settings: settings.audit_bucket,
    plugin=lambda store, s: S3AuditPlugin(store, max_records=s.batch_records, max_wait_s=s.batch_ms / 1000),
    settings=lambda settings: SinkSettings.from_env(runtime=settings),
)


async def serve(settings: Settings, *, store: ObjectStore | None = None) -> None:
    await serve_sink(SPEC, settings, store=store)
