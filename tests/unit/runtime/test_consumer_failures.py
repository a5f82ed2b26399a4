"""What the consumer does when something around it fails: a dead letter that cannot be sent is
retried with back-off, then stops the consumer (and the service) loudly with the record left
uncommitted; an ``on_invalid`` that fails does not pin the record; failed commits on revoke and
close are logged. On the fake of aiokafka's consumer API of ``test_consumer_pause``; the real
broker's side is in tests/integration/test_liveness.py."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka.errors import KafkaTimeoutError

from services.contracts.events import ChatRequested
from services.runtime import service
from services.runtime.kafka import Consumer, DeadLetterFailed, DeadLetters, Subscription
from tests.support import eventually

from .test_consumer_pause import A, FakeKafka, NoDlq, chat, rec


class FlakyPublisher:
    """A publisher whose first ``failures`` sends fail (the ack future raises); then it acks."""

    def __init__(self, failures: int):
        self.failures = failures
        self.attempts = 0
        self.sent: list[tuple[str, bytes, dict[str, bytes]]] = []

    async def send_raw(self, topic, value, *, key, partition=None, headers=None):
        self.attempts += 1
        fut = asyncio.get_running_loop().create_future()
        if self.attempts <= self.failures:
            fut.set_exception(KafkaTimeoutError("broker unreachable"))
        else:
            self.sent.append((topic, value, dict(headers or [])))
            fut.set_result(None)
        return fut


async def test_a_failed_dead_letter_is_sent_again_with_back_off(caplog):
    pub = FlakyPublisher(failures=2)
    dlq = DeadLetters(pub, "llm.dlq", "test", retry_s=10)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with caplog.at_level(logging.WARNING, "services.runtime.kafka"):
        await dlq.send(rec(A, 7, b"junk"), "bad")
    assert pub.attempts == 3 and len(pub.sent) == 1
    topic, value, headers = pub.sent[0]
    assert (topic, value, headers["dlq.reason"], headers["dlq.source.offset"]) == (
        "llm.dlq",
        b"junk",
        b"bad",
        b"7",
    )
    assert loop.time() - t0 >= 0.1 + 0.2  # waited 0.1 s, then 0.2 s
    retries = [r.getMessage() for r in caplog.records if "trying again" in r.getMessage()]
    assert len(retries) == 2 and "attempt 1: KafkaTimeoutError" in retries[0]


async def test_a_dead_letter_that_keeps_failing_raises_after_retry_s():
    pub = FlakyPublisher(failures=10**9)
    dlq = DeadLetters(pub, "llm.dlq", "test", retry_s=0.5)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(
        DeadLetterFailed, match=r"could not dead-letter requests\[0\]@3 to llm.dlq in \d+ attempts"
    ):
        await dlq.send(rec(A, 3, b"junk"), "bad")
    assert 0.5 <= loop.time() - t0 < 2.0 and pub.attempts >= 3


class BrokenDlq(NoDlq):
    async def send(self, record, reason):
        raise DeadLetterFailed(f"could not dead-letter offset {record.offset}")


def consumer(fake, subs, dlq, max_in_flight=4) -> Consumer:
    c = Consumer(
        bootstrap_servers="fake:9092",
        group_id="g",
        dead_letters=dlq,
        subscriptions=subs,
        max_in_flight=max_in_flight,
    )
    c._consumer = fake  # type: ignore[assignment]
    return c


@pytest.fixture
def stops(monkeypatch):
    """What ``service.fail`` was told (as if the consumer ran inside ``run_service``)."""
    told: list[BaseException] = []
    monkeypatch.setattr(service, "_stop", told.append)
    return told


async def test_a_record_that_cannot_be_dead_lettered_stops_the_consumer_and_the_service(stops, caplog):
    handled = []

    async def h(req, record):
        handled.append(req.request_id)

    fake = FakeKafka({A: [chat(0), b"{not json", chat(2), chat(3)]})
    c = consumer(fake, {"requests": Subscription.of(ChatRequested, h)}, BrokenDlq(), max_in_flight=1)
    with caplog.at_level(logging.CRITICAL, "services.runtime.kafka"):
        c._run_task = asyncio.create_task(c._run())
        await eventually(lambda: c.failure is not None and c._run_task.done())
    assert isinstance(c.failure, DeadLetterFailed) and stops == [c.failure]
    assert handled == ["r0"]  # nothing after the record that could not be parked
    assert c._progress[A].commit_point() == 1  # the record stays uncommitted: read again by the next owner
    assert any("stops: DeadLetterFailed" in r.getMessage() for r in caplog.records)


async def test_an_inline_record_that_cannot_be_dead_lettered_stops_the_fetch_loop(stops):
    async def settle(raw, record):
        raise RuntimeError("kaput")  # dead-lettered as a handler error: the DLQ fails

    fake = FakeKafka({A: [b"u0", b"u1"]})
    c = consumer(
        fake, {"requests": Subscription(lambda b: b, settle, name="usage", inline=True)}, BrokenDlq()
    )
    c._run_task = asyncio.create_task(c._run())
    await eventually(lambda: c._run_task.done())
    assert isinstance(c.failure, DeadLetterFailed) and stops == [c.failure]
    assert c._progress[A].commit_point() == 0


async def test_outside_a_service_a_failure_is_kept_on_the_consumer():
    assert service._stop is None
    fake = FakeKafka({A: [b"{not json"]})
    c = consumer(fake, {"requests": Subscription.of(ChatRequested, lambda r, rec: None)}, BrokenDlq())
    c._run_task = asyncio.create_task(c._run())
    await eventually(lambda: c.failure is not None)


async def test_an_on_invalid_that_fails_does_not_pin_the_record(caplog):
    async def h(req, record):
        pass

    async def on_invalid(record, exc):
        raise AssertionError("Unrecognized partition")  # e.g. a reply_to naming no partition

    fake = FakeKafka({A: [b"{not json", chat(1)]})
    sub = Subscription.of(ChatRequested, h, name="request", on_invalid=on_invalid)
    c = consumer(fake, {"requests": sub}, NoDlq())
    with caplog.at_level(logging.ERROR, "services.runtime.kafka"):
        task = asyncio.create_task(c._run())
        try:
            await eventually(lambda: A in c._progress and c._progress[A].commit_point() == 2)
        finally:
            task.cancel()
    assert c.failure is None and c._dlq.sent[0].startswith("request: invalid JSON")  # type: ignore[attr-defined]
    assert any("on_invalid failed for requests[0]@0" in r.getMessage() for r in caplog.records)


class FailingCommits(FakeKafka):
    async def commit(self, offsets):
        raise RuntimeError("CommitFailedError: the group rebalanced")

    async def stop(self):
        pass


async def test_commit_errors_on_revoke_and_close_are_logged(caplog):
    async def h(req, record):
        pass

    subs = {"requests": Subscription.of(ChatRequested, h)}
    revoked = consumer(FailingCommits({A: [chat(0)]}), subs, NoDlq())
    closed = consumer(FailingCommits({A: [chat(0)]}), subs, NoDlq())
    for c in (revoked, closed):
        c._run_task = asyncio.create_task(c._run())
        await eventually(lambda c=c: A in c._progress and c._progress[A].commit_point() == 1)
    with caplog.at_level(logging.ERROR, "services.runtime.kafka"):
        await revoked._revoked({A})
        await closed.aclose()
    revoked._run_task.cancel()
    messages = [r.getMessage() for r in caplog.records]
    assert any("offset commit of revoked ['requests[0]'] failed" in m for m in messages)
    assert any("offset commit at close failed" in m for m in messages)
