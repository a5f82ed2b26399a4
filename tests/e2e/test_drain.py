"""SIGTERM drains: a router or executor told to stop while 100 requests are in flight finishes
what it started, commits, leaves its group, and a new instance takes over. Every request gets
exactly one answer (one result on the caller's reply partition), none is run twice (one
``started`` audit event, one plan, one usage record per request) and none is lost."""

from __future__ import annotations

import asyncio
import collections

import orjson
from aiokafka.partitioner import murmur2

from services.contracts.events import new_id

from .helpers import TopicTail, group_members

N = 100


def _ids_in(records, ids: set[str], field: bytes = b"") -> collections.Counter[str]:
    """Request ids of ``records`` (their JSON ``request_id``) that are in ``ids``; with ``field``,
    only records whose value holds it."""
    out: collections.Counter[str] = collections.Counter()
    for r in records:
        if field and field not in r.value:
            continue
        rid = orjson.loads(r.value).get("request_id")
        if rid in ids:
            out[rid] += 1
    return out


async def _call(gw, rid: str, i: int, scenario: str) -> tuple[str, str]:
    """One request (every fourth streamed): its text as the caller assembled it."""
    msgs = [{"role": "user", "content": f"drain {i}"}]
    if i % 4 == 0:
        text = ""
        async for c in gw.stream_chat(
            model="demo-anthropic", messages=msgs, request_id=rid, timeout_s=90, emulator_scenario=scenario
        ):
            text += c.delta.content or ""
        return rid, text
    r = await gw.chat(
        model="demo-openai", messages=msgs, request_id=rid, timeout_s=90, emulator_scenario=scenario
    )
    return rid, r.message.content


def _check_answers(answers, ids):
    assert [rid for rid, _ in answers] == ids
    assert [text for _, text in answers] == [f"drain {i}" for i in range(N)]  # echoed exactly once


async def test_sigterm_of_an_executor_drains_its_in_flight_requests(gw, stack, stack_settings):
    prefix, bootstrap = stack_settings.topic_prefix, stack_settings.bootstrap_servers
    ids = [new_id() for _ in range(N)]
    wanted = set(ids)
    async with (
        TopicTail(bootstrap, f"{prefix}llm.audit") as audit,
        TopicTail(bootstrap, f"{prefix}llm.usage") as usage,
        TopicTail(bootstrap, gw.reply_to.topic, gw.reply_to.partition) as replies,
    ):
        calls = [asyncio.create_task(_call(gw, rid, i, "ttfb_ms=2500,echo")) for i, rid in enumerate(ids)]
        try:
            # all 100 are with an executor, none finished (the provider takes 2.5 s to answer)
            await audit.until(lambda rs: len(_ids_in(rs, wanted, b'"action":"started"')) == N, timeout=60)
            await asyncio.to_thread(stack.stop, "executor-0")  # SIGTERM; returns once it has exited
            await asyncio.to_thread(stack.restart, "executor-0")  # a new one joins the group
            answers = await asyncio.gather(*calls)
        finally:
            for c in calls:
                c.cancel()
        await usage.until(lambda rs: len(_ids_in(rs, wanted)) == N, timeout=60)
        await replies.until(lambda rs: len(_ids_in(rs, wanted, b'"llm.result.v1"')) == N)
        started = _ids_in(audit.records, wanted, b'"action":"started"')
        billed = _ids_in(usage.records, wanted)
        results = _ids_in(replies.records, wanted, b'"llm.result.v1"')
    _check_answers(answers, ids)
    assert set(billed.values()) == {1} and set(started.values()) == {1} and set(results.values()) == {1}
    assert all(
        orjson.loads(r.value)["status"] == "ok"
        for r in usage.records
        if orjson.loads(r.value)["request_id"] in wanted
    )


async def _owner(bootstrap: str, group: str, topic: str, partition: int) -> str:
    """The stack component (``router-0``) holding ``topic[partition]`` in ``group``."""
    for client_id, parts in (await group_members(bootstrap, group)).items():
        if partition in parts.get(topic, []):
            return client_id.removeprefix("router-")  # the router's client id is router-<instance>
    raise AssertionError(f"nobody in {group} holds {topic}[{partition}]")


async def test_sigterm_of_the_router_owning_the_requests_drains_them(gw, stack, stack_settings):
    """100 requests of one tenant (one partition of llm.requests) sent 15 ms apart; the router
    that owns their partition is SIGTERMed a third of the way in and started again later."""
    prefix, bootstrap = stack_settings.topic_prefix, stack_settings.bootstrap_servers
    requests = f"{prefix}llm.requests"
    partition = (
        murmur2(b"demo") & 0x7FFFFFFF
    ) % 12  # the tenant's partition (aiokafka's default partitioner)
    victim = await _owner(bootstrap, f"{prefix}llmgw-router", requests, partition)
    ids = [new_id() for _ in range(N)]
    wanted = set(ids)
    async with (
        TopicTail(bootstrap, f"{prefix}llm.exec") as plans,
        TopicTail(bootstrap, f"{prefix}llm.usage") as usage,
        TopicTail(bootstrap, gw.reply_to.topic, gw.reply_to.partition) as replies,
    ):
        calls = []
        try:
            for i, rid in enumerate(ids):
                calls.append(asyncio.create_task(_call(gw, rid, i, "ttfb_ms=300,echo")))
                if i == N // 3:
                    stopping = asyncio.create_task(asyncio.to_thread(stack.stop, victim))
                await asyncio.sleep(0.015)  # the load's pace, not a synchronisation
            await stopping
            await asyncio.to_thread(stack.restart, victim)
            answers = await asyncio.gather(*calls)
        finally:
            for c in calls:
                c.cancel()
        await usage.until(lambda rs: len(_ids_in(rs, wanted)) == N, timeout=60)
        await replies.until(lambda rs: len(_ids_in(rs, wanted, b'"llm.result.v1"')) == N)
        planned = _ids_in(plans.records, wanted)
        billed = _ids_in(usage.records, wanted)
        results = _ids_in(replies.records, wanted, b'"llm.result.v1"')
    _check_answers(answers, ids)
    assert set(planned.values()) == {1}, [rid for rid, n in planned.items() if n > 1]  # planned once each
    assert set(billed.values()) == {1} and set(results.values()) == {1}
