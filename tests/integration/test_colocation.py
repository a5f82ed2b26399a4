"""The router's group on a real broker: partition i of llm.requests and of llm.usage on one
instance, the ledger of each governed partition rebuilt there before its requests are admitted,
exact limits with two instances under concurrent load, and the ledger kept across a rebalance."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.contracts.events import ChatRequested, UsageRecorded, new_id
from services.router.admission import tenant_partition
from services.router.app import Router
from services.runtime.config import load_config
from services.runtime.settings import Settings
from services.runtime.topics import Topics, apply_topics
from tests.support import eventually

ROOT = Path(__file__).resolve().parents[2]
TENANTS = [f"g{i}" for i in range(8)]
CONFIG = """
providers: {p: {kind: openai, base_url: "http://p.invalid/v1"}}
models:
  m:
    max_output_tokens: 100
    deployments: [{provider: p, model: m1, price: {input_per_mtok: 1.0, output_per_mtok: 2.0}}]
tenants:
  free: {}
""" + "".join(f"  {t}: {{limits: {{requests_per_min: 7}}}}\n" for t in TENANTS)


@pytest.fixture
async def env(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> AsyncIterator[tuple[Settings, Topics]]:
    (tmp_path / "config.yaml").write_text(CONFIG)
    topics = Topics.load(ROOT / "topics.yaml", topic_prefix)
    await apply_topics(kafka_bootstrap, topics)
    base = dataclasses.replace(
        Settings.from_env({}),
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        config_path=tmp_path / "config.yaml",
    )
    yield base, topics


def router(env: tuple[Settings, Topics], name: str) -> Router:
    settings, topics = env
    s = dataclasses.replace(settings, instance_id=name)
    return Router(s, load_config(s.config_path, s.env), topics)


def parts(r: Router, topic: str) -> set[int]:
    return {tp.partition for tp in r.consumer.assignment() if tp.topic == topic}


def settled(routers: list[Router], topics: Topics) -> bool:
    """Every partition assigned once, and every governed partition's ledger rebuilt by its owner."""
    owned = [parts(r, topics.requests.name) for r in routers]
    governed = routers[0].keeper.governed  # type: ignore[union-attr]
    return (
        sum(len(o) for o in owned) == topics.requests.partitions
        and all(owned)
        and all(set(r.keeper.ledgers) == o & governed for r, o in zip(routers, owned, strict=True))
    )  # type: ignore[union-attr]


def chat(tenant: str, i: int) -> ChatRequested:
    return ChatRequested(
        request_id=f"{tenant}-{i}-{new_id()[:6]}",
        tenant_id=tenant,
        user_id="u",
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        params={"max_tokens": 5},
    )


async def send(publisher, topics: Topics, reqs: list[ChatRequested]) -> None:
    futs = [await publisher.publish(topics.requests.name, r, key=r.tenant_id) for r in reqs]
    await asyncio.gather(*futs)


async def outcomes(bootstrap: str, topics: Topics, n: int) -> tuple[list[str], list[str]]:
    """(request ids planned on llm.exec, request ids answered rate_limited) once ``n`` are in."""
    exec_recs: list = []
    res_recs: list = []
    async with asyncio.timeout(30):
        while True:
            exec_recs = await _read(bootstrap, topics.exec.name)
            res_recs = await _read(bootstrap, topics.results.name)
            if len(exec_recs) + len(res_recs) >= n:
                break
    planned = [orjson.loads(r.value)["request_id"] for r in exec_recs]
    limited = [
        d["request_id"]
        for d in (orjson.loads(r.value) for r in res_recs)
        if d.get("error", {}).get("code") == "rate_limited"
    ]
    return planned, limited


