"""How consumers fetch (``services.runtime.fetching``), on a real broker: the next fetch
goes out after the work its records started, and fetch sessions send and receive only the
partitions that changed, without losing or repeating a record when a session breaks."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.runtime import fetching
from tests.integration.test_consumer import make_consumer, request
from tests.support import eventually

ROUNDS = 10  # records, one at a time; the order of their two requests is counted


@pytest.fixture(autouse=True)
def fetching_installed():
    """As in the gateway's services (``prepare_process``); aiokafka is itself again after."""
    assert fetching.install()
    yield
    fetching.uninstall()


async def _first_requests_after_handlers(
    kafka_bootstrap, topics, publisher, topic_prefix, monkeypatch
) -> list[str]:
    """For each of ``ROUNDS`` records, sent one at a time: the kind of the first Kafka request
    the test's consumer or publisher writes once the record's handler starts, its own produce
    request or the consumer's next fetch (other clients on the same loop, such as the e2e
    stack's, are left out)."""
    from aiokafka.conn import AIOKafkaConnection
    from aiokafka.protocol.fetch import FetchRequest

    sent: list[tuple[int, object, str]] = []  # (round, connection, kind)
    current = 0  # the round whose handler started last; 0: none yet
    original = AIOKafkaConnection.send

    def send(self, request, expect_response=True):
        if current:  # (a fetch may be a SessionFetchRequest, a FetchRequest subclass)
            sent.append(
                (
                    current,
                    self,
                    "FetchRequest" if isinstance(request, FetchRequest) else type(request).__name__,
                )
            )
        return original(self, request, expect_response=expect_response)

    monkeypatch.setattr(AIOKafkaConnection, "send", send)

    handled: list[str] = []

    async def forward(req, record):
        nonlocal current
        if req.request_id != "r0":  # r0 warmed the topics' leadership and the fetch positions
            current = int(req.request_id[1:])
        await (await publisher.publish(topics.exec.name, req, key="t"))
        handled.append(req.request_id)

    c = make_consumer(kafka_bootstrap, topics, publisher, topic_prefix + "order", forward)
    await c.start()
    try:
        await asyncio.wait_for(c.assigned.wait(), 30)
        await (await publisher.publish(topics.requests.name, request(0), key="t"))
        await eventually(lambda: handled == ["r0"])
        ours = [*c._consumer._client._conns.values(), *publisher._producer.client._conns.values()]

        def kinds(i: int) -> list[str]:
            return [
                k
                for r, conn, k in sent
                if r == i and any(conn is o for o in ours) and k in ("ProduceRequest", "FetchRequest")
            ]

        for i in range(1, ROUNDS + 1):
            await (await publisher.publish(topics.requests.name, request(i), key="t"))
            await eventually(lambda i=i: "ProduceRequest" in kinds(i) and "FetchRequest" in kinds(i))
    finally:
        await c.aclose()
    return [kinds(i)[0] for i in range(1, ROUNDS + 1)]


async def test_a_handlers_produce_request_goes_out_before_the_next_fetch(
    kafka_bootstrap, topics, publisher, topic_prefix, monkeypatch
):
    """The next fetch waits a few loop turns, so what a record's handler sends is not queued
    behind the fetch that follows the record (one hop's latency at low load). Loop turns are
    not a guarantee (a turn's length varies when the broker's answers and the loop's other
    tasks interleave), so the order is counted over several records: the produce request goes
    first for most of them."""
    firsts = await _first_requests_after_handlers(
        kafka_bootstrap, topics, publisher, topic_prefix, monkeypatch
    )
    assert firsts.count("ProduceRequest") >= ROUNDS * 0.7, firsts


async def test_without_the_deferral_the_fetch_goes_first(
    kafka_bootstrap, topics, publisher, topic_prefix, monkeypatch
):
    """The control for the test above: aiokafka's own order, which the deferral changes."""
    from services.runtime import fetching

    monkeypatch.setattr(fetching, "FETCH_YIELDS", 0)
    firsts = await _first_requests_after_handlers(
        kafka_bootstrap, topics, publisher, topic_prefix, monkeypatch
    )
    assert firsts.count("FetchRequest") >= ROUNDS * 0.7, firsts


