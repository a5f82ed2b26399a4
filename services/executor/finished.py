"""What finished, kept in Kafka: a redelivered plan whose request already ran is not sent to a
provider again, after a restart of the executor too. The request id is the idempotency key.

* Every plan the executor runs ends with an ``ExecutionFinished`` marker on ``llm.finished``, in
  the partition number of the plan's ``llm.exec`` partition (the two have the same partition
  count). It is enqueued right after the request's result, usage and audit events, with no loop
  turn between them (one produce request), and acknowledged with them before the plan's offset is
  committed (``outcome.py``).
* In memory, the executor keeps the ids of requests finished recently: what it ran, and what it
  read back. A plan whose id is there is committed without running.
* On assignment of ``llm.exec`` partition *p*, *p* is held (none of its plans is handled) while
  the markers that matter are read back (``Finished.on_assigned``):

  1. *C*: the group's committed offset of *p* (none: its first offset); *E*: its end offset. The
     plans that may be redelivered are those in [*C*, *E*); *C* = *E*: nothing to read.
  2. *T*: the timestamp of the plan at *C*. The marker of any plan at or after *C* was written
     after that plan was read, so after *T*: ``llm.finished`` *p* is read from its first record at
     *T* − ``SKEW_S`` (clocks of router and executor hosts differ) to its end offset.
  3. The request ids of the markers of plans at or after *C* join the finished set; *p* is released.

  What is read is bounded by the age of the oldest uncommitted plan, not by the topic's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Literal

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.contracts.events import ExecutionFinished, ExecutionPlanned
from services.runtime.kafka import Consumer, range_reader
from services.runtime.topics import Topics

log = logging.getLogger(__name__)
#: How far before the oldest uncommitted plan's timestamp the markers are read (clock skew, s).
SKEW_S = 60.0


def marker(
    plan: ExecutionPlanned, partition: int, offset: int, status: Literal["ok", "error", "cancelled"]
) -> ExecutionFinished:
    req = plan.request
    return ExecutionFinished(
        request_id=req.request_id,
        tenant_id=req.tenant_id,
        user_id=req.user_id,
        exec_partition=partition,
        exec_offset=offset,
        status=status,
    )


class Finished:
    """Reads the markers of assigned ``llm.exec`` partitions back before they are served."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topics: Topics,
        consumer: Consumer[ExecutionPlanned],
        remember: Callable[[str], None],
        client_id: str,
    ):
        self.bootstrap = bootstrap_servers
        self.topics = topics
        self.consumer = consumer
        self.remember = remember
        self.client_id = client_id
        self._generation: dict[int, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: (partitions, markers read, seconds) of each rebuild, for tests and logs
        self.rebuilds: list[tuple[frozenset[int], int, float]] = []

    def on_assigned(self, tps: set[TopicPartition]) -> None:
        parts = {tp.partition for tp in tps if tp.topic == self.topics.exec.name}
        if not parts:
            return
        self.consumer.hold({TopicPartition(self.topics.exec.name, p) for p in parts})
        for p in parts:
            self._generation[p] = self._generation.get(p, 0) + 1
        task = asyncio.create_task(self._rebuild(parts, {p: self._generation[p] for p in parts}))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def on_revoked(self, tps: set[TopicPartition]) -> None:
        for tp in tps:
            if tp.topic == self.topics.exec.name:  # a rebuild still running for it is void
                self._generation[tp.partition] = self._generation.get(tp.partition, 0) + 1

    async def aclose(self) -> None:
        for t in list(self._tasks):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _rebuild(self, parts: set[int], generation: dict[int, int]) -> None:
        delay = 0.5
        while True:
            t0 = time.perf_counter()
            try:
                committed = {p: await self.consumer.committed(self._exec(p)) for p in parts}
                ids = await self.read(committed)
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "reading finished requests of llm.exec partitions %s failed; retrying", sorted(parts)
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        assigned = self.consumer.assignment()
        done = {p for p in parts if self._generation.get(p) == generation[p] and self._exec(p) in assigned}
        for p in done:
            for rid in ids[p]:
                self.remember(rid)
        seconds = time.perf_counter() - t0
        count = sum(len(ids[p]) for p in done)
        self.rebuilds.append((frozenset(done), count, seconds))
        log.info(
            "finished requests of llm.exec partitions %s read back: %d in %.3f s",
            sorted(done),
            count,
            seconds,
        )
        self.consumer.release({self._exec(p) for p in done})

    def _exec(self, p: int) -> TopicPartition:
        return TopicPartition(self.topics.exec.name, p)

    async def read(self, committed: dict[int, int | None]) -> dict[int, set[str]]:
        """Partition -> ids of the requests that finished among its plans at or after its
        committed offset (see the module docstring)."""
        async with range_reader(self.bootstrap, self.client_id) as reader:
            return await read_finished(reader, self.topics, committed)


async def read_finished(
    reader: AIOKafkaConsumer, topics: Topics, committed: dict[int, int | None]
) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {p: set() for p in committed}
    plans = {p: TopicPartition(topics.exec.name, p) for p in committed}
    begins = await reader.beginning_offsets(list(plans.values()))
    ends = await reader.end_offsets(list(plans.values()))
    first = {p: max(committed[p] or 0, begins[tp]) for p, tp in plans.items()}
    pending = [p for p in committed if first[p] < ends[plans[p]]]
    if not pending:
        return out
    reader.assign([plans[p] for p in pending])
    since: dict[int, int] = {}
    for p in pending:
        reader.seek(plans[p], first[p])
        oldest = await reader.getone(plans[p])  # the oldest plan that may be redelivered
        since[p] = oldest.timestamp - int(SKEW_S * 1000)
    marks = {p: TopicPartition(topics.finished.name, p) for p in pending}
    reader.assign(list(marks.values()))
    found = await reader.offsets_for_times({marks[p]: since[p] for p in pending})
    mark_ends = await reader.end_offsets(list(marks.values()))
    left = set()
    for p in pending:
        at = found.get(marks[p])
        start = at.offset if at is not None else mark_ends[marks[p]]
        reader.seek(marks[p], start)
        if start < mark_ends[marks[p]]:
            left.add(p)
    while left:
        batches = await reader.getmany(*(marks[p] for p in left), timeout_ms=500)
        for tp, records in batches.items():
            for r in records:
                _collect(out, tp.partition, first[tp.partition], r.value)
        left = {p for p in left if await reader.position(marks[p]) < mark_ends[marks[p]]}
    return out


def _collect(out: dict[int, set[str]], partition: int, first: int, value: bytes | None) -> None:
    try:
        doc = orjson.loads(value or b"")
        rid, exec_partition, offset = doc["request_id"], doc["exec_partition"], doc["exec_offset"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        log.warning("ignoring an unreadable marker in llm.finished partition %d", partition)
        return
    if exec_partition == partition and isinstance(offset, int) and offset >= first and isinstance(rid, str):
        out[partition].add(rid)


def check_partitions(topics: Topics) -> None:
    """The markers of ``llm.exec`` partition *i* go to ``llm.finished`` partition *i*."""
    if topics.finished.partitions != topics.exec.partitions:
        raise ValueError(
            f"topics.yaml: {topics.finished.name} has {topics.finished.partitions} partitions and"
            f" {topics.exec.name} {topics.exec.partitions}: they must be equal"
        )
