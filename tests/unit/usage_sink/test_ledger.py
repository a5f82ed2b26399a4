"""The usage ledger against the in-memory store: every record stored once, however it is
redelivered, whichever writer had the partition before, wherever the last one died."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from services.contracts.events import ChatRequested, UsageRecorded
from services.runtime.plugins import Position
from services.runtime.s3 import MemoryObjectStore
from services.usage_sink.layout import intent_key
from services.usage_sink.ledger import S3UsagePlugin

from .stores import DyingStore, FlakyStore

TOPIC = "llm.usage"
T0 = datetime(2025, 6, 1, 9, 59, 58, tzinfo=UTC)


def usage(i: int, tenant: str = "demo", at: datetime = T0) -> UsageRecorded:
    return UsageRecorded(
        event_id=f"e{i}",
        request_id=f"r{i}",
        tenant_id=tenant,
        user_id=f"u{i % 2}",
        status="ok",
        alias="demo-openai",
        prompt_tokens=10,
        completion_tokens=i,
        total_tokens=10 + i,
        cost_usd=0.001,
        occurred_at=at,
    )


def records(offsets, partition: int = 0):
    """(position, usage) pairs: tenants alternate, and the hour turns at offset 5."""
    return [
        (
            Position(TOPIC, partition, o),
            usage(o, "acme" if o % 2 else "demo", T0 + timedelta(seconds=o // 5 * 2)),
        )
        for o in offsets
    ]


async def deliver(plugin: S3UsagePlugin, batch: list) -> None:
    """Hand records to the plugin as the Consumer does (one handler each), end the window, wait."""
    tasks = [asyncio.create_task(plugin.record(u, pos)) for pos, u in batch]
    await asyncio.sleep(0)  # every handler has added its record
    plugin.flush()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)


def stored(store: MemoryObjectStore) -> Counter[str]:
    seen: Counter[str] = Counter()
    for key, body in store.objects.items():
        if key.startswith("usage/tenant="):
            seen.update(orjson.loads(line)["event_id"] for line in body.splitlines())
    return seen


def exactly_once(store: MemoryObjectStore, offsets) -> None:
    seen = stored(store)
    assert seen == Counter({f"e{o}": 1 for o in offsets}), {k: v for k, v in seen.items() if v != 1}


async def test_records_go_to_their_tenant_date_and_hour_in_offset_order():
    store = MemoryObjectStore()
    plugin = S3UsagePlugin(store, max_records=100)
    await deliver(plugin, records(range(10)))
    keys = sorted(k for k in store.objects if k.startswith("usage/tenant="))
    assert keys == [
        "usage/tenant=acme/date=2025-06-01/hour=09/llm.usage+0+00000000000000000000+00000000000000000009.ndjson",
        "usage/tenant=acme/date=2025-06-01/hour=10/llm.usage+0+00000000000000000000+00000000000000000009.ndjson",
        "usage/tenant=demo/date=2025-06-01/hour=09/llm.usage+0+00000000000000000000+00000000000000000009.ndjson",
        "usage/tenant=demo/date=2025-06-01/hour=10/llm.usage+0+00000000000000000000+00000000000000000009.ndjson",
    ]
    assert [orjson.loads(x)["event_id"] for x in store.objects[keys[0]].splitlines()] == ["e1", "e3"]
    assert [orjson.loads(x)["event_id"] for x in store.objects[keys[3]].splitlines()] == ["e6", "e8"]
    assert UsageRecorded.model_validate_json(store.objects[keys[1]].splitlines()[0]) == usage(
        5, "acme", T0 + timedelta(seconds=2)
    )
    assert orjson.loads(store.objects[intent_key(TOPIC, 0)])["last"] == 9
    exactly_once(store, range(10))


async def test_record_returns_only_once_its_record_is_stored():
    store = MemoryObjectStore()
    plugin = S3UsagePlugin(store, max_records=3)
    pos, u = records([0])[0]
    task = asyncio.create_task(plugin.record(u, pos))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not task.done() and stored(store) == Counter()  # the batch is still open
    plugin.flush()
    await asyncio.wait_for(task, 5)
    assert stored(store) == Counter({"e0": 1})


async def test_a_batch_redelivered_after_a_crash_before_the_commit_is_not_stored_again():
    store = MemoryObjectStore()
    await deliver(S3UsagePlugin(store, max_records=100), records(range(10)))  # stored, then killed: no commit
    restarted = S3UsagePlugin(store, max_records=4)  # other batch boundaries this time
    for start in range(0, 15, 4):
        await deliver(restarted, records(range(start, min(start + 4, 15))))
    exactly_once(store, range(15))
    assert restarted.written == 5


async def test_killed_between_the_objects_of_one_batch():
    store = MemoryObjectStore()
    dying = DyingStore(store, puts=1, only="usage/tenant=")  # the intent and one of four objects land
    plugin = S3UsagePlugin(dying, max_records=100)
    tasks = [asyncio.create_task(plugin.record(u, pos)) for pos, u in records(range(10))]
    await asyncio.sleep(0)
    plugin.flush()
    await asyncio.wait_for(dying.died.wait(), 5)
    for t in tasks:
        t.cancel()
    await plugin.aclose(grace_s=0)
    assert 0 < sum(stored(store).values()) < 10

    restarted = S3UsagePlugin(store, max_records=3)
    for start in range(0, 12, 3):
        await deliver(restarted, records(range(start, start + 3)))
    exactly_once(store, range(12))


async def test_an_intent_is_never_lowered_by_a_shorter_redelivery():
    store = MemoryObjectStore()
    dying = DyingStore(
        store, puts=1, only="usage/tenant="
    )  # batch 0..19: intent and one of four objects land
    first = S3UsagePlugin(dying, max_records=100)
    tasks = [asyncio.create_task(first.record(u, pos)) for pos, u in records(range(20))]
    await asyncio.sleep(0)
    first.flush()
    await asyncio.wait_for(dying.died.wait(), 5)
    for t in tasks:
        t.cancel()
    await first.aclose(grace_s=0)
    second = S3UsagePlugin(store, max_records=100)
    await deliver(second, records(range(5)))  # writes what is missing of 0..4, then is killed too
    assert second.written > 0
    assert orjson.loads(store.objects[intent_key(TOPIC, 0)])["last"] == 19
    third = S3UsagePlugin(store, max_records=100)
    await deliver(third, records(range(5, 25)))
    exactly_once(store, range(25))


async def test_another_writer_in_between_is_noticed_by_the_intent():
    """The partition moves A -> B -> A (a rebalance): A's next batch overlaps what B wrote."""
    store = MemoryObjectStore()
    a, b = S3UsagePlugin(store, max_records=100), S3UsagePlugin(store, max_records=100)
    await deliver(a, records(range(10)))
    await deliver(b, records(range(10, 20)))  # B read from the committed offset 10
    await deliver(a, records(range(10, 25)))  # B's commit did not land: A gets 10.. again
    exactly_once(store, range(25))
    assert a.written == 15 and b.written == 10


