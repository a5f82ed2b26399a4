"""The runtime's tail-reader on a real broker: from the end (or the beginning), every record in
partition order, a failing handler skipped, ``reach`` / ``caught_up`` as synchronisation, and a
record the handler reports ``Malformed`` dead-lettered (or, when that fails, logged) as it reads on."""

from __future__ import annotations

import logging

import pytest

from services.runtime.kafka import DeadLetterFailed, DeadLetters, Publisher
from services.runtime.tail import Malformed, Tail
from tests.integration.kafka_support import new_topic


async def test_reads_what_comes_after_start_in_order_and_survives_a_failing_handler(kafka_bootstrap: str):
    topic = await new_topic(kafka_bootstrap, prefix="tail", partitions=3)
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
    topic = await new_topic(kafka_bootstrap, prefix="tail", partitions=2)
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


async def test_a_malformed_record_is_dead_lettered_with_its_reason_and_the_tail_reads_on(
    kafka_bootstrap: str,
):
    topic, dlq = (
        await new_topic(kafka_bootstrap, prefix="tail", partitions=2),
        await new_topic(kafka_bootstrap, prefix="tail", partitions=1),
    )
    seen: list[bytes] = []

    def on_record(r):  # type: ignore[no-untyped-def]
        if not r.value.startswith(b"ok"):
            raise Malformed(f"not ok: {r.value[:10]!r}")
        seen.append(r.value)

    async with Publisher(kafka_bootstrap) as pub:
        tail = Tail(
            kafka_bootstrap,
            topic,
            on_record,
            partitions=range(2),
            dead_letters=DeadLetters(pub, dlq, "tail-test"),
        )
        dead: list = []
        reader = Tail(kafka_bootstrap, dlq, dead.append, partitions=[0])
        await tail.start()
        await reader.start()
        try:
            sent = []
            for i, value in enumerate([b"ok1", b"bad1", b"ok2", b"{bad2", b"ok3"]):
                sent.append(await (await pub.send_raw(topic, value, key=b"k%d" % i, partition=i % 2)))
            await tail.caught_up()
            await reader.caught_up()  # the dead letters were acknowledged before the tail read on
        finally:
            await tail.aclose()
            await reader.aclose()
    assert sorted(seen) == [b"ok1", b"ok2", b"ok3"]
    by_value = {r.value: (r.key, dict(r.headers)) for r in dead}
    assert sorted(by_value) == [b"bad1", b"{bad2"]
    for value, meta in ((b"bad1", sent[1]), (b"{bad2", sent[3])):
        key, h = by_value[value]
        assert key == b"k%d" % sent.index(meta)
        assert h["dlq.reason"] == f"not ok: {value[:10]!r}".encode()
        assert h["dlq.source.topic"] == topic.encode()
        assert (int(h["dlq.source.partition"]), int(h["dlq.source.offset"])) == (meta.partition, meta.offset)
        assert h["dlq.consumer"] == b"tail-test"


class _Unsendable(DeadLetters):
    def __init__(self) -> None:
        self.tried: list[int] = []

    async def send(self, record, reason: str) -> None:  # type: ignore[no-untyped-def]
        self.tried.append(record.offset)
        raise DeadLetterFailed(f"could not dead-letter offset {record.offset}")


async def test_a_dead_letter_that_cannot_be_sent_is_logged_and_the_tail_goes_on(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
):
    topic = await new_topic(kafka_bootstrap, prefix="tail", partitions=1)
    seen: list[bytes] = []

    def on_record(r):  # type: ignore[no-untyped-def]
        if r.value == b"bad":
            raise Malformed("bad")
        seen.append(r.value)

    dlq = _Unsendable()
    tail = Tail(kafka_bootstrap, topic, on_record, partitions=[0], dead_letters=dlq)
    await tail.start()
    try:
        async with Publisher(kafka_bootstrap) as pub:
            for value in (b"a", b"bad", b"b"):
                await (await pub.send_raw(topic, value, key=None, partition=0))
        with caplog.at_level(logging.ERROR, logger="services.runtime.tail"):
            await tail.caught_up()
    finally:
        await tail.aclose()
    assert seen == [b"a", b"b"] and dlq.tried == [1]
    assert any("could not dead-letter offset 1" in r.getMessage() for r in caplog.records)
