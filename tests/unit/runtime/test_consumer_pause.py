"""The consumer at its in-flight limit pauses its partitions and keeps polling (so it never
outlives ``max.poll.interval.ms``), holds partitions on request, and reads topics with different
event types through one group. On a fake of aiokafka's consumer API (pause, resume, paused,
seek, getmany, assignment): the real broker's side is in tests/integration/test_colocation.py."""

from __future__ import annotations

import asyncio
from collections import deque

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from services.contracts.events import ChatRequested
from services.runtime.kafka import Consumer, DeadLetters, Subscription
from tests.support import eventually

A = TopicPartition("requests", 0)
U = TopicPartition("usage", 0)


def rec(tp: TopicPartition, offset: int, value: bytes) -> ConsumerRecord:
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, None, value, None, len(value), -1, [])


def chat(i: int) -> bytes:
    return (
        ChatRequested(
            request_id=f"r{i}", tenant_id="t", model="m", messages=[{"role": "user", "content": "x"}]
        )
        .model_dump_json()
        .encode()
    )


class FakeKafka:
    """Partitions with records; ``getmany`` returns what unpaused partitions have from their
    position (like aiokafka, a paused partition returns nothing), else waits a little."""

    def __init__(self, logs: dict[TopicPartition, list[bytes]]):
        self.logs = {tp: [rec(tp, i, v) for i, v in enumerate(vals)] for tp, vals in logs.items()}
        self.pos = dict.fromkeys(logs, 0)
        self._paused: set[TopicPartition] = set()
        self.polls = 0
        self.polls_while_paused = 0

    def assignment(self):
        return set(self.logs)

    def paused(self):
        return set(self._paused)

    def pause(self, *tps):
        self._paused |= set(tps)

    def resume(self, *tps):
        self._paused -= set(tps)

    def seek(self, tp, offset):
        self.pos[tp] = offset

    async def getmany(self, timeout_ms=0, max_records=None):
        await asyncio.sleep(0)  # a fetch is I/O: other tasks run meanwhile
        self.polls += 1
        if self._paused:
            self.polls_while_paused += 1
        out = {}
        for tp, log in self.logs.items():
            if tp in self._paused or self.pos[tp] >= len(log):
                continue
            out[tp] = log[self.pos[tp] : self.pos[tp] + (max_records or 500)]
            self.pos[tp] += len(out[tp])
        if not out:
            await asyncio.sleep(0.001)  # the fake's long poll, ended by its timeout
        return out

    async def commit(self, offsets):
        pass


class NoDlq(DeadLetters):
    def __init__(self):
        self.sent = []

    async def send(self, record, reason):
        self.sent.append(reason)


def consumer(fake: FakeKafka, subs: dict[str, Subscription], max_in_flight: int) -> Consumer:
    c = Consumer(
        bootstrap_servers="fake:9092",
        group_id="g",
        dead_letters=NoDlq(),
        subscriptions=subs,
        max_in_flight=max_in_flight,
    )
    c._consumer = fake  # type: ignore[assignment]
    return c


async def run(c: Consumer) -> asyncio.Task[None]:
    return asyncio.create_task(c._run())


@pytest.fixture
def gate():
    return {"release": asyncio.Event(), "started": [], "done": []}


def blocking(gate):
    async def handler(req, record):
        gate["started"].append(req.request_id)
        await gate["release"].wait()
        gate["done"].append(req.request_id)

    return handler


async def test_at_the_limit_partitions_pause_and_polling_goes_on(gate):
    fake = FakeKafka({A: [chat(i) for i in range(5)]})
    c = consumer(fake, {"requests": Subscription.of(ChatRequested, blocking(gate))}, max_in_flight=2)
    task = await run(c)
    try:
        await eventually(lambda: len(gate["started"]) == 2 and A in fake.paused())
        polls = fake.polls_while_paused
        await eventually(lambda: fake.polls_while_paused >= polls + 20)  # saturated, still polling
        assert gate["started"] == ["r0", "r1"] and list(c._backlog) != []
        gate["release"].set()
        await eventually(lambda: len(gate["done"]) == 5)
        assert gate["started"] == [f"r{i}" for i in range(5)]  # fetched order kept through the backlog
        await eventually(lambda: A not in fake.paused())
        assert c._progress[A].commit_point() == 5
    finally:
        task.cancel()


async def test_inline_topics_are_not_paused_when_saturated(gate):
    settled = []

    async def settle(raw, record):
        settled.append(record.offset)

    fake = FakeKafka({A: [chat(i) for i in range(3)], U: [b"u"] * 4})
    subs = {
        "requests": Subscription.of(ChatRequested, blocking(gate)),
        "usage": Subscription(lambda b: b, settle, name="usage", inline=True),
    }
    c = consumer(fake, subs, max_in_flight=1)
    task = await run(c)
    try:
        await eventually(lambda: A in fake.paused() and settled == [0, 1, 2, 3])
        assert U not in fake.paused() and gate["started"] == ["r0"]
        gate["release"].set()
        await eventually(lambda: len(gate["done"]) == 3)
    finally:
        task.cancel()


async def test_held_partitions_are_not_handled_until_released(gate):
    gate["release"].set()
    fake = FakeKafka({A: [chat(i) for i in range(3)]})
    c = consumer(fake, {"requests": Subscription.of(ChatRequested, blocking(gate))}, max_in_flight=10)
    c._held.add(A)  # as if held just after records were fetched: they are read again on release
    task = await run(c)
    try:
        await eventually(lambda: fake.polls > 5)
        assert gate["started"] == [] and fake.pos[A] == 0
        c.hold([A])
        assert A in fake.paused()
        c.release([A])
        await eventually(lambda: gate["done"] == ["r0", "r1", "r2"])
    finally:
        task.cancel()


async def test_undecodable_records_of_one_subscription_are_dead_lettered_by_its_name(gate):
    gate["release"].set()
    fake = FakeKafka({A: [b"{not json", chat(1)]})
    c = consumer(fake, {"requests": Subscription.of(ChatRequested, blocking(gate), name="request")}, 4)
    task = await run(c)
    try:
        await eventually(lambda: gate["done"] == ["r1"])
        assert c._dlq.sent[0].startswith("request: invalid JSON")  # type: ignore[attr-defined]
    finally:
        task.cancel()


async def test_one_model_and_handler_still_make_one_subscription_for_every_topic():
    async def h(req, record):
        pass

    c = Consumer(
        bootstrap_servers="fake:9092",
        topics=["a", "b"],
        group_id="g",
        model=ChatRequested,
        handler=h,
        dead_letters=NoDlq(),
    )
    assert c.topics == ["a", "b"] and c._subs["a"] is c._subs["b"] and c._subs["a"].name == "ChatRequested"
    assert not c._subs["a"].inline
    assert deque() == c._backlog
