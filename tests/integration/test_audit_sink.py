"""The audit sink as its own process on the real broker and a real S3 endpoint: SIGKILLed after
writing and before committing, restarted, each record chained exactly once; ``llmgw audit
verify`` passes, then names a record modified, removed or reordered directly on S3."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest

from services.audit_sink.app import GROUP
from services.audit_sink.chain import canonical
from services.audit_sink.layout import HEADS, chain_name, chain_prefix
from services.contracts.events import AuditRecorded
from services.runtime.s3 import S3ObjectStore
from tests.integration.sink_support import SinkProcess, cli, committed, end_offsets, s3_url, until

from .test_consumer import read_all

pytestmark = pytest.mark.integration
__all__ = ["s3_url"]  # the fixture
TENANTS = [f"tenant{i}" for i in range(6)]
ACTIONS = ["started", "completed", "failed", "fallback_triggered", "cancelled"]


def audit(i: int) -> AuditRecorded:
    return AuditRecorded(
        event_id=f"e{i}",
        request_id=f"r{i}",
        tenant_id=TENANTS[i % len(TENANTS)],
        action=ACTIONS[i % len(ACTIONS)],
        actor="executor",
        alias="demo-openai",
        provider="emulator",
    )


@pytest.fixture
async def store(s3_url: str) -> AsyncIterator[S3ObjectStore]:
    async with S3ObjectStore(f"audit-{uuid.uuid4().hex[:10]}", endpoint_url=s3_url) as s:
        yield s


@pytest.fixture
def sink_env(kafka_bootstrap, topic_prefix, s3_url, store) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "LLMGW_TOPIC_PREFIX": topic_prefix,
        "LLMGW_S3_ENDPOINT": s3_url,
        "LLMGW_AUDIT_BUCKET": store.bucket,
        "LLMGW_AUDIT_SINK_BATCH_RECORDS": "25",
        "LLMGW_AUDIT_SINK_BATCH_MS": "300",
        "LLMGW_LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def sink(sink_env, topics, tmp_path) -> Iterator[SinkProcess]:
    p = SinkProcess("services.audit_sink", sink_env, tmp_path)
    yield p
    p.kill()


async def heads(store: S3ObjectStore) -> dict[int, int]:
    """Partition -> the source offset of its chain's head."""
    out = {}
    for key in await store.keys(HEADS):
        partition = int(key[len(HEADS) : -len(".json")].rsplit("+", 1)[1])
        out[partition] = orjson.loads((await store.get(key)).body)["offset"]
    return out


async def chained(store: S3ObjectStore, topic: str) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for p in range(12):
        for key in await store.keys(chain_prefix(chain_name(topic, p))):
            out.setdefault(p, []).extend(orjson.loads(x) for x in (await store.get(key)).body.splitlines())
    return out


async def test_killed_between_write_and_commit_each_record_is_chained_once_and_verify_catches_tampering(
    kafka_bootstrap, topics, publisher, topic_prefix, store, sink, sink_env
):
    topic, parts, group = topics.audit.name, topics.audit.partitions, topic_prefix + GROUP
    await (await publisher.send_raw(topic, b"not an audit record", key=b"tenant0"))
    sent, exercised = 0, False
    for _ in range(5):  # until a kill lands after a write and before its commit (most often the first)
        acks = [
            await publisher.publish(topic, audit(i), key=audit(i).tenant_id) for i in range(sent, sent + 300)
        ]
        await asyncio.gather(*acks)
        sent += 300
        ends = await end_offsets(kafka_bootstrap, topic, parts)
        await asyncio.to_thread(sink.start)

        async def all_written(ends: dict[int, int] = ends) -> bool:
            h = await heads(store)
            return all(h.get(p, -1) >= end - 1 for p, end in ends.items() if end > 1)

        await until(all_written, within=90, step=0.005)
        sink.kill()
        h, done = await heads(store), await committed(kafka_bootstrap, group, topic, parts)
        if any(done[p] <= last for p, last in h.items()):
            exercised = True
            break
    assert exercised, "no kill landed between a write and its commit"

    sink.env["LLMGW_AUDIT_SINK_BATCH_RECORDS"] = "7"  # other batch boundaries this time
    await asyncio.to_thread(sink.start)

    async def all_committed() -> bool:
        done, ends = (
            await committed(kafka_bootstrap, group, topic, parts),
            await end_offsets(kafka_bootstrap, topic, parts),
        )
        return all(done[p] == end for p, end in ends.items() if end > 0)

    await until(all_committed, within=90)
    assert sink.stop() == 0

    chains = await chained(store, topic)
    ids = Counter(r["event"]["event_id"] for recs in chains.values() for r in recs)
    assert ids == Counter({f"e{i}": 1 for i in range(sent)}), {k: v for k, v in ids.items() if v != 1}
    for recs in chains.values():
        assert [r["chain"]["seq"] for r in recs] == list(range(len(recs)))
        assert [r["chain"]["offset"] for r in recs] == sorted(r["chain"]["offset"] for r in recs)
        assert all(
            set(r["event"]) <= set(AuditRecorded.model_fields) for r in recs
        )  # the event, nothing added
    dead = [
        r
        for r in await read_all(kafka_bootstrap, topics.dlq.name, 1)
        if dict(r.headers)["dlq.consumer"] == b"audit-sink"
    ]
    assert dead and dead[0].value == b"not an audit record"

    res = await cli(sink_env, "audit", "verify")
    assert res.returncode == 0, res.stderr
    assert f"verified {sent} audit records" in res.stdout
    res = await cli(sink_env, "audit", "verify", "--tenant", "tenant1")
    assert (
        res.returncode == 0
        and f"verified {sent // len(TENANTS)} audit records of tenant tenant1" in res.stdout
    )

    # tampering done directly on S3, each undone after verify named it
    p = max(chains, key=lambda q: len(chains[q]))
    for key in await store.keys(chain_prefix(chain_name(topic, p))):
        if len((original := (await store.get(key)).body).splitlines()) >= 4:
            break
    lines = original.splitlines()
    victim = orjson.loads(lines[1])

    forged = dict(
        victim,
        event=victim["event"]
        | {"action": "completed" if victim["event"]["action"] != "completed" else "failed"},
    )
    await store.put(key, b"\n".join([lines[0], canonical(forged), *lines[2:]]) + b"\n")
    res = await cli(sink_env, "audit", "verify")
    assert (
        res.returncode == 1 and "audit modified" in res.stderr and victim["event"]["event_id"] in res.stderr
    ), res.stderr

    await store.put(key, b"\n".join([lines[0], *lines[2:]]) + b"\n")
    res = await cli(sink_env, "audit", "verify")
    assert res.returncode == 1 and "audit removed" in res.stderr
    assert f"record seq {victim['chain']['seq']} was removed" in res.stderr, res.stderr

    await store.put(key, b"\n".join([lines[0], lines[2], lines[1], *lines[3:]]) + b"\n")
    res = await cli(sink_env, "audit", "verify")
    assert res.returncode == 1 and "audit reordered" in res.stderr, res.stderr
    assert f"seq {victim['chain']['seq']} belongs here" in res.stderr

    await store.put(key, original)
    res = await cli(sink_env, "audit", "verify")
    assert res.returncode == 0, res.stderr
