"""The usage sink's handlers: hand the record to its tenant's Usage plugin (``tenants.<t>.plugins.usage``)
and wait until it is stored.

Returning is the acknowledgement: the Consumer commits the offset only after this returns
(STYLE 14: sinks commit after the write)."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord

from services.contracts.events import RealtimeSessionSummarized, UsageRecorded
from services.runtime.plugins import Position, TenantPlugins, UsagePlugin

from .ports import SessionLedger


async def record_usage(
    plugins: TenantPlugins[UsagePlugin], usage: UsageRecorded, record: ConsumerRecord
) -> None:
    await plugins.for_tenant(usage.tenant_id).record(
        usage, Position(record.topic, record.partition, record.offset)
    )


async def record_session(
    plugins: TenantPlugins[UsagePlugin], summary: RealtimeSessionSummarized, record: ConsumerRecord
) -> None:
    """A Realtime session's summary, to a plugin that keeps them (``SessionLedger``)."""
    plugin = plugins.for_tenant(summary.tenant_id)
    if isinstance(plugin, SessionLedger):
        await plugin.record_session(summary)
