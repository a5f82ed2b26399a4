"""The audit ledger on S3: ``S3AuditPlugin``, the default ``AuditPlugin``.

Records are batched per source partition; a batch becomes one object appended to the
partition's hash chain (``chain``, ``layout``), then the chain's head is replaced.

* **Chain state is rebuilt from S3**, never kept elsewhere: at the first batch of a partition
  (after a start, or after another writer appended) the writer reads the head object and the
  objects after the one it names; the newest record found is where the chain goes on. When the
  head is ahead of the objects (records were removed), the chain goes on from the head, so the
  gap stays visible to ``llmgw audit verify``.
* **Effectively once**: a record whose offset is at or below the chain's last offset is already
  in the chain (a partition is appended in offset order) and is skipped. Objects are created
  with a conditional put keyed by their first seq, so two writers can never both append at one
  seq: the loser rebuilds its state from S3 and skips what the winner wrote.
* **No content is added**: the stored event is the ``llm.audit.v1`` record as the schema has
  it, and nothing else; audit events carry no prompt or completion text.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import orjson

from services.contracts.events import AuditRecorded
from services.runtime import telemetry
from services.runtime.batching import Batcher
from services.runtime.codec import encode
from services.runtime.plugins import Position
from services.runtime.s3 import ObjectStore, PreconditionFailed

from .chain import Head, link
from .layout import chain_name, chain_prefix, head_key, object_key

log = logging.getLogger(__name__)
Source = tuple[str, int]
Item = tuple[int, dict[str, Any]]  # (offset, event)


class S3AuditPlugin:
    #: one span per write of a batch (``Batcher(traced=...)``), not one per record: the sink's
    #: Consumer leaves the record's span to the plugin (``services/runtime/sink.py``)
    traces_batches = True

    def __init__(self, store: ObjectStore, *, max_records: int = 1000, max_wait_s: float = 0.5):
        self._store = store
        self._writer = uuid.uuid4().hex
        self._heads: dict[Source, tuple[Head, str]] = {}  # head and the key of the object holding it
        self._batcher: Batcher[Source, Item] = Batcher(
            self._write, max_items=max_records, max_wait_s=max_wait_s, traced=telemetry.kafka_batch
        )
        self.written = 0

    async def record(self, audit: AuditRecorded, position: Position) -> None:
        raw = encode(audit)
        await self._batcher.add(
            (position.topic, position.partition), (position.offset, orjson.loads(raw)), len(raw)
        )

    def flush(self) -> None:
        self._batcher.flush()

    async def aclose(self, grace_s: float = 5.0) -> None:
        """Write the open batches (for up to ``grace_s``); ``record`` calls still waiting raise CancelledError."""
        await self._batcher.aclose(grace_s)

    async def _write(self, source: Source, items: list[Item]) -> None:
        topic, partition = source
        name = chain_name(topic, partition)
        while True:
            head, _ = self._heads.get(source) or await self._rebuild(source)
            todo = [(offset, event) for offset, event in items if offset > head.offset]
            if not todo:
                return
            lines, new = [], head
            for offset, event in todo:
                line, new = link(new, event, topic=topic, partition=partition, offset=offset)
                lines.append(line)
            key = object_key(name, head.seq + 1)
            try:
                await self._store.put(key, b"\n".join(lines) + b"\n", if_none_match=True)
            except PreconditionFailed:
                self._heads.pop(source, None)  # the chain was extended elsewhere: rebuild, skip what it holds
                continue
            self._heads[source] = (new, key)
            self.written += len(todo)
            await self._put_head(name, new, key)
            return

    async def _put_head(self, name: str, head: Head, key: str) -> None:
        await self._store.put(
            head_key(name), orjson.dumps(head.as_json() | {"key": key, "writer": self._writer})
        )

    async def _rebuild(self, source: Source) -> tuple[Head, str]:
        name = chain_name(*source)
        obj = await self._store.get(head_key(name))
        head, key = Head(), ""
        if obj is not None:
            try:
                h = orjson.loads(obj.body)
                head, key = Head(int(h["seq"]), str(h["hash"]), int(h["offset"])), str(h["key"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                log.error(
                    "audit chain %s: its head object is not readable; going on from its newest record", name
                )
        later = await self._store.keys(chain_prefix(name), start_after=key)
        if later:
            last = await self._store.get(later[-1])
            if last is not None and (lines := last.body.splitlines()):
                rec = orjson.loads(lines[-1])
                found = Head(int(rec["chain"]["seq"]), str(rec["hash"]), int(rec["chain"]["offset"]))
                if found.seq > head.seq:
                    head, key = found, later[-1]
                    await self._put_head(name, head, key)  # the head lagged (a crash between object and head)
        self._heads[source] = (head, key)
        return head, key
