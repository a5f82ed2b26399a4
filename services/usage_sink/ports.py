"""What a tenant's Usage plugin may do beyond ``UsagePlugin``."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from services.contracts.events import RealtimeSessionSummarized


@runtime_checkable
class SessionLedger(Protocol):
    """Keeps Realtime session summaries (not billable: see ``services.usage_sink.sessions``).
    A Usage plugin that is not one keeps none: its tenants' summaries are skipped."""

    async def record_session(self, summary: RealtimeSessionSummarized) -> None:
        """Store ``summary``, one per session; return once stored."""
        ...
