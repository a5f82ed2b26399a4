"""The runtime's tail-reader on a real broker: from the end (or the beginning), every record in
partition order, a failing handler skipped, ``reach`` / ``caught_up`` as synchronisation."""

from __future__ import annotations

import uuid

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.runtime.kafka import Publisher
from services.runtime.tail import Tail


async def _topic(bootstrap: str, partitions: int) -> str:
    name = f"tail-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name


async def test_reads_what_comes_after_start_in_order_and_survives_a_failing_handler(kafka_bootstrap: str):
    topic = await _topic(kafka_bootstrap, 3)
    async with Publisher(kafka_bootstrap) as pub:
        for i in range(3):  # before the tail starts: not read
            await (await pub.send_raw(topic, b"old%d" % i, key=None, partition=i))
        seen: list[tuple[int, bytes]] = []

        def on_record(r):  # type: ignore[no-untyped-def]
            if r.value == b"boom":
                raise ValueError("a handler bug")
            seen.append((r.partition, r.value))

        tail = Tail(kafka_bootstrap, topic, on_record, partitions=range(3))
        await tail.start()
        try:
            acks = [
                await pub.send_raw(topic, b"p%d-%d" % (i % 3, i), key=None, partition=i % 3) for i in range(9)
            ]
            acks.append(await pub.send_raw(topic, b"boom", key=None, partition=0))
            acks.append(await pub.send_raw(topic, b"after", key=None, partition=0))
            for a in acks:
                await a
            await tail.caught_up()
        finally:
            await tail.aclose()
    assert not any(v.startswith(b"old") for _, v in seen)
    for p in range(3):
        assert [v for q, v in seen if q == p] == [b"p%d-%d" % (p, i) for i in range(p, 9, 3)] + (
            [b"after"] if p == 0 else []
        )


async def test_from_the_beginning_and_one_partition_only(kafka_bootstrap: str):
    topic = await _topic(kafka_bootstrap, 2)
    async with Publisher(kafka_bootstrap) as pub:
        for i in range(4):
            await (await pub.send_raw(topic, b"r%d" % i, key=None, partition=i % 2))
        seen: list[bytes] = []
        tail = Tail(
            kafka_bootstrap, topic, lambda r: seen.append(r.value), partitions=[1], start_at="beginning"
        )
        await tail.start()
        try:
            await tail.caught_up()
            assert seen == [b"r1", b"r3"]
            ack = await pub.send_raw(topic, b"r5", key=None, partition=1)
            meta = await ack
            await tail.reach({1: meta.offset + 1})
            assert seen == [b"r1", b"r3", b"r5"]
        finally:
            await tail.aclose()
