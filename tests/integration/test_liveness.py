"""Liveness on a real broker: a consumer whose handlers run far longer than
``max.poll.interval.ms`` stays in its group (its partitions are paused, the fetch loop goes
on), while one that stops polling that long is put out of it; a record that cannot be
dead-lettered stops the consumer, and a service process, loudly, leaving the record to the
group's next reader."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.runtime.kafka import Consumer, DeadLetterFailed, DeadLetters, Subscription
from tests.support import eventually

from .test_consumer import committed, make_consumer, read_all, request

ROOT = Path(__file__).resolve().parents[2]
INTERVAL_MS = 1000  # max.poll.interval.ms of these consumers
HANDLER_S = 3.0  # three intervals


async def test_a_saturated_consumer_stays_in_its_group_past_max_poll_interval(
    kafka_bootstrap, topics, publisher, topic_prefix
):
    """Two slots, four records whose handlers each run three intervals: the consumer is
    saturated for two handler times, yet never loses its partition (no revocation, each record
    handled once) and commits everything."""
    group = topic_prefix + "g"
    seen: list[str] = []
    revoked: list[set] = []

    async def slow(req, record):
        seen.append(req.request_id)
        await asyncio.sleep(HANDLER_S)  # the work: a provider call far longer than the interval

    async def on_revoked(tps):
        if tps:  # aiokafka also reports an empty revocation as it first joins
            revoked.append(set(tps))

    c = make_consumer(
        kafka_bootstrap,
        topics,
        publisher,
        group,
        slow,
        max_in_flight=2,
        max_poll_interval_ms=INTERVAL_MS,
        on_revoked=on_revoked,
    )
    await c.start()
    await c.assigned.wait()
    for i in range(4):
        await (await publisher.publish(topics.requests.name, request(i), key="k", partition=0))
    tp = TopicPartition(topics.requests.name, 0)
    await eventually(lambda: tp in c._consumer.paused())  # saturated: paused, still polling
    await eventually(lambda: len(seen) == 4, within=30)
    await eventually(lambda: c._progress[tp].commit_point() == 4, within=30)
    await c._commit()
    assert revoked == [] and c.failure is None
    await c.aclose()
    assert sorted(seen) == ["r0", "r1", "r2", "r3"]  # once each: never redelivered
    assert (await committed(kafka_bootstrap, group, topics.requests.name, [0]))[0] == 4


async def test_a_fetch_loop_blocked_past_max_poll_interval_loses_its_group(
    kafka_bootstrap, topics, publisher, topic_prefix
):
    """The control experiment: the same handler run inline (awaited in the fetch loop) stops
    polling for three intervals, and aiokafka leaves the group: the partition is revoked."""
    group = topic_prefix + "g"
    revoked: list[set] = []

    async def slow(raw, record):
        await asyncio.sleep(HANDLER_S)

    async def on_revoked(tps):
        if tps:  # aiokafka also reports an empty revocation as it first joins
            revoked.append(set(tps))

    c = Consumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        dead_letters=DeadLetters(publisher, topics.dlq.name, "test"),
        subscriptions={topics.requests.name: Subscription(lambda b: b, slow, inline=True)},
        max_poll_interval_ms=INTERVAL_MS,
        on_revoked=on_revoked,
    )
    await c.start()
    await c.assigned.wait()
    await (await publisher.publish(topics.requests.name, request(0), key="k", partition=0))
    await eventually(lambda: bool(revoked), within=30)
    await c.aclose()


async def _dlq_too_small_for(bootstrap: str, name: str, max_bytes: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1, topic_configs={"max.message.bytes": str(max_bytes)})])
    finally:
        await admin.close()


async def test_a_record_that_cannot_be_dead_lettered_stops_the_consumer_and_is_read_again(
    kafka_bootstrap, topics, publisher, topic_prefix
):
    group = topic_prefix + "g"
    small = topic_prefix + "small-dlq"
    await _dlq_too_small_for(kafka_bootstrap, small, 1024)
    junk = b"x" * 4096  # not JSON, and larger than the small DLQ takes
    await (await publisher.send_raw(topics.requests.name, junk, key=b"k", partition=0))
    handled: list[str] = []

    async def h(req, record):
        handled.append(req.request_id)

    c1 = Consumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        topics=[topics.requests.name],
        model=type(request(0)),
        handler=h,
        dead_letters=DeadLetters(publisher, small, "test", retry_s=1.0),
    )
    await c1.start()
    await eventually(lambda: c1.failure is not None, within=30)
    assert isinstance(c1.failure, DeadLetterFailed) and "could not dead-letter" in str(c1.failure)
    await c1.aclose()
    assert (await committed(kafka_bootstrap, group, topics.requests.name, [0]))[0] in (None, 0)

    c2 = make_consumer(kafka_bootstrap, topics, publisher, group, h)  # the group's next reader
    await c2.start()
    dead = await read_all(kafka_bootstrap, topics.dlq.name, 1)
    tp = TopicPartition(topics.requests.name, 0)
    await eventually(lambda: tp in c2._progress and c2._progress[tp].commit_point() == 1)
    await c2.aclose()
    assert dead[0].value == junk and dict(dead[0].headers)["dlq.reason"].startswith(
        b"ChatRequested: invalid JSON"
    )
    assert (await committed(kafka_bootstrap, group, topics.requests.name, [0]))[0] == 1


SERVICE = textwrap.dedent(
    """
    import asyncio, os
    from services.contracts.events import ChatRequested
    from services.runtime.kafka import Consumer, DeadLetters, Publisher
    from services.runtime.service import run_service

    async def serve(settings):
        async with Publisher(settings.bootstrap_servers) as pub:
            async def handle(req, record):
                pass
            c = Consumer(
                bootstrap_servers=settings.bootstrap_servers, group_id=os.environ["T_GROUP"],
                topics=[os.environ["T_TOPIC"]], model=ChatRequested, handler=handle,
                dead_letters=DeadLetters(pub, os.environ["T_DLQ"], "t", retry_s=1.0),
            )
            await c.start()
            try:
                await asyncio.Event().wait()
            finally:
                await c.aclose()

    run_service("liveness-test", serve)
    """
)


async def test_a_service_whose_dead_letters_fail_exits_non_zero(
    kafka_bootstrap, topics, publisher, topic_prefix, tmp_path
):
    small = topic_prefix + "small-dlq"
    await _dlq_too_small_for(kafka_bootstrap, small, 1024)
    await (await publisher.send_raw(topics.requests.name, b"y" * 4096, key=b"k", partition=0))
    env = os.environ | {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "T_GROUP": topic_prefix + "svc",
        "T_TOPIC": topics.requests.name,
        "T_DLQ": small,
        "LLMGW_LOG_LEVEL": "INFO",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVICE, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        async with asyncio.timeout(60):
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = out.decode(errors="replace")
    assert proc.returncode == 1, log
    assert "could not dead-letter" in log and "exits with status 1" in log, log
    assert "left group" in log  # it drained and left, then exited
