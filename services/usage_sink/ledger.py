"""The usage ledger on S3: ``S3UsagePlugin``, the default ``UsagePlugin``.

Records are batched per source (topic partition, ``services.runtime.batching``) and each batch
``[first, last]`` (consecutive offsets of one partition) is written as one object per tenant,
date and hour (``layout``). Effectively once, by two rules:

1. **Intent before data.** Before a batch's objects, the writer replaces the source's intent
   object with ``last`` = the highest offset any object of the source may hold, by a
   conditional put on the ETag it last saw. So no object ever holds a record past the intent's
   ``last``, and a writer whose put fails learns that another writer was there (it re-reads
   the intent and treats everything up to it as in doubt).
2. **In doubt means look.** A record at or below the intent's ``last`` that this writer has not
   itself seen stored (after a start, a restart, or another writer's intent) is written only if
   no object of its source in its tenant/date/hour directory has a range holding its offset.

Why that is exact: every object holds, of its source's records in its range and directory,
exactly those no earlier object holds (induction over puts; puts are atomic). A record in some
object's range is therefore stored exactly once, and a record past the intent is stored
nowhere; a redelivered record is one or the other, and rule 2 tells which. Offsets are
committed only after the batch holding them is written (the handler awaits it), so nothing is
lost. What it assumes: one writer per partition at a time (the consumer group), except a
writer cut off from Kafka but not from S3 whose batch was already past its intent when the
partition moved.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from services.contracts.events import RealtimeSessionSummarized, RequestBase, UsageRecorded
from services.runtime import telemetry
from services.runtime.batching import Batcher
from services.runtime.codec import encode
from services.runtime.plugins import NO_OPINION, BudgetVerdict, Position
from services.runtime.s3 import ObjectStore, PreconditionFailed

from .layout import Group, intent_key, object_key, offset_range, source_prefix
from .sessions import S3SessionLedger

Source = tuple[str, int]


@dataclass(slots=True)
class Item:
    offset: int
    group: Group
    line: bytes


@dataclass(slots=True)
class _Known:
    """What this writer knows of one source."""

    etag: str | None  # of the intent it last wrote or read (None: there was none)
    claimed: int  # the intent's last: no object holds a record past it
    stored_through: int  # every record up to this offset is stored (-1: not known)


class S3UsagePlugin:
    """``record`` returns once the usage is in the bucket. Batches close at ``max_records``
    records or ``max_wait_s`` after their first record. Also a ``SessionLedger``."""

    #: one span per write of a batch (``Batcher(traced=...)``), not one per record: the sink's
    #: Consumer leaves the record's span to the plugin (``services/runtime/sink.py``)
    traces_batches = True

    def __init__(self, store: ObjectStore, *, max_records: int = 5000, max_wait_s: float = 1.0):
        self._store = store
        self._writer = uuid.uuid4().hex
        self._known: dict[Source, _Known] = {}
        self._batcher: Batcher[Source, Item] = Batcher(
            self._write, max_items=max_records, max_wait_s=max_wait_s, traced=telemetry.kafka_batch
        )
        self.written = 0  # records this process stored (what a benchmark counts)
        self._sessions = S3SessionLedger(store)

    async def record(self, usage: UsageRecorded, position: Position) -> None:
        line = encode(usage)
        item = Item(position.offset, Group.of(usage.tenant_id, usage.occurred_at), line)
        await self._batcher.add((position.topic, position.partition), item, len(line) + 1)

    async def record_session(self, summary: RealtimeSessionSummarized) -> None:
        """A Realtime session's summary: its own object, apart from the records (``sessions``)."""
        await self._sessions.record_session(summary)

    async def check_budget(self, request: RequestBase, *, max_cost_usd: float) -> BudgetVerdict:
        """No opinion: budgets set in the configuration are kept by the router's own ledger."""
        return NO_OPINION

    async def report_usage(self, usage: UsageRecorded) -> None:
        """Nothing to settle: this ledger learns usage from ``llm.usage`` through ``record``."""

    def flush(self) -> None:
        self._batcher.flush()

    async def aclose(self, grace_s: float = 5.0) -> None:
        """Write the open batches (for up to ``grace_s``); ``record`` calls still waiting raise CancelledError."""
        await self._batcher.aclose(grace_s)

    async def _write(self, source: Source, items: list[Item]) -> None:
        topic, partition = source
        first, last = items[0].offset, items[-1].offset
        while True:
            known = self._known.get(source) or await self._recover(source)
            todo = [i for i in items if i.offset > known.stored_through]
            if any(i.offset <= known.claimed for i in todo):
                todo = await self._not_stored(source, todo, known.claimed)
            if not todo:
                break
            claim = max(last, known.claimed)
            body = orjson.dumps(
                {
                    "topic": topic,
                    "partition": partition,
                    "first": first,
                    "last": claim,
                    "writer": self._writer,
                    "at": datetime.now(UTC).isoformat(),
                }
            )
            try:
                known.etag = await self._store.put(
                    intent_key(topic, partition), body, if_match=known.etag, if_none_match=known.etag is None
                )
            except PreconditionFailed:
                self._known.pop(source, None)  # another writer wrote an intent: read it, look again
                continue
            known.claimed = claim
            groups: dict[Group, list[bytes]] = defaultdict(list)
            for i in todo:
                groups[i.group].append(i.line)
            await asyncio.gather(
                *(
                    self._put(object_key(g, topic, partition, first, last), lines)
                    for g, lines in groups.items()
                )
            )
            self.written += len(todo)
            break
        known = self._known[source]
        known.stored_through = max(known.stored_through, last)

    async def _put(self, key: str, lines: list[bytes]) -> None:
        try:
            await self._store.put(key, b"\n".join(lines) + b"\n", if_none_match=True)
        except PreconditionFailed:
            pass  # this very batch's object, written before a retry: it holds these records

    async def _recover(self, source: Source) -> _Known:
        obj = await self._store.get(intent_key(*source))
        if obj is None:
            known = _Known(etag=None, claimed=-1, stored_through=-1)
        else:
            known = _Known(etag=obj.etag, claimed=int(orjson.loads(obj.body)["last"]), stored_through=-1)
        self._known[source] = known
        return known

    async def _not_stored(self, source: Source, items: list[Item], claimed: int) -> list[Item]:
        """``items`` less those an object of their source and directory already holds."""
        topic, partition = source
        groups = sorted(
            {i.group for i in items if i.offset <= claimed}, key=lambda g: (g.tenant, g.date, g.hour)
        )
        listings = await asyncio.gather(
            *(self._store.keys(source_prefix(g, topic, partition)) for g in groups)
        )
        ranges = {g: [offset_range(k) for k in keys] for g, keys in zip(groups, listings, strict=True)}
        return [
            i for i in items if i.offset > claimed or not any(a <= i.offset <= b for a, b in ranges[i.group])
        ]
