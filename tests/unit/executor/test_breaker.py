"""Circuit breakers (``services/executor/breaker.py``) over an in-memory ``llm.breakers`` log
shared by several executors: opening after consecutive failures, skipping while open, one probe
after the cool-down (the first claim in the log wins), closing or opening again, lapsed claims,
and a restarted executor reading the state back."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from services.contracts.errors import ProviderError, ValidationError
from services.executor.attempts import Attempts, Deadline, RetryPolicy, Until, attempt
from services.executor.breaker import Breakers, Ticket
from services.executor.targets import Target
from services.runtime.config import BreakerConfig
from services.runtime.settings import ROOT
from services.runtime.topics import Topics

T = Target(alias="a", provider="p", kind="openai", base_url="http://a", upstream_model="m")
B = Target(alias="b", provider="q", kind="openai", base_url="http://b", upstream_model="n")
FAIL = ProviderError("HTTP 503", details={"upstream_status": 503})
TOPICS = Topics.load(ROOT / "topics.yaml", "")


class Log:
    """``llm.breakers`` in memory: a publisher appends, each executor's tail applies in order."""

    def __init__(self) -> None:
        self.records: list[Any] = []

    async def publish(self, topic, event, *, key, partition=None, headers=None):  # type: ignore[no-untyped-def]
        self.records.append(event)
        ack = asyncio.get_running_loop().create_future()
        ack.set_result(SimpleNamespace(offset=len(self.records) - 1))
        return ack


class LogTail:
    def __init__(self, log: Log, breakers: Breakers):
        self.log, self.breakers, self.read = log, breakers, 0

    def catch_up(self) -> None:
        while self.read < len(self.log.records):
            ev = self.log.records[self.read]
            self.breakers.apply(SimpleNamespace(value=ev.model_dump_json().encode(), offset=self.read))  # type: ignore[arg-type]
            self.read += 1

    async def reach(self, offsets: dict[int, int]) -> None:
        await asyncio.sleep(0)  # the read-back is a round trip: others run meanwhile
        self.catch_up()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def executor(log: Log, clock: Clock, name: str = "x", **cfg: Any) -> tuple[Breakers, LogTail]:
    b = Breakers(
        bootstrap_servers="unused:1",
        topics=TOPICS,
        publisher=log,  # type: ignore[arg-type]
        instance=name,
        defaults=BreakerConfig(**({"failures": 3, "cooldown_s": 30} | cfg)),
        clock=clock,
    )
    tail = LogTail(log, b)
    b.tail = tail  # type: ignore[assignment]
    return b, tail


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_consecutive_failures_open_the_circuit_and_it_is_skipped():
    log, clock = Log(), Clock()
    b, tail = executor(log, clock)
    for err in (FAIL, FAIL, None, FAIL, FAIL):  # a success resets the count
        ticket = await b.admit(T)
        assert isinstance(ticket, Ticket)
        b.done(ticket, err, err is not None)
    b.done(Ticket(T), ValidationError("bad"), False)  # a verdict on the request does not count
    assert b.circuits.get("a/p/m") is None or b.circuits["a/p/m"].state == "closed"
    b.done(Ticket(T), FAIL, True)
    skipped = await b.admit(T)
    assert isinstance(skipped, ProviderError) and "circuit is open until" in skipped.message
    assert skipped.details["circuit"] == "open" and skipped.retryable
    await settle()
    (opened,) = log.records
    assert (opened.state, opened.failures, opened.by, opened.error_code) == ("open", 3, "x", "provider_error")
    assert isinstance(await b.admit(B), Ticket)  # other deployments are not concerned


async def test_one_probe_after_the_cool_down_then_closed():
    log, clock = Log(), Clock()
    b, tail = executor(log, clock, failures=1, cooldown_s=10)
    b.done(Ticket(T), FAIL, True)
    await settle()
    tail.catch_up()
    clock.now += 10
    first, second = await asyncio.gather(b.admit(T), b.admit(T))
    probes = [t for t in (first, second) if isinstance(t, Ticket)]
    assert len(probes) == 1 and probes[0].probe  # the other request skipped it meanwhile
    b.done(probes[0], None, False)
    await settle()
    tail.catch_up()
    assert [r.state for r in log.records] == ["open", "half_open", "closed"]
    assert isinstance(await b.admit(T), Ticket) and b.circuits["a/p/m"].state == "closed"