async def test_partitions_are_independent_sources():
    store = MemoryObjectStore()
    plugin = S3UsagePlugin(store, max_records=100)
    await deliver(plugin, records(range(4), partition=0) + records(range(4), partition=1))
    assert intent_key(TOPIC, 0) in store.objects and intent_key(TOPIC, 1) in store.objects
    assert stored(store) == Counter({f"e{o}": 2 for o in range(4)})  # same event ids: different positions


async def test_an_unreachable_store_is_retried_until_it_answers():
    store = MemoryObjectStore()
    plugin = S3UsagePlugin(FlakyStore(store, failures=2), max_records=100)
    await deliver(plugin, records(range(3)))
    exactly_once(store, range(3))


async def test_a_failure_after_some_objects_is_retried_without_duplicates():
    store = MemoryObjectStore()
    flaky = FlakyStore(store, failures=0, only="usage/tenant=")
    plugin = S3UsagePlugin(flaky, max_records=100)
    original = flaky.put
    calls = {"n": 0}

    async def put(key, body, **kw):  # the second object of the batch fails once
        if key.startswith("usage/tenant="):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError("reset by peer")
        return await original(key, body, **kw)

    flaky.put = put
    await deliver(plugin, records(range(10)))
    exactly_once(store, range(10))


@pytest.mark.parametrize("cost", [0.0, 12.5])
async def test_the_default_plugin_has_no_budget_opinion(cost):
    plugin = S3UsagePlugin(MemoryObjectStore())
    req = ChatRequested(
        request_id="r", tenant_id="demo", model="demo-openai", messages=[{"role": "user", "content": "x"}]
    )
    verdict = await plugin.check_budget(req, max_cost_usd=cost)
    assert verdict.allowed and verdict.remaining_usd is None
    assert await plugin.report_usage(usage(1)) is None
