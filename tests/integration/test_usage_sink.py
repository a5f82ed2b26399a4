"""The usage sink as its own process on the real broker and a real S3 endpoint: SIGKILLed after
writing and before committing, restarted, every record in the bucket exactly once; the report's
totals are the published records'; a record that does not parse goes to the DLQ."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from services.contracts.events import UsageRecorded
from services.runtime.s3 import S3ObjectStore
from services.usage_sink.app import GROUP
from services.usage_sink.layout import ROOT as USAGE_ROOT
from services.usage_sink.layout import offset_range
from tests.integration.sink_support import SinkProcess, cli, committed, end_offsets, s3_url, until

from .test_consumer import read_all

pytestmark = pytest.mark.integration
__all__ = ["s3_url"]  # the fixture
TENANTS = [f"tenant{i}" for i in range(8)]
NOW = datetime.now(UTC).replace(microsecond=0)


def usage(i: int) -> UsageRecorded:
    prompt, completion = 10 + i % 50, i % 7
    return UsageRecorded(
        event_id=f"e{i}",
        request_id=f"r{i}",
        tenant_id=TENANTS[i % len(TENANTS)],
        user_id=f"user{i % 3}",
        client_id=f"client{i % 2}",
        status="ok" if i % 10 else "error",
        alias="demo-openai" if i % 4 else "demo-anthropic",
        provider="emulator",
        model="gpt-emu",
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cost_usd=round(1e-6 * (i % 97), 9),
        occurred_at=NOW - timedelta(seconds=7 * i),
    )


@pytest.fixture
async def store(s3_url: str) -> AsyncIterator[S3ObjectStore]:
    async with S3ObjectStore(f"usage-{uuid.uuid4().hex[:10]}", endpoint_url=s3_url) as s:
        yield s


@pytest.fixture
def sink_env(kafka_bootstrap, topic_prefix, s3_url, store) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "LLMGW_TOPIC_PREFIX": topic_prefix,
        "LLMGW_S3_ENDPOINT": s3_url,
        "LLMGW_USAGE_BUCKET": store.bucket,
        "LLMGW_USAGE_SINK_BATCH_RECORDS": "40",
        "LLMGW_USAGE_SINK_BATCH_MS": "300",
        "LLMGW_LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def sink(sink_env, topics, tmp_path) -> Iterator[SinkProcess]:
    p = SinkProcess("services.usage_sink", sink_env, tmp_path)
    yield p
    p.kill()


async def stored_ranges(store: S3ObjectStore) -> dict[int, int]:
    """Partition -> the highest offset any object's range reaches."""
    out: dict[int, int] = {}
    for key in await store.keys(USAGE_ROOT + "tenant="):
        partition = int(key.rsplit("/", 1)[1].split("+")[1])
        out[partition] = max(out.get(partition, -1), offset_range(key)[1])
    return out


async def stored_ids(store: S3ObjectStore) -> Counter[str]:
    seen: Counter[str] = Counter()
    for key in await store.keys(USAGE_ROOT + "tenant="):
        obj = await store.get(key)
        seen.update(orjson.loads(line)["event_id"] for line in obj.body.splitlines())
    return seen


async def test_killed_between_write_and_commit_each_record_is_stored_once(
    kafka_bootstrap, topics, publisher, topic_prefix, store, sink, sink_env
):
    topic, parts, group = topics.usage.name, topics.usage.partitions, topic_prefix + GROUP
    await (await publisher.send_raw(topic, b'{"type": "llm.usage.v1", "oops"', key=b"tenant0"))
    sent, exercised = 0, False
    for _ in range(5):  # until a kill lands after a write and before its commit (most often the first)
        acks = [
            await publisher.publish(topic, usage(i), key=usage(i).tenant_id) for i in range(sent, sent + 400)
        ]
        await asyncio.gather(*acks)
        sent += 400
        ends = await end_offsets(kafka_bootstrap, topic, parts)
        await asyncio.to_thread(sink.start)

        async def all_written(ends: dict[int, int] = ends) -> bool:
            through = await stored_ranges(store)
            return all(through.get(p, -1) >= end - 1 for p, end in ends.items() if end > 0)

        await until(all_written, within=90, step=0.005)
        sink.kill()  # at once: the last batches' commits (every 0.2 s) are most likely not out yet
        through, done = await stored_ranges(store), await committed(kafka_bootstrap, group, topic, parts)
        if any(done[p] <= last for p, last in through.items()):
            exercised = True  # stored records that will be delivered again
            break
    assert exercised, "no kill landed between a write and its commit"

    sink.env["LLMGW_USAGE_SINK_BATCH_RECORDS"] = "7"  # other batch boundaries, so other object names
    await asyncio.to_thread(sink.start)  # the same records again, from the committed offsets

    async def all_committed() -> bool:
        done, ends = (
            await committed(kafka_bootstrap, group, topic, parts),
            await end_offsets(kafka_bootstrap, topic, parts),
        )
        return all(done[p] == end for p, end in ends.items() if end > 0)

    await until(all_committed, within=90)
    assert sink.stop() == 0
    seen = await stored_ids(store)
    assert seen == Counter({f"e{i}": 1 for i in range(sent)}), {k: v for k, v in seen.items() if v != 1}

    dead = [
        r
        for r in await read_all(kafka_bootstrap, topics.dlq.name, 1)
        if dict(r.headers)["dlq.consumer"] == b"usage-sink"
    ]
    assert (
        dead
        and dead[0].value == b'{"type": "llm.usage.v1", "oops"'
        and b"usage" in dict(dead[0].headers)["dlq.reason"].lower()
    )

    # the report, from S3, against what was published
    res = await cli(
        sink_env, "usage", "report", "--tenant", "tenant3", "--since", "7d", "--by", "user", "--json"
    )
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    mine = [usage(i) for i in range(sent) if usage(i).tenant_id == "tenant3"]
    assert report["total"]["requests"] == len(mine)
    assert report["total"]["errors"] == sum(u.status != "ok" for u in mine)
    assert report["total"]["prompt_tokens"] == sum(u.prompt_tokens for u in mine)
    assert report["total"]["completion_tokens"] == sum(u.completion_tokens for u in mine)
    assert report["total"]["total_tokens"] == sum(u.total_tokens for u in mine)
    assert report["total"]["cost_usd"] == pytest.approx(sum(u.cost_usd for u in mine))
    assert {g["key"]: g["requests"] for g in report["groups"]} == dict(Counter(u.user_id for u in mine))

    since = NOW - timedelta(minutes=10)
    res = await cli(sink_env, "usage", "report", "--tenant", "tenant3", "--since", since.isoformat())
    assert res.returncode == 0, res.stderr
    recent = [u for u in mine if u.occurred_at >= since]
    assert res.stdout.splitlines()[-1].split()[:2] == ["tenant3", str(len(recent))]
