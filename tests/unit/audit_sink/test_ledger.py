"""The audit ledger against the in-memory store: one chain per partition, rebuilt from the store,
each record appended once however it is redelivered; ``verify`` over what it wrote."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import orjson

from services.audit_sink.chain import canonical
from services.audit_sink.layout import head_key, object_key
from services.audit_sink.ledger import S3AuditPlugin
from services.audit_sink.verify import verify
from services.contracts.events import AuditRecorded
from services.runtime.plugins import Position
from services.runtime.s3 import MemoryObjectStore
from tests.unit.usage_sink.stores import DyingStore

TOPIC = "llm.audit"
AT = datetime(2025, 6, 1, 10, 0, tzinfo=UTC)
CHAIN = f"{TOPIC}+0"


def audit(i: int, tenant: str = "demo") -> AuditRecorded:
    return AuditRecorded(
        event_id=f"e{i}",
        request_id=f"r{i}",
        tenant_id=tenant,
        action="completed",
        actor="executor",
        alias="demo-openai",
        occurred_at=AT,
    )


def records(offsets, partition: int = 0):
    return [(Position(TOPIC, partition, o), audit(o, "acme" if o % 3 == 0 else "demo")) for o in offsets]


async def deliver(plugin: S3AuditPlugin, batch: list) -> None:
    tasks = [asyncio.create_task(plugin.record(a, pos)) for pos, a in batch]
    await asyncio.sleep(0)  # every handler has added its record
    plugin.flush()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)


def chain(store: MemoryObjectStore, name: str = CHAIN) -> list[dict]:
    return [
        orjson.loads(line)
        for key in sorted(store.objects)
        if key.startswith(f"audit/{name}/")
        for line in store.objects[key].splitlines()
    ]


async def test_batches_append_to_one_chain_per_partition_and_verify():
    store = MemoryObjectStore()
    plugin = S3AuditPlugin(store, max_records=100)
    await deliver(plugin, records(range(4)))
    await deliver(plugin, records(range(4, 7)))
    await deliver(plugin, records(range(3), partition=1))
    assert sorted(k for k in store.objects if k.startswith(f"audit/{CHAIN}/")) == [
        object_key(CHAIN, 0),
        object_key(CHAIN, 4),
    ]
    recs = chain(store)
    assert [r["chain"]["seq"] for r in recs] == list(range(7))
    assert [r["chain"]["offset"] for r in recs] == list(range(7))
    assert recs[0]["event"] == orjson.loads(
        audit(0, "acme").model_dump_json(exclude_none=True)
    )  # the event, nothing added
    assert orjson.loads(store.objects[head_key(CHAIN)])["seq"] == 6
    result = await verify(store)
    assert result.ok and (result.records, result.total, result.chains) == (10, 10, 2)
    assert (await verify(store, tenant="acme")).records == 3 + 1


async def test_a_redelivery_after_a_crash_before_the_commit_is_not_appended_again():
    store = MemoryObjectStore()
    await deliver(S3AuditPlugin(store, max_records=100), records(range(6)))  # stored, then killed: no commit
    restarted = S3AuditPlugin(store, max_records=4)  # the chain state comes from the store
    for start in range(0, 10, 4):
        await deliver(restarted, records(range(start, min(start + 4, 10))))
    assert [r["chain"]["offset"] for r in chain(store)] == list(range(10))
    assert restarted.written == 4
    assert (await verify(store)).ok


async def test_killed_between_the_object_and_the_head():
    store = MemoryObjectStore()
    dying = DyingStore(store, puts=0, only="audit/_heads/")
    plugin = S3AuditPlugin(dying, max_records=100)
    tasks = [asyncio.create_task(plugin.record(a, pos)) for pos, a in records(range(5))]
    await asyncio.sleep(0)
    plugin.flush()
    await asyncio.wait_for(dying.died.wait(), 5)
    for t in tasks:
        t.cancel()
    await plugin.aclose(grace_s=0)
    assert head_key(CHAIN) not in store.objects and len(chain(store)) == 5

    restarted = S3AuditPlugin(store, max_records=100)
    await deliver(restarted, records(range(8)))
    assert [r["chain"]["offset"] for r in chain(store)] == list(range(8))
    assert orjson.loads(store.objects[head_key(CHAIN)])["seq"] == 7
    assert (await verify(store)).ok


async def test_two_writers_never_append_at_the_same_seq():
    """The partition moves A -> B -> A; B's commit did not land, so A gets B's records again."""
    store = MemoryObjectStore()
    a, b = S3AuditPlugin(store, max_records=100), S3AuditPlugin(store, max_records=100)
    await deliver(a, records(range(3)))
    await deliver(b, records(range(3, 6)))
    await deliver(a, records(range(3, 9)))  # A's chain state is stale: its create at seq 3 fails
    assert [r["chain"]["offset"] for r in chain(store)] == list(range(9))
    assert (a.written, b.written) == (6, 3)
    assert (await verify(store)).ok


async def test_records_removed_from_the_store_stay_visible_after_the_sink_goes_on():
    store = MemoryObjectStore()
    await deliver(S3AuditPlugin(store, max_records=3), records(range(6)))
    del store.objects[object_key(CHAIN, 3)]  # the newest object, deleted behind the sink's back
    restarted = S3AuditPlugin(store, max_records=100)
    await deliver(restarted, records(range(6, 8)))
    assert [r["chain"]["seq"] for r in chain(store)] == [0, 1, 2, 6, 7]  # went on from the head
    result = await verify(store)
    assert (
        not result.ok
        and result.findings[0].kind == "removed"
        and "seq 3 was removed" in result.findings[0].message
    )


async def test_verify_names_a_record_modified_removed_or_reordered_in_the_store():
    store = MemoryObjectStore()
    await deliver(S3AuditPlugin(store, max_records=4), records(range(10)))
    pristine = dict(store.objects)
    key = object_key(CHAIN, 4)
    lines = store.objects[key].splitlines()

    rec = orjson.loads(lines[1])
    rec["event"]["action"] = "failed"
    store.objects[key] = b"\n".join([lines[0], canonical(rec), *lines[2:]]) + b"\n"
    f = (await verify(store)).findings
    assert [x.kind for x in f] == ["modified"] and "seq 5 " in f[0].message and "event_id e5" in f[0].message

    store.objects = dict(pristine)
    store.objects[key] = b"\n".join([lines[0], *lines[2:]]) + b"\n"
    f = (await verify(store)).findings
    assert [x.kind for x in f] == ["removed"] and "seq 5 was removed" in f[0].message

    store.objects = dict(pristine)
    store.objects[key] = b"\n".join([lines[0], lines[2], lines[1], lines[3]]) + b"\n"
    f = (await verify(store)).findings
    assert [x.kind for x in f] == ["reordered"] and "seq 6 " in f[0].message

    store.objects = dict(pristine)
    assert (await verify(store)).ok


async def test_a_changed_head_is_reported_and_does_not_stop_the_sink():
    store = MemoryObjectStore()
    await deliver(S3AuditPlugin(store, max_records=100), records(range(3)))
    store.objects[head_key(CHAIN)] = b"{not a head"
    f = (await verify(store)).findings
    assert [x.kind for x in f] == ["modified"] and "head" in f[0].message
    restarted = S3AuditPlugin(store, max_records=100)
    await deliver(restarted, records(range(5)))  # goes on from the newest record it finds
    assert [r["chain"]["offset"] for r in chain(store)] == list(range(5))
    assert (await verify(store)).ok
