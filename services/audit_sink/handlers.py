"""The audit sink's one handler: hand the record to the Audit plugin and wait until it is stored.

Returning is the acknowledgement: the Consumer commits the offset only after this returns
(STYLE 14: sinks commit after the write)."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord

from services.contracts.events import AuditRecorded
from services.runtime.plugins import AuditPlugin, Position


async def record_audit(plugin: AuditPlugin, audit: AuditRecorded, record: ConsumerRecord) -> None:
    await plugin.record(audit, Position(record.topic, record.partition, record.offset))