async def test_a_failed_probe_opens_it_again():
    log, clock = Log(), Clock()
    b, tail = executor(log, clock, failures=1, cooldown_s=10)
    b.done(Ticket(T), FAIL, True)
    await settle()
    tail.catch_up()
    clock.now += 11
    probe = await b.admit(T)
    assert isinstance(probe, Ticket) and probe.probe
    b.done(probe, FAIL, True)
    assert isinstance(await b.admit(T), ProviderError)
    await settle()
    assert [r.state for r in log.records] == ["open", "half_open", "open"]


async def test_executors_racing_for_the_probe_the_first_claim_in_the_log_wins():
    log, clock = Log(), Clock()
    x, xt = executor(log, clock, "x", failures=1, cooldown_s=10)
    y, yt = executor(log, clock, "y", failures=1, cooldown_s=10)
    x.done(Ticket(T), FAIL, True)
    await settle()
    xt.catch_up()
    yt.catch_up()
    assert y.circuits["a/p/m"].state == "open"  # y learnt it from the log
    clock.now += 10
    got = await asyncio.gather(x.admit(T), y.admit(T))
    assert sum(isinstance(t, Ticket) for t in got) == 1  # one probe in the whole fleet
    assert [r.state for r in log.records] == ["open", "half_open", "half_open"]
    winner = log.records[1].by
    assert (x if winner == "x" else y).circuits["a/p/m"].claim == log.records[1].claim


async def test_a_probe_that_never_reports_lapses_and_the_next_request_probes():
    log, clock = Log(), Clock()
    x, xt = executor(log, clock, "x", failures=1, cooldown_s=10)
    x.done(Ticket(T), FAIL, True)
    await settle()
    xt.catch_up()
    clock.now += 10
    lost = await x.admit(T)
    assert isinstance(lost, Ticket) and lost.probe  # ... and its executor dies: no outcome
    assert isinstance(await x.admit(T), ProviderError)  # probed meanwhile
    clock.now += 11
    again = await x.admit(T)
    assert isinstance(again, Ticket) and again.probe


async def test_a_restarted_executor_reads_the_state_back():
    log, clock = Log(), Clock()
    x, xt = executor(log, clock, failures=1, cooldown_s=60)
    x.done(Ticket(T), FAIL, True)
    await settle()
    fresh, ft = executor(log, clock, "x2")
    ft.catch_up()  # what Breakers.start reads before the executor serves
    assert isinstance(await fresh.admit(T), ProviderError)


async def test_the_attempts_skip_an_open_deployment_and_fall_back():
    log, clock = Log(), Clock()
    b, tail = executor(log, clock, failures=1)
    b.done(Ticket(T), FAIL, True)
    called: list[str] = []

    async def call(target: Target, fallback_from: Target | None, until: Until) -> str:
        called.append(target.alias)
        return "ok"

    record = Attempts([T, B])
    out = await attempt(record, RetryPolicy(retries=2), Deadline(None), call, b)
    assert out == "ok" and called == ["b"] and record.count == 1
    assert record.calls[0].skipped and not record.failures()  # a skip is not a failure of a
    (fallback,) = record.fallbacks()
    assert fallback[0].target == T and "circuit" in fallback[0].error.message  # type: ignore[union-attr]


async def test_a_disabled_breaker_never_skips_nor_counts():
    log, clock = Log(), Clock()
    on, on_tail = executor(log, clock, "on", failures=1)
    on.done(Ticket(T), FAIL, True)
    await settle()
    off, off_tail = executor(log, clock, "off", enabled=False, failures=1)
    off_tail.catch_up()  # the log says open ...
    assert isinstance(await off.admit(T), Ticket)  # ... but this deployment's breaker is off here
    off.done(Ticket(B), FAIL, True)
    await settle()
    assert len(log.records) == 1
