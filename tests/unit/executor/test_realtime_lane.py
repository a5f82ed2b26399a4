"""The realtime fast lane's delivery rule (``realtime_lane.Lane.deliver``): every record handled
once and in partition order, whichever of two readers brings it first; records of a partition
that left the lane (or was revoked) are not handled by the lane's reader."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.structs import ConsumerRecord, TopicPartition

from services.executor.realtime_lane import Lane

TOPIC = "llm.realtime.in"


def rec(offset: int, partition: int = 0) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord(TOPIC, partition, offset, 0, 0, None, b"{}", None, 0, 2, [])


def lane(handled: list[tuple[int, int]]) -> Lane:
    async def handle(event: Any, record: ConsumerRecord[Any, Any]) -> None:
        await asyncio.sleep(0)  # a handler that yields: the other reader runs meanwhile
        await asyncio.sleep(0)
        handled.append((record.partition, record.offset))

    return Lane("127.0.0.1:1", "test", lambda b: b, handle)


async def test_two_readers_each_record_once_in_order():
    handled: list[tuple[int, int]] = []
    ln = lane(handled)
    tp = TopicPartition(TOPIC, 0)
    ln._sessions[tp] = {"s"}  # in the lane (join would start the reader)

    joined = asyncio.Event()

    async def group() -> None:
        for o in range(20):
            await ln.deliver(None, rec(o))
            if o == 4:
                joined.set()

    async def fast() -> None:
        await joined.wait()  # joins later, and reads from the mark's next offset at the time
        start = ln.mark(tp)
        assert start is not None
        for o in range(start + 1, 20):
            await ln.deliver(None, rec(o), from_lane=True)

    await asyncio.gather(group(), fast())
    assert handled == [(0, o) for o in range(20)]
    assert ln.mark(tp) == 19


async def test_a_record_at_or_below_the_mark_is_dropped_per_partition():
    handled: list[tuple[int, int]] = []
    ln = lane(handled)
    await ln.deliver(None, rec(3, 0))
    await ln.deliver(None, rec(3, 0))
    await ln.deliver(None, rec(2, 0))
    await ln.deliver(None, rec(1, 1))  # another partition: its own mark
    assert handled == [(0, 3), (1, 1)]


async def test_the_lanes_reader_drops_records_of_a_partition_not_in_the_lane():
    handled: list[tuple[int, int]] = []
    ln = lane(handled)
    tp = TopicPartition(TOPIC, 0)
    await ln.deliver(None, rec(0))
    await ln.deliver(None, rec(1), from_lane=True)  # never joined
    ln._sessions[tp] = {"s"}
    await ln.deliver(None, rec(1), from_lane=True)
    ln.leave(tp, "s")
    assert ln.partitions == set()
    await ln.deliver(None, rec(2), from_lane=True)  # left: the group's reader brings it
    await ln.deliver(None, rec(2))
    assert handled == [(0, 0), (0, 1), (0, 2)]


async def test_revoked_partitions_leave_the_lane_and_forget_their_mark():
    handled: list[tuple[int, int]] = []
    ln = lane(handled)
    tp0, tp1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    ln._sessions[tp0] = {"a"}
    ln._sessions[tp1] = {"b"}
    await ln.deliver(None, rec(7, 0))
    await ln.deliver(None, rec(4, 1))
    ln.revoked({tp0})
    assert ln.partitions == {tp1}
    assert ln.mark(tp0) is None and ln.mark(tp1) == 4
    await ln.deliver(None, rec(8, 0), from_lane=True)  # no longer ours
    assert handled == [(0, 7), (1, 4)]
    await ln.deliver(None, rec(5, 0))  # assigned here again: read from the group's commit
    assert handled[-1] == (0, 5)


async def test_a_partition_stays_in_the_lane_while_any_of_its_sessions_lives():
    handled: list[tuple[int, int]] = []
    ln = lane(handled)
    tp = TopicPartition(TOPIC, 0)
    ln._sessions[tp] = {"a", "b"}
    ln.leave(tp, "a")
    assert ln.partitions == {tp}
    ln.leave(tp, "b")
    assert ln.partitions == set()
    ln.leave(tp, "b")  # twice: nothing
