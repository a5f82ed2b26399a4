"""Faults on the real stack, one after another on the same processes, each under load: 10,000
malformed events on every consumed topic, provider storms (429 and 5xx) and hangs, kill -9 of
each service (router, executor, edge, usage sink, audit sink), a broker restart. After each,
once every group has read to the end and every service is back in its group, the books are
read: nothing lost, nothing billed twice, every consumer alive. The table is printed at the end
(``make chaos``).

Each property that once failed for a known bug is its own test (billed and answered once after
an executor kill or a broker restart, dead letters from the readers outside any group), so the
table and the test report say which one broke."""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import random
import signal
import time

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from services.audit_sink.verify import verify
from services.runtime.s3 import S3ObjectStore

from ..e2e.helpers import group_members
from . import malformed
from .conftest import Chaos
from .harness import (
    GROUP_TOPICS,
    Row,
    alive,
    group_lag,
    http_call,
    jitter,
    new_rid,
    reason_kind,
    run_load,
    sdk_call,
    until,
)

MALFORMED = "10,000 malformed events"
STORMS = "provider 429/5xx storms"
HANGS = "provider hangs"
KILL = "kill -9 {}"
BROKER = "broker restart"
#: The provider faults run last, each on its own deployment (an open circuit skips a deployment
#: for its cool-down, which would fail the other cases' load): hangs on HUNG, storms on STORMED;
#: HEALTHY's provider never fails, so it answers the final probe too.
HUNG, STORMED, HEALTHY = "demo-anthropic", "demo-openai", "demo-ollama"

#: Malformed events per consumed topic (10,000 in all).
PER_TOPIC = {
    "requests": 2300,
    "exec": 2400,
    "usage": 2000,
    "audit": 2000,
    "control": 500,
    "replies": 450,  # keyed for no waiting call: read by no one (README "Dead letters")
    "admissions": 100,
    "ledger": 100,
    "breakers": 100,
}
#: Topics whose consumers are groups that dead-letter what they cannot read.
GROUP_READ = ("requests", "exec", "usage", "audit")
#: ... and malformed replies addressed to calls the suite's SDK client is waiting for (10,000 in
#: all): each ends its call with ``internal_error`` and is dead-lettered by that client.
ADDRESSED_REPLIES = 50
#: Topics every executor reads outside any group (a tail), each dead-lettering what it cannot read.
TAIL_READ = ("control", "breakers")
#: Topics a router reads back whenever it rebuilds a partition's ledger: an unreadable record is
#: skipped with a warning, not dead-lettered (every rebuild would dead-letter it again); the
#: router kill case below rebuilds over them and must still admit the governed tenants.
REBUILD_READ = ("admissions", "ledger")


# --- the books of one case ----------------------------------------------------------------------


class Case:
    """One row: its faults and load, then, once the stack settled, what the books say."""

    def __init__(self, ch: Chaos, fault: str):
        self.ch, self.row = ch, ch.report.row(fault)
        self.t0 = time.monotonic()
        self.dlq0 = len(ch.books.dlq.records)

    async def settle(self, within: float = 150) -> None:
        """Wait until every group committed everything there is and every service is in its
        group (a killed member the broker still lists has to time out first), and the suite's
        readers are at the end; then fill the row."""
        ch, row = self.ch, self.row

        async def settled() -> bool:
            for group, role in GROUP_TOPICS.items():
                spec = getattr(ch.topics, role)
                if await group_lag(ch.bootstrap, ch.prefix + group, spec.name, spec.partitions):
                    return False
            a, n, _ = await alive(ch.stack, ch.bootstrap, ch.prefix, ch.edge_url)
            return a == n and all(
                [await t.caught_up() for t in (ch.books.usage, ch.books.dlq, ch.books.audit)]
            )

        await until(settled, within)
        a, n, down = await alive(ch.stack, ch.bootstrap, ch.prefix, ch.edge_url)
        row.alive, row.down = (a, n), down
        ids = set(row.ids)
        used = ch.books.usage_counts(ids)
        ledger = await ch.books.ledger_counts(ids)
        row.billed_twice = sorted(r for r in ids if used[r] > 1 or ledger[r] > 1)
        row.unbilled = sorted(r for r in row.answered if used[r] == 0)
        row.ledger_mismatch = sorted(
            f"{r} (llm.usage {used[r]}, S3 {ledger[r]})" for r in ids if ledger[r] != used[r]
        )
        for rec in ch.books.dlq.records[self.dlq0 :]:
            row.dlq[reason_kind(dict(rec.headers).get("dlq.reason", b"?"))] += 1
        row.seconds = time.monotonic() - self.t0

    def check(self, *, billing: bool = True) -> None:
        """What every case holds: nothing lost, every consumer alive; with ``billing``, nothing
        billed twice or answered wrongly (split out where an executor bug breaks it)."""
        row = self.row
        assert not row.lost, f"{len(row.lost)} requests lost: {row.lost[:10]}"
        assert row.alive[0] == row.alive[1], f"consumers down: {row.down}"
        assert not row.unbilled, f"answered but never billed: {row.unbilled[:10]}"
        assert not row.ledger_mismatch, f"S3 ledger != llm.usage for {row.ledger_mismatch[:10]}"
        if billing:
            check_billing(row)


