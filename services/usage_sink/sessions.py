"""Realtime session summaries in the usage ledger: written from ``llm.realtime.sessions``, listed
by ``llmgw usage sessions``. Never summed with the usage records: a session's billable usage is
its turns' ``UsageRecorded``, and a summary is their sum (``RealtimeSessionSummarized``).

One object per session (``layout.session_key``). The executor's summary is written as it is,
over a summary the caller wrote for a session it declared lost; the caller's (``ended_by:
gateway``) only where there is none yet. So a session has one summary whichever arrives first,
and a redelivered summary writes the same object again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from services.contracts.events import RealtimeSessionSummarized
from services.runtime.codec import encode
from services.runtime.s3 import ObjectStore, PreconditionFailed

from .layout import session_date_prefix, session_key
from .report import days


class S3SessionLedger:
    """``record_session`` returns once the summary is in the bucket (or one that wins over it is)."""

    def __init__(self, store: ObjectStore):
        self._store = store

    async def record_session(self, summary: RealtimeSessionSummarized) -> None:
        key = session_key(summary.tenant_id, summary.started_at, summary.request_id)
        try:
            await self._store.put(key, encode(summary), if_none_match=summary.ended_by != "executor")
        except PreconditionFailed:
            pass  # the session's summary is there already: its executor's, or this one's


COLUMNS = ("turns", "prompt_tokens", "completion_tokens", "cached_tokens", "total_tokens", "cost_usd")


@dataclass
class SessionsListing:
    tenant: str
    since: datetime
    until: datetime
    sessions: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        total = {c: sum(s["usage"].get(c) or 0 for s in self.sessions) for c in COLUMNS}
        return {
            "tenant": self.tenant,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "sessions": self.sessions,
            "total": total | {"sessions": len(self.sessions), "cost_usd": round(total["cost_usd"], 9)},
        }


def add_sessions(listing: SessionsListing, bodies: Iterable[bytes]) -> SessionsListing:
    """Add each summary (JSON objects) that started in the listing's window, by start time."""
    for body in bodies:
        if not body.strip():
            continue
        doc = orjson.loads(body)
        started = datetime.fromisoformat(doc["started_at"]).astimezone(UTC)
        if listing.since <= started < listing.until:
            listing.sessions.append(doc)
    listing.sessions.sort(key=lambda d: (d["started_at"], d["request_id"]))
    return listing


async def list_sessions(
    store: ObjectStore, tenant: str, *, since: datetime, until: datetime, concurrency: int = 16
) -> SessionsListing:
    """The tenant's Realtime sessions that started in ``[since, until)``, oldest first."""
    listings = await asyncio.gather(*(store.keys(session_date_prefix(tenant, d)) for d in days(since, until)))
    slots = asyncio.Semaphore(concurrency)

    async def read(key: str) -> bytes:
        async with slots:
            obj = await store.get(key)
        return obj.body if obj else b""

    bodies = await asyncio.gather(*(read(k) for ks in listings for k in ks if k.endswith(".json")))
    return add_sessions(SessionsListing(tenant, since, until), bodies)
