"""Where usage records live in the bucket (pure).

``usage/tenant=<tenant>/date=<yyyy-mm-dd>/hour=<hh>/<topic>+<partition>+<first>+<last>.ndjson``:
date and hour of the record's ``occurred_at`` in UTC; ``first`` / ``last`` (20 digits) are the
offset range of the batch that wrote the object. The object holds, in offset order, those of
that batch's records whose tenant, date and hour these are, minus any already stored by an
earlier object of the same source (see ``ledger``). ``+`` cannot occur in a topic name, so
``<topic>+<partition>+`` is a prefix only that source's objects have (as Kafka Connect names
its objects). Tenant names are percent-encoded.

``usage/_intents/<topic>+<partition>.json`` is the source's write intent (``ledger``).

``usage/_sessions/tenant=<tenant>/date=<yyyy-mm-dd>/<session id>.json`` is a Realtime session's
summary (``sessions``), one object per session: the date is the session's ``started_at`` (UTC),
so every writer of one session's summary names the same object. Not under ``usage/tenant=``:
nothing that sums usage records reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

ROOT = "usage/"


@dataclass(frozen=True, slots=True)
class Group:
    """The directory a record belongs in: a function of the record alone."""

    tenant: str
    date: str  # yyyy-mm-dd
    hour: str  # hh

    @classmethod
    def of(cls, tenant_id: str, occurred_at: datetime) -> Group:
        t = occurred_at.astimezone(UTC) if occurred_at.tzinfo else occurred_at.replace(tzinfo=UTC)
        return cls(tenant_id, f"{t.year:04d}-{t.month:02d}-{t.day:02d}", f"{t.hour:02d}")

    def prefix(self) -> str:
        return f"{tenant_prefix(self.tenant)}date={self.date}/hour={self.hour}/"


def tenant_prefix(tenant: str) -> str:
    return f"{ROOT}tenant={quote(tenant, safe='')}/"


def date_prefix(tenant: str, date: str) -> str:
    return f"{tenant_prefix(tenant)}date={date}/"


def source_prefix(group: Group, topic: str, partition: int) -> str:
    return f"{group.prefix()}{topic}+{partition}+"


def object_key(group: Group, topic: str, partition: int, first: int, last: int) -> str:
    return f"{source_prefix(group, topic, partition)}{first:020d}+{last:020d}.ndjson"


def offset_range(key: str) -> tuple[int, int]:
    """``(first, last)`` from an object key (ValueError when it is not one of ours)."""
    name = key.rsplit("/", 1)[-1]
    if not name.endswith(".ndjson"):
        raise ValueError(f"not a usage object: {key}")
    _, _, first, last = name[: -len(".ndjson")].rsplit("+", 3)
    return int(first), int(last)


def intent_key(topic: str, partition: int) -> str:
    return f"{ROOT}_intents/{topic}+{partition}.json"


SESSIONS = f"{ROOT}_sessions/"


def session_date_prefix(tenant: str, date: str) -> str:
    return f"{SESSIONS}tenant={quote(tenant, safe='')}/date={date}/"


def session_key(tenant: str, started_at: datetime, session_id: str) -> str:
    g = Group.of(tenant, started_at)
    return f"{session_date_prefix(tenant, g.date)}{quote(session_id, safe='')}.json"