def check_billing(row: Row) -> None:
    assert not row.billed_twice, f"{len(row.billed_twice)} billed twice: {row.billed_twice[:10]}"
    assert not row.wrong, f"{len(row.wrong)} wrong answers: {row.wrong[:5]}"


def kill9(ch: Chaos, name: str) -> None:
    pid = next(c.pid for c in ch.stack.load() if c.name == name)
    assert pid
    try:
        os.killpg(pid, signal.SIGKILL)  # the service and any worker it started
    except ProcessLookupError:
        os.kill(pid, signal.SIGKILL)


def sdk(ch: Chaos, scenario: str, *, stream: bool = False, **kw):
    return functools.partial(_sdk, ch.gw, scenario, stream, kw)


async def _sdk(gw, scenario, stream, kw, rid):
    return await sdk_call(gw, rid, scenario, stream=stream, **kw)


def http(ch: Chaos, scenario: str, *, stream: bool = False, model: str = "demo-openai"):
    async def call(rid: str) -> tuple[str, str]:
        return await http_call(ch.http, rid, scenario, stream=stream, model=model)

    return call


def mixed_load(
    ch: Chaos, tag: str, n: int, lo_ms: int, hi_ms: int, *, via: str = "sdk", model: str = "demo-openai"
):
    """``n`` echo requests to ``model`` with upstream latency ``lo_ms``..``hi_ms``, every fourth
    streamed."""
    for i in range(n):
        scenario = f"ttfb_ms={jitter(lo_ms, hi_ms)},echo"
        stream = i % 4 == 0
        if via == "http":
            call = http(ch, scenario, stream=stream, model=model)
        else:
            call = sdk(ch, scenario, stream=stream, model=model)
        yield new_rid(tag), call


# --- the cases ----------------------------------------------------------------------------------


