"""The ledger as a rebuild sees it: a snapshot plus the admissions and usage after it gives the
state the live ledger had, whatever the snapshot already holds (replays are idempotent)."""

from __future__ import annotations

import functools

import orjson
import pytest
import yaml

from services.contracts.errors import BudgetExceeded, RateLimited
from services.contracts.events import ChatRequested, LedgerSnapshot
from services.router.admission import Governor
from services.router.handlers import plan
from services.router.ledger import MARK, PartitionLedger
from services.runtime.codec import encode
from services.runtime.config import GatewayConfig

CONFIG = """
providers: {p: {kind: openai, base_url: "http://p.invalid/v1"}}
models:
  m:
    max_output_tokens: 1000
    deployments: [{provider: p, model: m1, price: {input_per_mtok: 1.0, output_per_mtok: 2.0}}]
tenants:
  g:
    limits: {requests_per_min: 6, tokens_per_min: 5000, per_user: {requests_per_min: 4}}
    budgets: [{period: day, usd: 0.005}]
"""
T0 = 1_790_000_000.0


@pytest.fixture(scope="module")
def config() -> GatewayConfig:
    return GatewayConfig.model_validate(yaml.safe_load(CONFIG))


@pytest.fixture
def gov(config):
    return Governor(config, lambda: config.models)


def chat(rid: str, user: str = "u1") -> ChatRequested:
    return ChatRequested.model_validate(
        {
            "request_id": rid,
            "tenant_id": "g",
            "user_id": user,
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "params": {"max_tokens": 100},
        }
    )


class Log:
    """What Kafka would hold: the admissions and usage records of the partition, in order."""

    def __init__(self):
        self.admissions: list[dict] = []
        self.usage: list[tuple[dict, float]] = []


def run(gov, config, live: PartitionLedger, log: Log, rid: str, now: float, user: str = "u1"):
    req = chat(rid, user)
    grant = gov.admit(req, plan(req, config), live, now)
    log.admissions.append(orjson.loads(encode(grant.record)))
    live.acked(len(log.admissions) - 1)
    return grant


def use(live: PartitionLedger, log: Log, rid: str, tokens: int, cost: float, at: float, user: str = "u1"):
    doc = {"request_id": rid, "tenant_id": "g", "user_id": user, "total_tokens": tokens, "cost_usd": cost}
    log.usage.append((doc, at))
    live.apply_usage(doc, len(log.usage) - 1, at)


def rebuilt(gov, log: Log, snap: LedgerSnapshot | None, now: float) -> PartitionLedger:
    led = PartitionLedger(0, gov.tenants)
    if snap is not None:
        led.restore(LedgerSnapshot.model_validate_json(encode(snap)), now)  # through the wire
    for off, doc in enumerate(log.admissions):
        led.replay_admission(doc, off, now)
    for off, (doc, at) in enumerate(log.usage):
        led.apply_usage(doc, off, at, replay=True)
    return led


def state(led: PartitionLedger, now: float):
    t = led.tenant("g")
    t.tick(now)
    windows = {wid: (w.requests, w.tokens) for wid, w in t.windows.items()}
    return (
        windows,
        sorted(t.open),
        {k: round(v, 12) for k, v in t.spent.items()},
        {k: round(v, 12) for k, v in t.reserved.items() if abs(v) > 1e-12},
    )


@pytest.mark.parametrize("snap_after", [None, 0, 2, 4, 6])
def test_snapshot_plus_replay_is_the_live_state(gov, config, snap_after):
    """Admissions and settlements interleaved; a snapshot taken after ``snap_after`` steps
    (or none: replay from the start) and the full log replayed give the live ledger's state."""
    live, log = PartitionLedger(0, gov.tenants), Log()
    snap = None
    steps = [
        lambda: run(gov, config, live, log, "a", T0),
        lambda: run(gov, config, live, log, "b", T0 + 1),
        lambda: use(live, log, "a", 30, 0.00007, T0 + 2),
        lambda: run(gov, config, live, log, "c", T0 + 3, user="u2"),
        lambda: use(live, log, "ghost", 10, 0.00001, T0 + 4),  # no admission known
        lambda: use(live, log, "b", 40, 0.00009, T0 + 5),
        lambda: run(gov, config, live, log, "d", T0 + 6),
        lambda: use(live, log, "a", 30, 0.00007, T0 + 7),  # repeated
    ]
    for i, step in enumerate(steps):
        if i == snap_after:
            snap = live.tenant("g").snapshot(0, live.admissions_next, live.usage_next, T0 + i)
        step()
    now = T0 + 10
    assert state(rebuilt(gov, log, snap, now), now) == state(live, now)


