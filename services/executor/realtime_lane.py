"""The realtime relay's fast lane: partitions of ``llm.realtime.in`` that carry a live session
are also read by a second, short-polling reader, so an idle executor does not poll the broker
200 times a second.

Why two readers: aiokafka sends a partition's next fetch only once the request in flight to its
broker is answered. With the group consumer's long poll (500 ms) that is harmless while nothing
happens (the broker answers the moment an ``open`` arrives), but once a session's frames flow, a
frame arriving just after an answer waits for the next one: the audio's p99 followed the poll.
A short poll (``REALTIME_FETCH_WAIT_MS``) on every partition, always, cost the executor about
17 % of a core and the broker a third of one with no session at all. So the group consumer
(``llmgw-executor-realtime``: assignment, commits, dead letters) keeps its long poll, and while
this executor holds a session, a reader outside any group (``assign``, no commits) polls only
the partitions such sessions arrive on, from the next offset not yet handled.

Both readers hand every record to ``deliver``: it is handled once, by whichever reader brings it
first, and in partition order (one lock per partition; a record at or below the partition's
mark, the highest offset handled, is dropped). Each reader reads its partitions in order from at
most the mark's next offset, so no record is skipped. A partition the group takes away leaves
the lane with its mark; a record the lane's reader brings for a partition no longer in it is
dropped (the group's reader brings it, or the partition's new owner does).

State: only in memory (marks, locks, the partitions' sessions). After a restart the group
consumer reads on from its commits and the lane starts empty: sessions do not survive an
executor anyway (``realtime.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition
from pydantic import ValidationError

from services.runtime import telemetry
from services.runtime.kafka import MAX_MESSAGE_BYTES, REALTIME_FETCH_WAIT_MS

log = logging.getLogger(__name__)
#: The group consumer's long poll: an idle executor fetches about twice a second.
GROUP_FETCH_WAIT_MS = 500

Handle = Callable[[Any, ConsumerRecord], Awaitable[None]]


class Lane:
    """Marks, locks, and the short-polling reader of the partitions with live sessions.
    ``decode`` turns a record's value into the handler's event (a ``ValidationError``: the
    lane skips it, and the group consumer dead-letters it); ``handle(event, record)``."""

    def __init__(
        self, bootstrap_servers: str, client_id: str, decode: Callable[[bytes], Any], handle: Handle
    ):
        self._bootstrap = bootstrap_servers
        self._client_id = client_id
        self._decode = decode
        self._handle = handle
        self._marks: dict[TopicPartition, int] = {}
        self._locks: dict[TopicPartition, asyncio.Lock] = {}
        #: the partitions in the lane, and the sessions keeping each there
        self._sessions: dict[TopicPartition, set[str]] = {}
        self._reader: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._reassign = False

    @property
    def partitions(self) -> set[TopicPartition]:
        return set(self._sessions)

    def mark(self, tp: TopicPartition) -> int | None:
        """The highest offset of ``tp`` handled (None: none since it was assigned here)."""
        return self._marks.get(tp)

    async def deliver(self, event: Any, record: ConsumerRecord, *, from_lane: bool = False) -> None:
        """Handle ``record`` unless it already was (or, from the lane's reader, unless its
        partition left the lane)."""
        tp = TopicPartition(record.topic, record.partition)
        lock = self._locks.get(tp)
        if lock is None:
            lock = self._locks[tp] = asyncio.Lock()
        async with lock:
            if from_lane and tp not in self._sessions:
                return
            mark = self._marks.get(tp)
            if mark is not None and record.offset <= mark:
                return
            self._marks[tp] = record.offset
            await self._handle(event, record)

    def join(self, tp: TopicPartition, session_id: str) -> None:
        """``session_id``'s frames arrive on ``tp``: read it on the lane from its mark on."""
        held = self._sessions.setdefault(tp, set())
        new = not held
        held.add(session_id)
        if new:
            self._reassign = True
            self._changed.set()
            if self._task is None:
                self._task = asyncio.create_task(self._run(), name="realtime-lane")

    def leave(self, tp: TopicPartition, session_id: str) -> None:
        """``session_id`` ended: ``tp`` leaves the lane once no session of it is left."""
        held = self._sessions.get(tp)
        if held is None:
            return
        held.discard(session_id)
        if not held:
            del self._sessions[tp]
            self._reassign = True
            self._changed.set()

    def revoked(self, tps: set[TopicPartition]) -> None:
        """The group took ``tps`` away: out of the lane, marks forgotten."""
        for tp in tps:
            self._marks.pop(tp, None)
            self._locks.pop(tp, None)
            if self._sessions.pop(tp, None) is not None:
                self._reassign = True
        if self._reassign:
            self._changed.set()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader.stop()
            self._reader = None

    def _apply(self, reader: AIOKafkaConsumer) -> None:
        """The reader on the lane's partitions, each from the offset after its mark."""
        self._reassign = False
        # a session joins once its open was handled, so each of these partitions has a mark
        tps = sorted((tp for tp in self._sessions if tp in self._marks), key=lambda t: (t.topic, t.partition))
        reader.assign(tps)
        for tp in tps:
            reader.seek(tp, self._marks[tp] + 1)

    async def _run(self) -> None:
        reader = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=REALTIME_FETCH_WAIT_MS,
            max_partition_fetch_bytes=MAX_MESSAGE_BYTES + 65536,
            fetch_max_bytes=4 * MAX_MESSAGE_BYTES,
        )
        await reader.start()
        self._reader = reader
        self._reassign = True
        try:
            while True:
                if self._reassign:
                    self._apply(reader)
                if not self._sessions:
                    self._changed.clear()
                    await self._changed.wait()
                    continue
                self._changed.clear()
                batches = await reader.getmany(timeout_ms=100, max_records=500)
                for records in batches.values():
                    for record in records:
                        if self._reassign:  # positions change: what is left is read again
                            break
                        await self._one(record)
        except asyncio.CancelledError:
            raise
        except Exception:  # the group consumer still delivers every frame, only later
            log.exception("realtime fast lane stopped: frames go by the group consumer's poll")
            self._task = None
            self._reader = None
            with contextlib.suppress(Exception):
                await reader.stop()

    async def _one(self, record: ConsumerRecord) -> None:
        try:
            event = self._decode(record.value)
        except ValidationError:
            return  # the group consumer dead-letters it
        try:
            with telemetry.consuming(record.topic, record.headers, span=False):
                await self.deliver(event, record, from_lane=True)
        except Exception:  # as the group consumer's handler failing: this frame is lost, not the lane
            log.exception("realtime frame %s[%d]@%d failed", record.topic, record.partition, record.offset)
