"""The realtime fast lane on a real broker: once a session's partition joins, the lane's own
reader brings the partition's next records (from the mark on, in order, none twice), stops
reading it once the session leaves, and reads a second partition joined later too."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.structs import ConsumerRecord, TopicPartition

from services.executor.realtime_lane import Lane
from services.runtime.kafka import Publisher
from tests.integration.kafka_support import new_topic


async def test_the_lane_reads_a_joined_partition_from_its_mark(kafka_bootstrap: str):
    topic = await new_topic(kafka_bootstrap, prefix="lane", partitions=2)
    seen: list[tuple[int, int, bytes]] = []
    arrived = asyncio.Condition()

    async def handle(event: Any, record: ConsumerRecord[Any, Any]) -> None:
        async with arrived:
            seen.append((record.partition, record.offset, event))
            arrived.notify_all()

    async def until(n: int) -> None:
        async with arrived:
            await asyncio.wait_for(arrived.wait_for(lambda: len(seen) >= n), 30)

    ln = Lane(kafka_bootstrap, "test-lane", lambda b: b, handle)
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    async with Publisher(kafka_bootstrap) as pub:
        acks = [await pub.send_raw(topic, b"p0-%d" % i, key=None, partition=0) for i in range(3)]
        offsets = [(await a).offset for a in acks]
        # the group's reader handled the first two (the second: the session's open)
        first = ConsumerRecord(topic, 0, offsets[0], 0, 0, None, b"p0-0", None, 0, 4, [])
        opened = ConsumerRecord(topic, 0, offsets[1], 0, 0, None, b"p0-1", None, 0, 4, [])
        await ln.deliver(b"p0-0", first)
        await ln.deliver(b"p0-1", opened)
        try:
            ln.join(tp0, "s1")
            await until(3)  # the lane brings the third, written before it joined
            for i in range(3, 6):
                await (await pub.send_raw(topic, b"p0-%d" % i, key=None, partition=0))
            await until(6)
            assert [v for _, _, v in seen] == [b"p0-%d" % i for i in range(6)]

            # a second partition: its open handled by the group's reader, then joined
            a = await (await pub.send_raw(topic, b"p1-0", key=None, partition=1))
            await ln.deliver(b"p1-0", ConsumerRecord(topic, 1, a.offset, 0, 0, None, b"p1-0", None, 0, 4, []))
            ln.join(tp1, "s2")
            for i in range(1, 3):
                await (await pub.send_raw(topic, b"p1-%d" % i, key=None, partition=1))
            await (await pub.send_raw(topic, b"p0-6", key=None, partition=0))
            await until(10)
            assert [v for p, _, v in seen if p == 1] == [b"p1-0", b"p1-1", b"p1-2"]
            assert [v for p, _, v in seen if p == 0] == [b"p0-%d" % i for i in range(7)]

            # the session on partition 0 ends: the lane stops bringing it
            ln.leave(tp0, "s1")
            assert ln.partitions == {tp1}
            await (await pub.send_raw(topic, b"p0-late", key=None, partition=0))
            await (await pub.send_raw(topic, b"p1-3", key=None, partition=1))
            await until(11)  # partition 1's record, read after partition 0's (written first)
            assert seen[-1][2] == b"p1-3"
            assert b"p0-late" not in [v for _, _, v in seen]
        finally:
            await ln.aclose()
