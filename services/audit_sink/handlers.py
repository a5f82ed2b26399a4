"""The audit sink's one handler: hand the record to its tenant's Audit plugin (``tenants.<t>.plugins.audit``)
and wait until it is stored.

Returning is the acknowledgement: the Consumer commits the offset only after this returns
(STYLE 14: sinks commit after the write)."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord

from services.contracts.events import AuditRecorded
from services.runtime.plugins import AuditPlugin, Position, TenantPlugins


async def record_audit(
    plugins: TenantPlugins[AuditPlugin], audit: AuditRecorded, record: ConsumerRecord
) -> None:
    await plugins.for_tenant(audit.tenant_id).record(
        audit, Position(record.topic, record.partition, record.offset)
    )
