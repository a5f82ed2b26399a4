"""The at-least-once consumer on a real broker: commits, redelivery after a crash,
dead letters, rebalancing between two instances, co-partitioning with the range assignor."""

from __future__ import annotations

import asyncio
import os

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.contracts.events import ChatRequested
from services.runtime.kafka import Consumer, DeadLetters
from tests.support import eventually


def request(i: int, tenant: str = "demo") -> ChatRequested:
    return ChatRequested(
        request_id=f"r{i}", tenant_id=tenant, model="m", messages=[{"role": "user", "content": str(i)}]
    )


def make_consumer(bootstrap, topics, publisher, group, handler, **kw):
    return Consumer(
        bootstrap_servers=bootstrap,
        topics=kw.pop("names", [topics.requests.name]),
        group_id=group,
        model=ChatRequested,
        handler=handler,
        dead_letters=DeadLetters(publisher, topics.dlq.name, "test"),
        **kw,
    )


async def committed(bootstrap, group, topic, partitions):
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await c.start()
    try:
        return {p: await c.committed(TopicPartition(topic, p)) for p in partitions}
    finally:
        await c.stop()


async def read_all(bootstrap, topic, n, timeout=30.0):
    c = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        max_partition_fetch_bytes=9 * 1024 * 1024,
    )
    await c.start()
    out = []
    try:
        async with asyncio.timeout(timeout):
            while len(out) < n:
                for recs in (await c.getmany(timeout_ms=500)).values():
                    out.extend(recs)
    finally:
        await c.stop()
    return out


async def test_unfinished_records_are_redelivered_after_a_crash(
    kafka_bootstrap, topics, publisher, topic_prefix
):
    """Record 1 finishes, record 0 hangs: the commit stays at 0, so after a crash both come back."""
    group = topic_prefix + "g"
    for i in range(2):
        await (await publisher.publish(topics.requests.name, request(i), key="one", partition=0))
    release = asyncio.Event()
    seen: list[str] = []

    async def slow_first(req, record):
        seen.append(req.request_id)
        if req.request_id == "r0":
            await release.wait()

    c1 = make_consumer(kafka_bootstrap, topics, publisher, group, slow_first, revoke_grace_s=0.1)
    await c1.start()
    await eventually(lambda: len(seen) == 2)
    await c1._commit()  # what the periodic commit would do
    assert (await committed(kafka_bootstrap, group, topics.requests.name, [0]))[0] in (None, 0)
    # crash: drop everything without finishing r0
    c1._run_task.cancel()
    c1._commit_task.cancel()
    await c1._consumer.stop()

    again: list[str] = []

    async def record_all(req, record):
        again.append(req.request_id)

    c2 = make_consumer(kafka_bootstrap, topics, publisher, group, record_all)
    await c2.start()
    await eventually(lambda: len(again) == 2)
    await c2.aclose()
    assert sorted(again) == ["r0", "r1"]
    assert (await committed(kafka_bootstrap, group, topics.requests.name, [0]))[0] == 2
    release.set()


async def test_malformed_records_go_to_dlq_and_consumer_continues(
    kafka_bootstrap, topics, publisher, topic_prefix
):
    handled: list[str] = []
    invalid: list[str] = []

    async def handler(req, record):
        handled.append(req.request_id)

    async def on_invalid(record, exc):
        invalid.append(record.offset)

    c = make_consumer(kafka_bootstrap, topics, publisher, topic_prefix + "g", handler, on_invalid=on_invalid)
    await c.start()
    junk = os.urandom(5 * 1024 * 1024)
    bad = [
        b"{not json",
        orjson.dumps({"request_id": "x", "tenant_id": "t", "model": "m", "messages": []}),
        junk,
    ]
    for value in bad:
        await (await publisher.send_raw(topics.requests.name, value, key=b"k", partition=0))
    await (await publisher.publish(topics.requests.name, request(7), key="k", partition=0))
    dead = await read_all(kafka_bootstrap, topics.dlq.name, 3)
    await eventually(lambda: bool(handled))
    await c.aclose()
    assert handled == ["r7"]
    assert len(invalid) == 3
    by_value = {r.value: dict(r.headers) for r in dead}
    assert set(by_value) == set(bad)  # original bytes, unchanged, nothing lost
    assert b"invalid JSON" in by_value[b"{not json"]["dlq.reason"]
    assert b"messages: List should have at least 1 item" in by_value[bad[1]]["dlq.reason"]
    assert by_value[junk]["dlq.source.topic"] == topics.requests.name.encode()
    assert all(h["dlq.consumer"] == b"test" and h["dlq.source.offset"].isdigit() for h in by_value.values())


async def test_a_raising_handler_dead_letters_its_record(kafka_bootstrap, topics, publisher, topic_prefix):
    seen = []

    async def boom(req, record):
        seen.append(req.request_id)
        if req.request_id == "r1":
            raise RuntimeError("kaput")

    c = make_consumer(kafka_bootstrap, topics, publisher, topic_prefix + "g", boom)
    await c.start()
    for i in range(3):
        await (await publisher.publish(topics.requests.name, request(i), key="k", partition=0))
    dead = await read_all(kafka_bootstrap, topics.dlq.name, 1)
    assert dict(dead[0].headers)["dlq.reason"] == b"handler error: RuntimeError: kaput"
    await eventually(lambda: len(seen) == 3)
    await c.aclose()  # commits what finished
    assert (await committed(kafka_bootstrap, topic_prefix + "g", topics.requests.name, [0]))[0] == 3


async def test_two_instances_share_partitions_and_process_each_record_once(
    kafka_bootstrap, topics, publisher, topic_prefix
):
    group = topic_prefix + "g"
    seen: dict[str, list[str]] = {"a": [], "b": []}

    def handler_for(name):
        async def h(req, record):
            seen[name].append(req.request_id)

        return h

    a = make_consumer(kafka_bootstrap, topics, publisher, group, handler_for("a"))
    b = make_consumer(kafka_bootstrap, topics, publisher, group, handler_for("b"))
    await a.start()
    await b.start()
    await eventually(
        lambda: bool(
            a.assignment()
            and b.assignment()
            and len(a.assignment() | b.assignment()) == 12
            and not a.assignment() & b.assignment()
        )
    )
    futs = [
        await publisher.publish(topics.requests.name, request(i, f"tenant{i % 50}"), key=f"tenant{i % 50}")
        for i in range(300)
    ]
    await asyncio.gather(*futs)
    await eventually(lambda: len(seen["a"]) + len(seen["b"]) >= 300)
    await a.aclose()
    await b.aclose()
    everything = seen["a"] + seen["b"]
    assert sorted(everything) == sorted(f"r{i}" for i in range(300))
    assert seen["a"] and seen["b"]


async def test_range_assignor_co_partitions_requests_and_usage(
    kafka_bootstrap, topics, publisher, topic_prefix
):
    """The router reads llm.requests and llm.usage together: the owner of a tenant's request
    partition must also own that tenant's usage partition."""
    group = topic_prefix + "g"
    names = [topics.requests.name, topics.usage.name]

    async def nop(req, record):
        pass

    cs = [
        make_consumer(kafka_bootstrap, topics, publisher, group, nop, names=names, assignor="range")
        for _ in range(2)
    ]
    for c in cs:
        await c.start()
    await eventually(lambda: sum(len(c.assignment()) for c in cs) == 24 and all(c.assignment() for c in cs))
    for c in cs:
        parts = {t: {tp.partition for tp in c.assignment() if tp.topic == t} for t in names}
        assert parts[names[0]] == parts[names[1]] and parts[names[0]]
    for c in cs:
        await c.aclose()