def test_a_rebuilt_ledger_refuses_what_the_live_one_would(gov, config):
    live, log = PartitionLedger(0, gov.tenants), Log()
    for i in range(4):
        run(gov, config, live, log, f"r{i}", T0 + i)
    snap = live.tenant("g").snapshot(0, live.admissions_next, live.usage_next, T0 + 4)
    run(gov, config, live, log, "r4", T0 + 5, user="u2")  # after the snapshot: replayed
    led = rebuilt(gov, log, snap, T0 + 6)
    with pytest.raises(RateLimited, match="user u1"):
        gov.admit(chat("r5"), plan(chat("r5"), config), led, T0 + 6)
    gov.admit(chat("r6", "u2"), plan(chat("r6", "u2"), config), led, T0 + 6)
    with pytest.raises(RateLimited, match="tenant g"):
        gov.admit(chat("r7", "u3"), plan(chat("r7", "u3"), config), led, T0 + 6)


def test_budget_spend_survives_a_rebuild(gov, config):
    live, log = PartitionLedger(0, gov.tenants), Log()
    costs = []
    i = 0
    while True:
        try:
            g = run(gov, config, live, log, f"b{i}", T0 + i * 61, user=f"u{i}")  # no rate limit binds
        except BudgetExceeded:
            break
        costs.append(g.record.cost_usd)
        use(live, log, f"b{i}", 100, g.record.cost_usd * 0.9, T0 + i * 61 + 1, user=f"u{i}")
        i += 1
    snap = live.tenant("g").snapshot(0, live.admissions_next, live.usage_next, T0 + i * 61)
    now = T0 + i * 61 + 2
    for s in (snap, None):
        led = rebuilt(gov, log, s, now)
        assert led.tenant("g").spent == pytest.approx(live.tenant("g").spent)
        with pytest.raises(BudgetExceeded):
            gov.admit(chat("more", "z"), plan(chat("more", "z"), config), led, now)


def test_snapshots_are_due_when_changed_or_stale_and_each_round_ends_with_a_mark(gov, config):
    live, log = PartitionLedger(0, gov.tenants), Log()
    run(gov, config, live, log, "s", T0)
    assert [s.tenant_id for s in live.due(T0 + 1, 600)] == ["g", MARK]
    assert [s.tenant_id for s in live.due(T0 + 2, 600)] == [MARK]
    assert [(s.tenant_id, s.admissions_offset) for s in live.due(T0 + 700, 600)] == [("g", 1), (MARK, 1)]


def test_a_mark_moves_the_replay_of_tenants_it_covers(gov, config):
    """A round's mark says: tenants without a newer snapshot did not change up to its offsets."""
    live, log = PartitionLedger(0, gov.tenants), Log()
    run(gov, config, live, log, "m0", T0)
    first = live.due(T0 + 1, 600)  # g's snapshot and a mark at admissions offset 1
    live.usage_next = 7  # other tenants' records went by: g unchanged
    live.admissions_next = 5
    second = live.due(T0 + 3, 600)  # g unchanged: only the mark, at 5 / 7
    assert [s.tenant_id for s in second] == [MARK]
    led = PartitionLedger(0, gov.tenants)
    led.restore_all(list(enumerate([*first, *second])), T0 + 4)
    g = led.tenant("g")
    assert (g.admissions_from, g.usage_from) == (5, 7) and "m0" in g.open
    fresh = PartitionLedger(0, gov.tenants)  # only marks: every tenant starts at the last one
    fresh.restore_all([(0, second[0])], T0 + 4)
    assert (fresh.tenant("g").admissions_from, fresh.tenant("g").usage_from) == (5, 7)


def test_unreadable_admission_and_usage_records_are_skipped_by_a_rebuild(gov, config):
    """What a rebuild reads back may hold records that are not what they claim (the chaos suite
    writes malformed ones under a governed tenant's key): each is skipped, and the rest of the
    partition still counts (a raise here held the partition's requests for good)."""
    from aiokafka.structs import ConsumerRecord

    from services.router.keeper import _readable

    live, log = PartitionLedger(0, gov.tenants), Log()
    run(gov, config, live, log, "r1", T0)
    use(live, log, "r1", 300, 0.0004, T0 + 1)

    def rec(offset: int, topic: str = "llm.usage") -> ConsumerRecord:
        return ConsumerRecord(topic, 0, offset, 0, 0, b"g", b"", None, 0, 0, [])

    bad = [
        b"{not json",
        b"[]",
        b"42",
        b'{"tenant_id": "g"}',
        b'{"tenant_id": "g", "request_id": "x", "total_tokens": "many"}',
    ]
    led = PartitionLedger(0, gov.tenants)
    read = [
        _readable(led.replay_admission, raw, rec(i, "llm.admissions"), T0 + 2) for i, raw in enumerate(bad)
    ]
    read.append(
        _readable(led.replay_admission, orjson.dumps(log.admissions[0]), rec(9, "llm.admissions"), T0 + 2)
    )
    assert read == [False] * len(bad) + [True]
    replay = functools.partial(led.apply_usage, replay=True)
    read = [_readable(replay, raw, rec(i), T0 + 2) for i, raw in enumerate(bad)]
    read.append(_readable(replay, orjson.dumps(log.usage[0][0]), rec(9), T0 + 1))
    assert read == [False] * len(bad) + [True]
    assert state(led, T0 + 2) == state(live, T0 + 2)
