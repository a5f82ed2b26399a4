"""The usage ledger as the dashboard reads it: the records of some tenants in a time window.

The bucket is the usage sink's (``LLMGW_USAGE_BUCKET``), laid out as ``llmgw usage report``
reads it (``services/usage_sink/layout.py``, ``report.py``):
``usage/tenant=<tenant, percent-encoded>/date=<yyyy-mm-dd>/hour=<hh>/<source>+<first>+<last>.ndjson``,
one ``llm.usage.v1`` event per line. As there, only the ``date=`` directories of the window are
listed, only the ``hour=`` directories overlapping it are read, and a record counts when its
``occurred_at`` is in ``[since, until)``; the sink stores each record once, so records are counted
as stored. (The edge may not import the sink: these few lines of layout are repeated here, and
``tests/unit/edge/test_dashboard.py`` holds the two to the same totals.)

Objects are only ever created (``If-None-Match: *``), never rewritten, so an object read once is
kept (``ObjectCache``): a refresh lists the window's directories and reads only new objects.
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote, unquote

import orjson

from services.contracts.errors import ERRORS
from services.runtime.s3 import S3ObjectStore, StoredObject

TENANTS = "usage/tenant="
_HOUR = re.compile(r"/date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/")


class UsageLedger(Protocol):
    """Read access to the usage bucket."""

    async def keys(self, prefix: str, *, start_after: str = "") -> list[str]:
        """Every key under ``prefix``, ascending."""
        ...

    async def get(self, key: str) -> StoredObject | None: ...

    async def tenants(self) -> list[str]:
        """Every tenant with a directory in the bucket."""
        ...


class S3UsageLedger(S3ObjectStore):
    """``UsageLedger`` on the usage bucket (opened with ``create_bucket=False``: a reader)."""

    async def tenants(self) -> list[str]:
        """One listing of ``usage/tenant=`` with a delimiter: the tenant directories, not their objects."""
        out: list[str] = []
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=TENANTS, Delimiter="/"
        )
        async for page in pages:
            out.extend(unquote(p["Prefix"][len(TENANTS) : -1]) for p in page.get("CommonPrefixes", ()))
        return out


@dataclass(frozen=True, slots=True)
class Record:
    """What the dashboard counts of one usage record. ``outcome``: ``ok``; ``cancelled``;
    ``rejected`` (the gateway refused the request or the answer: an error whose code answers 4xx,
    e.g. ``validation_error``, ``request_blocked``, and ``response_blocked``, a hook's refusal
    although it answers 502); ``error`` (any other: the provider failed, a timeout, the gateway's
    own fault). ``key``: the API key's name, else the ``client_id``."""

    at: float  # occurred_at, epoch seconds
    tenant: str
    model: str
    user: str
    key: str
    outcome: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float
    total_ms: float | None
    ttft_ms: float | None


def outcome(status: Any, error_code: Any) -> str:
    if status == "ok":
        return "ok"
    if status == "cancelled":
        return "cancelled"
    cls = ERRORS.get(str(error_code or ""))
    refused = cls is not None and (cls.http_status < 500 or cls.code == "response_blocked")
    return "rejected" if refused else "error"


def parse(line: bytes) -> Record:
    """One NDJSON line (tolerant: fields it lacks count as zero or ``-``)."""
    r = orjson.loads(line)
    at = datetime.fromisoformat(r["occurred_at"])
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return Record(
        at=at.timestamp(),
        tenant=str(r.get("tenant_id") or "-"),
        model=str(r.get("alias") or "-"),
        user=str(r.get("user_id") or "-"),
        key=str(r.get("api_key") or r.get("client_id") or "-"),
        outcome=outcome(r.get("status"), r.get("error_code")),
        prompt_tokens=int(r.get("prompt_tokens") or 0),
        completion_tokens=int(r.get("completion_tokens") or 0),
        total_tokens=int(r.get("total_tokens") or 0),
        cost_usd=float(r.get("cost_usd") or 0.0),
        total_ms=_ms(r.get("total_ms")),
        ttft_ms=_ms(r.get("ttft_ms")),
    )


def _ms(v: Any) -> float | None:
    return None if v is None else float(v)


def tenant_prefix(tenant: str) -> str:
    return f"{TENANTS}{quote(tenant, safe='')}/"


def days(since: datetime, until: datetime) -> list[str]:
    d, last, out = since.astimezone(UTC).date(), until.astimezone(UTC).date(), []
    while d <= last:
        out.append(d.isoformat())
        d += timedelta(days=1)
    return out


def hour_in_window(key: str, since: datetime, until: datetime) -> bool:
    """Whether the object's ``date=/hour=`` directory overlaps ``[since, until)``."""
    m = _HOUR.search(key)
    if not m:
        return False
    start = datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}:00:00+00:00")
    return start < until and start + timedelta(hours=1) > since


class ObjectCache:
    """Parsed records by object key, least recently used dropped past ``max_bytes`` of objects."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._objects: OrderedDict[str, tuple[int, list[Record]]] = OrderedDict()

    def get(self, key: str) -> list[Record] | None:
        hit = self._objects.get(key)
        if hit is None:
            return None
        self._objects.move_to_end(key)
        return hit[1]

    def put(self, key: str, size: int, records: list[Record]) -> None:
        if key in self._objects:
            return
        self._objects[key] = (size, records)
        self.bytes += size
        while self.bytes > self.max_bytes and len(self._objects) > 1:
            _, (dropped, _) = self._objects.popitem(last=False)
            self.bytes -= dropped


async def read_records(
    ledger: UsageLedger,
    tenants: list[str],
    since: datetime,
    until: datetime,
    cache: ObjectCache,
    *,
    concurrency: int = 16,
) -> list[Record]:
    """Every record of ``tenants`` whose ``occurred_at`` is in ``[since, until)``."""
    prefixes = [f"{tenant_prefix(t)}date={d}/" for t in tenants for d in days(since, until)]
    listings = await asyncio.gather(*(ledger.keys(p) for p in prefixes))
    keys = [k for ks in listings for k in ks if k.endswith(".ndjson") and hour_in_window(k, since, until)]
    slots = asyncio.Semaphore(concurrency)

    async def read(key: str) -> list[Record]:
        cached = cache.get(key)
        if cached is not None:
            return cached
        async with slots:
            obj = await ledger.get(key)
        body = obj.body if obj else b""
        records = [parse(line) for line in body.splitlines() if line.strip()]
        if obj is not None:
            cache.put(key, len(body), records)
        return records

    lo, hi = since.timestamp(), until.timestamp()
    return [r for rs in await asyncio.gather(*(read(k) for k in keys)) for r in rs if lo <= r.at < hi]
