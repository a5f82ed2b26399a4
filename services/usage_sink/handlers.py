"""The usage sink's one handler: hand the record to its tenant's Usage plugin (``tenants.<t>.plugins.usage``)
and wait until it is stored.

Returning is the acknowledgement: the Consumer commits the offset only after this returns
(STYLE 14: sinks commit after the write)."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord

from services.contracts.events import UsageRecorded
from services.runtime.plugins import Position, TenantPlugins, UsagePlugin


async def record_usage(
    plugins: TenantPlugins[UsagePlugin], usage: UsageRecorded, record: ConsumerRecord
) -> None:
    await plugins.for_tenant(usage.tenant_id).record(
        usage, Position(record.topic, record.partition, record.offset)
    )