class Wire:
    """Records what each fetch request put on the wire: (session id, epoch, partitions, forgotten).

    Other consumers may share the test's event loop (the e2e stack's clients, when the whole
    suite runs): ``of(consumer)`` keeps only the requests of that consumer's sessions."""

    def __init__(self, monkeypatch):
        self._sent: list[tuple[object, tuple[int, int, int, int]]] = []
        build = fetching.SessionFetchRequest.build

        def recording(request, struct_class):
            struct = build(request, struct_class)
            self._sent.append(
                (
                    request.session,
                    (
                        struct.session_id,
                        struct.session_epoch,
                        sum(len(ps) for _, ps in struct.topics),
                        sum(len(ps) for _, ps in struct.forgotten_topics_data),
                    ),
                )
            )
            return struct

        monkeypatch.setattr(fetching.SessionFetchRequest, "build", recording)

    def of(self, consumer: AIOKafkaConsumer) -> list[tuple[int, int, int, int]]:
        mine = [id(s) for s in getattr(consumer._fetcher, "_llmgw_sessions", {}).values()]
        return [sent for session, sent in self._sent if id(session) in mine]


@contextlib.asynccontextmanager
async def _reading(
    bootstrap: str, partitions: int
) -> AsyncIterator[tuple[str, AIOKafkaConsumer, AIOKafkaProducer]]:
    """A fresh topic of ``partitions``, a consumer assigned all of them (no group) and a producer."""
    topic = f"fetching-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    c = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=200,
    )
    await c.start()
    c.assign([TopicPartition(topic, p) for p in range(partitions)])
    try:
        async with AIOKafkaProducer(bootstrap_servers=bootstrap) as p:
            yield topic, c, p
    finally:
        await c.stop()


async def _take(c: AIOKafkaConsumer, n: int) -> list[tuple[int, bytes]]:
    got: list[tuple[int, bytes]] = []
    async with asyncio.timeout(30):
        while len(got) < n:
            for tp, recs in (await c.getmany(timeout_ms=500)).items():
                got += [(tp.partition, r.value) for r in recs]
    return got


async def test_fetches_of_a_session_carry_only_the_partitions_that_changed(kafka_bootstrap, monkeypatch):
    wire = Wire(monkeypatch)
    async with _reading(kafka_bootstrap, 12) as (topic, c, p):
        got = []
        for i in range(9):
            await p.send_and_wait(topic, f"v{i}".encode(), partition=i % 3)
            got += await _take(c, 1)
        sent = wire.of(c)
    assert got == [(i % 3, f"v{i}".encode()) for i in range(9)]
    first, *later = [s for s in sent if s[1] != -1]
    assert first[0] == 0 and first[1] == 0 and first[2] == 12  # full: opens the session
    assert later and {sid for sid, *_ in later} == {later[0][0]} != {0}  # one session throughout
    assert max(parts for _, _, parts, _ in later) <= 1  # one partition moved on at a time
    assert [epoch for _, epoch, _, _ in later[:3]] == [1, 2, 3]


async def test_a_broken_session_is_replaced_and_loses_nothing(kafka_bootstrap, monkeypatch):
    wire = Wire(monkeypatch)
    async with _reading(kafka_bootstrap, 4) as (topic, c, p):
        await p.send_and_wait(topic, b"before", partition=1)
        assert await _take(c, 1) == [(1, b"before")]
        sessions = c._fetcher._llmgw_sessions
        await eventually(lambda: any(s.id for s in sessions.values()))
        for s in sessions.values():
            s.epoch += 7  # the broker now refuses the session: INVALID_FETCH_SESSION_EPOCH
        opened = len([s for s in wire.of(c) if s[1] == 0])
        for i in range(4):
            await p.send_and_wait(topic, f"after{i}".encode(), partition=i)
        got = sorted(await _take(c, 4))
        more = await c.getmany(timeout_ms=300)
        reopened = len([s for s in wire.of(c) if s[1] == 0])
    assert got == [(i, f"after{i}".encode()) for i in range(4)]
    assert not more  # nothing delivered twice
    assert reopened > opened  # a new session was opened


async def test_a_paused_partition_is_forgotten_then_resumes_where_it_was(kafka_bootstrap, monkeypatch):
    wire = Wire(monkeypatch)
    async with _reading(kafka_bootstrap, 2) as (topic, c, p):
        await p.send_and_wait(topic, b"a0", partition=0)
        assert await _take(c, 1) == [(0, b"a0")]
        c.pause(TopicPartition(topic, 0))
        await p.send_and_wait(topic, b"b0", partition=0)
        await p.send_and_wait(topic, b"b1", partition=1)
        assert await _take(c, 1) == [(1, b"b1")]
        assert any(forgotten for *_, forgotten in wire.of(c))
        c.resume(TopicPartition(topic, 0))
        assert await _take(c, 1) == [(0, b"b0")]