async def test_malformed_events_on_every_consumed_topic_are_dead_lettered(chaos: Chaos) -> None:
    ch = chaos
    case = Case(ch, MALFORMED)
    topics = ch.topics
    reply = {"topic": ch.gw.reply_to.topic, "partition": ch.gw.reply_to.partition}
    producer = AIOKafkaProducer(bootstrap_servers=ch.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futs = []
        plan = dict(PER_TOPIC)
        if not hasattr(topics, "breakers"):  # a topics.yaml before circuit breaking
            plan["requests"] += plan.pop("breakers")
        for role, n in plan.items():
            spec = getattr(topics, role)
            for key, partition, value in malformed.events(role, n, spec.partitions, reply):
                futs.append((role, await producer.send(spec.name, value, key=key, partition=partition)))
        metas = [(role, await f) for role, f in futs]
    finally:
        await producer.stop()
    injected = {(m.topic, m.partition, m.offset): role for role, m in metas}
    case.row.injected = len(injected)
    want = {src for src, role in injected.items() if role in GROUP_READ + TAIL_READ}

    def sources() -> dict[tuple[str, int, int], list[dict[bytes, bytes]]]:
        out: dict[tuple[str, int, int], list[dict[bytes, bytes]]] = {}
        for r in ch.books.dlq.records[case.dlq0 :]:
            h = {k.encode(): v for k, v in r.headers}
            src = (
                h[b"dlq.source.topic"].decode(),
                int(h[b"dlq.source.partition"]),
                int(h[b"dlq.source.offset"]),
            )
            out.setdefault(src, []).append(h)
        return out

    async def all_dead_lettered() -> bool:
        return want <= sources().keys()

    await until(all_dead_lettered, 120)
    # malformed replies to calls the SDK client is waiting for (slow ones: the provider answers
    # after 4 s), each published once the executor has started the call
    outcomes: dict[str, tuple[str, str]] = {}

    async def noted(call, rid: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
        outcomes[rid] = await call(rid)
        return outcomes[rid]

    waiting = [new_rid("mal-reply") for _ in range(ADDRESSED_REPLIES)]
    calls = [
        (rid, functools.partial(noted, sdk(ch, "ttfb_ms=4000,echo", stream=i % 2 == 0)))
        for i, rid in enumerate(waiting)
    ]
    load = asyncio.create_task(run_load(case.row, calls))
    assert await until(lambda: _async(ch.books.started(set(waiting)) >= len(waiting)), 30), "not started"
    replies = ch.topics.replies.name
    shapes = itertools.cycle(malformed.shapes("replies", reply))
    rnd = random.Random(14)
    async with AIOKafkaProducer(bootstrap_servers=ch.bootstrap, acks="all") as producer:
        acks = [
            await producer.send(
                replies, next(shapes)(rnd), key=rid.encode(), partition=ch.gw.reply_to.partition
            )
            for rid in waiting
        ]
        addressed = {}
        for rid, ack in zip(waiting, acks, strict=True):
            m = await ack
            addressed[(m.topic, m.partition, m.offset)] = rid
    await load
    case.row.injected += len(addressed)
    assert case.row.injected == 10_000
    await until(lambda: _async(addressed.keys() <= sources().keys()), 30)
    ch.report.notes["injected"] = injected
    ch.report.notes["addressed"] = {src: (rid, outcomes.get(rid)) for src, rid in addressed.items()}
    # the gateway still answers, over the SDK and the edge
    await run_load(
        case.row,
        [*mixed_load(ch, "mal", 40, 0, 50), *mixed_load(ch, "mal-http", 20, 0, 50, via="http")],
        pace_s=0.01,
    )
    await case.settle()
    got = ch.report.notes["dlq_sources"] = sources()
    want = {src for src, role in injected.items() if role in GROUP_READ}
    missing = sorted(want - got.keys())
    by_topic = {t: sum(1 for s in missing if s[0] == t) for t in {s[0] for s in missing}}
    assert not missing, f"{len(missing)} malformed events not in llm.dlq: {by_topic}"
    for src in want:
        for h in got[src]:
            assert h[b"dlq.reason"].strip() and h[b"dlq.consumer"], (src, h)
    case.check()


async def _async(value: bool) -> bool:
    return value


async def test_malformed_events_on_tail_read_topics_are_dead_lettered(chaos: Chaos) -> None:
    """Every malformed ``llm.control`` and ``llm.breakers`` record is dead-lettered, with its reason,
    by each executor reading it; every malformed reply addressed to a waiting call is dead-lettered
    by the client waiting, whose caller got an explicit ``internal_error`` (not a timeout)."""
    notes = chaos.report.notes
    injected, addressed, got = notes.get("injected"), notes.get("addressed"), notes.get("dlq_sources")
    if injected is None or addressed is None or got is None:
        pytest.skip("the malformed-events case did not run")
    want = {src for src, role in injected.items() if role in TAIL_READ}
    missing = want - got.keys()
    by_topic = {t: sum(1 for s in missing if s[0] == t) for t in {s[0] for s in missing}}
    assert not missing, (
        f"{len(missing)} of {len(want)} malformed control/breaker events not in llm.dlq: {by_topic}"
    )
    executors = {f"executor-{i}" for i in range(2)}
    for src in want:
        readers = {h[b"dlq.consumer"].decode().removesuffix("-breakers") for h in got[src]}
        assert all(any(r.endswith(e) for r in readers) for e in executors), (src, readers)  # each reads
        assert all(h[b"dlq.reason"].strip() for h in got[src]), (src, got[src])
    missing = sorted(set(addressed) - got.keys())
    assert not missing, (
        f"{len(missing)} of {len(addressed)} malformed replies to waiting calls not in llm.dlq"
    )
    for src, (rid, outcome) in addressed.items():
        assert [h[b"dlq.consumer"] for h in got[src]] == [b"client-" + chaos.gw.tenant_id.encode()], got[src]
        assert got[src][0][b"dlq.reason"].startswith(b"reply: "), got[src]
        assert outcome == ("failed", "internal_error"), (rid, outcome)


async def _owner_of(ch: Chaos, tenant: bytes) -> str:
    """The router holding ``tenant``'s partition of llm.requests."""
    partition = (murmur2(tenant) & 0x7FFFFFFF) % 12
    members = await group_members(ch.bootstrap, ch.prefix + "llmgw-router")
    for cid, parts in members.items():
        if partition in parts.get(ch.prefix + "llm.requests", []):
            return cid.removeprefix("router-")
    raise AssertionError(f"no router holds partition {partition}: {members}")


async def _kill_under_load(case: Case, victim, calls, *, at: int, pace_s: float = 0.02, ready=None) -> None:
    """Run the load; after the ``at``-th request (and once ``ready()`` holds) kill -9 the
    victim (a name, or an async function naming it) and start it again, load still going."""
    ch = case.ch
    restarted: list[asyncio.Task[object]] = []

    async def during(i: int) -> None:
        if i != at:
            return
        if ready is not None:
            await until(ready, 30, step=0.05)
        name = victim if isinstance(victim, str) else await victim()
        kill9(ch, name)
        case.row.injected += 1
        restarted.append(asyncio.create_task(asyncio.to_thread(ch.stack.restart, name, 120)))

    await run_load(case.row, calls, pace_s=pace_s, during=during)
    for t in restarted:
        await t


async def test_kill_9_router_under_load(chaos: Chaos) -> None:
    """The router owning the demo tenant's requests dies mid-load; its partitions are read again
    from the last commit by the other, and the restarted one rebuilds the governed tenants'
    ledgers (whose topics hold malformed records by now) before it admits their requests."""
    ch = chaos
    case = Case(ch, KILL.format("router"))
    await _kill_under_load(
        case, functools.partial(_owner_of, ch, b"demo"), list(mixed_load(ch, "router", 150, 200, 800)), at=50
    )
    governed = []  # answered, or refused explicitly (rate limit, budget): not lost
    for gw in (ch.limited, ch.budgeted):
        for _ in range(3):
            governed.append((new_rid(f"gov-{gw.tenant_id}"), functools.partial(_sdk, gw, "echo", False, {})))
    await run_load(case.row, governed)
    await case.settle()
    case.check()


async def test_kill_9_executor_under_load(chaos: Chaos) -> None:
    ch = chaos
    case = Case(ch, KILL.format("executor"))
    calls = list(mixed_load(ch, "executor", 150, 300, 1500))
    ids = {rid for rid, _ in calls}

    async def with_the_executors() -> bool:  # a good part of the load is in the executors' hands
        return ch.books.started(ids) >= 30

    await _kill_under_load(case, "executor-0", calls, at=60, ready=with_the_executors)
    await case.settle()
    case.check(billing=False)


async def test_kill_9_executor_bills_and_answers_once(chaos: Chaos) -> None:
    row = chaos.report.rows.get(KILL.format("executor"))
    if row is None or not row.seconds:
        pytest.skip("the executor kill case did not run")
    check_billing(row)


async def test_kill_9_edge_under_load(chaos: Chaos) -> None:
    """The edge dies with HTTP requests in flight: those callers get a dropped connection (an
    explicit failure), what it had published still runs and is billed once, and the restarted
    edge answers again."""
    ch = chaos
    case = Case(ch, KILL.format("edge"))
    await _kill_under_load(case, "edge", list(mixed_load(ch, "edge", 120, 300, 1000, via="http")), at=40)
    await run_load(case.row, list(mixed_load(ch, "edge-after", 10, 0, 50, via="http")))
    await case.settle()
    case.check()
    assert len(case.row.answered) >= 10


async def test_kill_9_usage_sink_under_load(chaos: Chaos) -> None:
    """The usage sink dies with batches open: the restarted one writes the S3 ledger on, each
    usage record exactly once (checked by every case: S3 holds what llm.usage holds)."""
    ch = chaos
    case = Case(ch, KILL.format("usage sink"))
    await _kill_under_load(case, "usage-sink", list(mixed_load(ch, "usink", 150, 100, 600)), at=60)
    await case.settle()
    case.check()


async def test_kill_9_audit_sink_under_load(chaos: Chaos) -> None:
    ch = chaos
    case = Case(ch, KILL.format("audit sink"))
    await _kill_under_load(case, "audit-sink", list(mixed_load(ch, "asink", 150, 100, 600)), at=60)
    await case.settle()
    case.check()
    store = S3ObjectStore(
        ch.settings.audit_bucket, endpoint_url=f"http://127.0.0.1:{ch.settings.s3_port}", create_bucket=False
    )
    await store.start()
    try:
        result = await verify(store)
    finally:
        await store.aclose()
    assert result.ok and result.records > 0, result.findings  # every chain intact


async def test_broker_restart_under_load(chaos: Chaos) -> None:
    ch = chaos
    case = Case(ch, BROKER)
    restarted: list[asyncio.Task[None]] = []

    async def during(i: int) -> None:
        if i == 50:
            case.row.injected += 1
            restarted.append(asyncio.create_task(asyncio.to_thread(ch.broker.restart)))

    await run_load(case.row, list(mixed_load(ch, "broker", 150, 200, 800)), pace_s=0.02, during=during)
    for t in restarted:
        await t
    await case.settle(within=180)
    case.check(billing=False)


async def test_broker_restart_bills_and_answers_once(chaos: Chaos) -> None:
    row = chaos.report.rows.get(BROKER)
    if row is None or not row.seconds:
        pytest.skip("the broker restart case did not run")
    check_billing(row)


async def test_provider_hangs(chaos: Chaos) -> None:
    """Hung upstream calls end at their ``total_ms`` (or ``ttft_ms``) with ``provider_timeout``;
    once the deployment's circuit opens, the rest fail at once with ``provider_error``. Either is
    explicit. Requests to another provider are not held up."""
    ch = chaos
    case = Case(ch, HANGS)
    calls = [(new_rid("hang"), sdk(ch, "hang=1", model=HUNG, total_ms=1500)) for _ in range(30)]
    calls += [
        (new_rid("slow-ttft"), sdk(ch, "ttfb_ms=5000,echo", model=HUNG, stream=True, ttft_ms=500))
        for _ in range(10)
    ]
    case.row.injected = len(calls)
    calls += list(mixed_load(ch, "hang-ok", 20, 0, 50, model=HEALTHY))
    await run_load(case.row, calls, pace_s=0.005)
    await case.settle()
    case.check()
    failed = case.row.failed
    assert sum(failed.values()) == 40 and set(failed) <= {"provider_timeout", "provider_error"}, failed
    assert failed["provider_timeout"] >= 5 and len(case.row.answered) == 20, failed


async def test_provider_429_and_5xx_storms(chaos: Chaos) -> None:
    """A storm of 429s and 503s fails those requests explicitly (the circuit opens meanwhile);
    requests whose first call fails are answered by their fallback; another provider's requests
    are not touched."""
    ch = chaos
    case = Case(ch, STORMS)
    calls = []
    for _ in range(40):
        calls.append((new_rid("429"), sdk(ch, "status=429,retry_after_ms=20", model=STORMED)))
    for _ in range(40):
        calls.append((new_rid("503"), sdk(ch, "status=503", model=STORMED)))
    for i in range(40):  # the first call of each fails; its retry or its fallback answers
        rid = new_rid("500")
        scenario = f"fail_first=1,status=500,key={rid},echo"
        calls.append((rid, sdk(ch, scenario, model=HUNG, stream=i % 4 == 0, fallbacks=[HEALTHY])))
    for _ in range(20):
        calls.append((new_rid("429-http"), http(ch, "status=429,retry_after_ms=20", model=STORMED)))
    case.row.injected = len(calls)
    calls += list(mixed_load(ch, "storm-ok", 20, 0, 50, model=HEALTHY))
    await run_load(case.row, calls, pace_s=0.005)
    await case.settle()
    case.check()
    assert len(case.row.answered) == 60, case.row.failed  # the 40 that recover and the 20 healthy ones


async def test_at_the_end_every_consumer_is_alive_and_nothing_was_lost(chaos: Chaos) -> None:
    ch = chaos
    rows = list(ch.report.rows.values())
    assert rows, "no case ran"
    a, n, down = await alive(ch.stack, ch.bootstrap, ch.prefix, ch.edge_url)
    assert a == n, f"consumers down: {down}"
    assert sum(len(r.lost) for r in rows) == 0
    for gw_call in (sdk(ch, "echo", model=HEALTHY), http(ch, "echo", model=HEALTHY)):  # one more each way
        rid = new_rid("final")
        assert await gw_call(rid) == ("answered", "")