async def _read(bootstrap: str, topic: str) -> list:
    """Every record of ``topic`` up to its end now."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in (c.partitions_for_topic(topic) or set())]
        if not tps:
            await c._client.force_metadata_update()
            tps = [TopicPartition(topic, p) for p in (c.partitions_for_topic(topic) or set())]
        c.assign(tps)
        ends = await c.end_offsets(tps)
        await c.seek_to_beginning(*tps)
        out = []
        left = {tp for tp in tps if ends[tp] > 0}
        while left:
            for recs in (await c.getmany(*left, timeout_ms=500)).values():
                out.extend(recs)
            left = {tp for tp in left if await c.position(tp) < ends[tp]}
        return out
    finally:
        await c.stop()


async def test_partition_i_of_requests_and_usage_and_its_ledger_are_on_one_instance(env, publisher):
    settings, topics = env
    a, b = router(env, "a"), router(env, "b")
    await a.start()
    await b.start()
    try:
        await eventually(lambda: settled([a, b], topics), within=60)
        governed = a.keeper.governed  # type: ignore[union-attr]
        assert governed == {tenant_partition(t, topics.requests.partitions) for t in TENANTS}
        for r in (a, b):
            assert parts(r, topics.requests.name) == parts(r, topics.usage.name)
            # usage partitions holding no governed tenant are never read
            idle = {TopicPartition(topics.usage.name, p) for p in parts(r, topics.usage.name) - governed}
            assert idle <= r.consumer._consumer.paused()
        # the usage of a tenant reaches the instance that admits its requests
        t = TENANTS[0]
        p = tenant_partition(t, topics.requests.partitions)
        owner = a if p in a.keeper.ledgers else b  # type: ignore[union-attr]
        use = UsageRecorded(
            request_id="ext-1", tenant_id=t, status="ok", alias="m", total_tokens=3, cost_usd=0.0
        )
        await (await publisher.publish(topics.usage.name, use, key=t))
        await eventually(lambda: "ext-1" in owner.keeper.ledgers[p].tenant(t).settled_ids)  # type: ignore[union-attr]
    finally:
        await a.aclose()
        await b.aclose()


async def test_exactly_the_limit_is_admitted_with_two_instances_under_concurrent_load(env, publisher):
    settings, topics = env
    a, b = router(env, "a"), router(env, "b")
    await a.start()
    await b.start()
    try:
        await eventually(lambda: settled([a, b], topics), within=60)
        reqs = [chat(t, i) for i in range(15) for t in TENANTS[:4]] + [chat("free", i) for i in range(10)]
        await send(publisher, topics, reqs)
        planned, limited = await outcomes(settings.bootstrap_servers, topics, len(reqs))
        for t in TENANTS[:4]:
            assert sum(r.startswith(f"{t}-") for r in planned) == 7, t
            assert sum(r.startswith(f"{t}-") for r in limited) == 8, t
        assert sum(r.startswith("free-") for r in planned) == 10
    finally:
        await a.aclose()
        await b.aclose()


async def test_the_next_owner_keeps_the_counters_after_a_rebalance(env, publisher):
    """A admits 4 of tenant g0's 7; B joins, then A leaves: whoever owns g0 meanwhile admits
    exactly the 3 left, never 7 again."""
    settings, topics = env
    a = router(env, "a")
    await a.start()
    b = None
    try:
        await eventually(lambda: settled([a], topics), within=60)
        await send(publisher, topics, [chat("g0", i) for i in range(4)])
        planned, _ = await outcomes(settings.bootstrap_servers, topics, 4)
        assert len(planned) == 4
        b = router(env, "b")
        await b.start()
        await eventually(lambda: settled([a, b], topics), within=60)
        await send(publisher, topics, [chat("g0", 10 + i) for i in range(2)])
        planned, limited = await outcomes(settings.bootstrap_servers, topics, 6)
        assert (len(planned), len(limited)) == (6, 0)
        await a.aclose()  # its partitions move to b, which rebuilds them from Kafka
        a = None
        await eventually(lambda: settled([b], topics), within=60)
        assert b.keeper.rebuilds  # type: ignore[union-attr]
        await send(publisher, topics, [chat("g0", 20 + i) for i in range(5)])
        planned, limited = await outcomes(settings.bootstrap_servers, topics, 11)
        assert (len(planned), len(limited)) == (7, 4)
    finally:
        for r in (a, b):
            if r is not None:
                await r.aclose()
