"""Chat over the real broker through two routers and two executors, against the emulator."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from services.contracts.errors import (
    CapabilityNotSupported,
    ModelNotApproved,
    ModelNotFound,
    ValidationError,
)
from services.contracts.events import ResultProduced, UsageRecorded, new_id
from services.emulator.text import completion_text, count_prompt_tokens

from .helpers import TopicTail

ALIASES = [
    ("demo-openai", "emulator-openai", "gpt-emu"),
    ("demo-anthropic", "emulator-anthropic", "claude-emu"),
    ("demo-ollama", "emulator-ollama", "llama-emu"),
]
MSGS = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "tell me about kafka partitions"},
]


def expected_prompt_tokens(alias):
    if alias == "demo-anthropic":  # system goes to the top-level field there
        return count_prompt_tokens(MSGS[1:], system=MSGS[0]["content"])
    return count_prompt_tokens(MSGS)


@pytest.mark.parametrize("alias,provider,upstream", ALIASES)
async def test_sync_chat_each_wire_format(gw, alias, provider, upstream):
    r = await gw.chat(model=alias, messages=MSGS, max_tokens=50)
    assert r.status == "ok" and r.alias == alias and r.provider == provider and r.model.startswith(upstream)
    assert r.message.content == completion_text(8)
    assert r.finish_reason == "stop"
    assert r.usage.completion_tokens == 8
    assert r.usage.prompt_tokens == expected_prompt_tokens(alias)
    assert r.usage.total_tokens == r.usage.prompt_tokens + 8
    assert r.latency.total_ms > 0 and r.latency.provider_ms > 0


@pytest.mark.parametrize("alias,provider,upstream", ALIASES)
async def test_streaming_chat_each_wire_format(gw, alias, provider, upstream):
    chunks = [c async for c in gw.stream_chat(model=alias, messages=MSGS, max_tokens=50)]
    assert [c.seq for c in chunks] == list(range(len(chunks)))  # ordered, gap-free from 0
    assert chunks[0].delta.role == "assistant" and chunks[0].provider == provider
    assert "".join(c.delta.content or "" for c in chunks) == completion_text(8)
    last = chunks[-1]
    assert last.final and last.finish_reason == "stop"
    assert sum(c.final for c in chunks) == 1
    assert last.usage.completion_tokens == 8 and last.usage.prompt_tokens == expected_prompt_tokens(alias)


async def test_max_tokens_stops_with_length(gw):
    r = await gw.chat(model="demo-openai", messages=MSGS, max_tokens=3)
    assert r.finish_reason == "length" and r.usage.completion_tokens == 3


async def test_rejections_reach_the_caller_with_a_reason(gw, restricted_gw):
    with pytest.raises(ModelNotFound, match="'gpt-nope' does not exist"):
        await gw.chat(model="gpt-nope", messages=MSGS)
    with pytest.raises(
        ModelNotApproved, match="tenant 'restricted' is not approved for model 'demo-anthropic'"
    ):
        await restricted_gw.chat(model="demo-anthropic", messages=MSGS)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    with pytest.raises(CapabilityNotSupported, match="'mock-gpt' does not support tools"):
        await gw.chat(model="mock-gpt", messages=MSGS, tools=tools)
    with pytest.raises(ValidationError, match="max_tokens=100000 exceeds"):
        await gw.chat(model="demo-openai", messages=MSGS, max_tokens=100000)


async def test_schema_violation_with_reply_address_gets_validation_error_and_dlq(gw, stack_settings):
    """A request that fails the schema is dead-lettered and, since it says where to answer,
    the caller hears why."""
    req = gw.build_request("demo-openai", MSGS, stream=False)
    doc = req.model_dump(mode="json")
    doc["messages"] = []
    dlq = f"{stack_settings.topic_prefix}llm.dlq"
    async with TopicTail(stack_settings.bootstrap_servers, dlq) as tail:
        q = gw._waiting.setdefault(req.request_id, asyncio.Queue())
        await (await gw._publisher.send_raw(gw.topics.requests.name, orjson.dumps(doc), key=b"demo"))
        async with asyncio.timeout(30):
            result = await q.get()
        dead = await tail.until(lambda rs: any(req.request_id.encode() in (r.value or b"") for r in rs))
    gw._waiting.pop(req.request_id)
    assert isinstance(result, ResultProduced) and result.error.code == "validation_error"
    assert "messages: List should have at least 1 item" in result.error.message
    headers = dict(next(r for r in dead if req.request_id.encode() in r.value).headers)
    assert b"messages" in headers["dlq.reason"]


async def test_malformed_events_land_in_dlq_while_router_keeps_answering(gw, stack_settings):
    dlq = f"{stack_settings.topic_prefix}llm.dlq"
    junk = [
        b"{not json at all",
        orjson.dumps({"type": "llm.request.v1", "tenant_id": "demo"}),
        b"\x00" * (5 * 1024 * 1024),
    ]
    async with TopicTail(stack_settings.bootstrap_servers, dlq) as tail:
        for value in junk:
            await (await gw._publisher.send_raw(gw.topics.requests.name, value, key=b"demo"))
        answers = await asyncio.gather(*[gw.chat(model="demo-openai", messages=MSGS) for _ in range(5)])
        dead = await tail.until(lambda rs: {r.value for r in rs} >= set(junk), timeout=60)
    assert all(a.status == "ok" for a in answers)
    reasons = {r.value: dict(r.headers)["dlq.reason"].decode() for r in dead if r.value in junk}
    assert "invalid JSON" in reasons[junk[0]]
    assert "request_id: Field required" in reasons[junk[1]] and "messages: Field required" in reasons[junk[1]]
    assert "invalid JSON" in reasons[junk[2]]
    assert all(dict(r.headers)["dlq.consumer"] == b"router" for r in dead if r.value in junk)


async def test_usage_event_per_request_with_cost(gw, stack_settings):
    usage_topic = f"{stack_settings.topic_prefix}llm.usage"
    async with TopicTail(stack_settings.bootstrap_servers, usage_topic) as tail:
        r = await gw.chat(model="demo-anthropic", messages=MSGS, metadata={"conversation_id": "conv-1"})
        recs = await tail.until(lambda rs: any(r.request_id.encode() in x.value for x in rs))
    mine = [UsageRecorded.model_validate_json(x.value) for x in recs if r.request_id.encode() in x.value]
    assert len(mine) == 1
    u = mine[0]
    assert (u.status, u.alias, u.provider, u.conversation_id, u.user_id) == (
        "ok",
        "demo-anthropic",
        "emulator-anthropic",
        "conv-1",
        "e2e-user",
    )
    assert u.prompt_tokens == r.usage.prompt_tokens and u.completion_tokens == 8
    assert u.cost_usd == pytest.approx((u.prompt_tokens * 3.0 + 8 * 15.0) / 1e6)
    assert u.total_ms > 0 and u.ttft_ms is not None


async def test_two_hundred_concurrent_requests_each_answered_once(gw, stack_settings):
    """Two routers and two executors share the work; every request gets exactly one result."""
    async with TopicTail(stack_settings.bootstrap_servers, gw.reply_to.topic, gw.reply_to.partition) as tail:
        ids = [new_id() for _ in range(200)]
        results = await asyncio.gather(
            *[
                gw.chat(
                    model=("demo-openai", "demo-anthropic", "demo-ollama")[i % 3],
                    messages=MSGS,
                    request_id=rid,
                )
                for i, rid in enumerate(ids)
            ]
        )
        assert [r.request_id for r in results] == ids and all(r.status == "ok" for r in results)
        await tail.until(lambda rs: sum(b'"llm.result.v1"' in r.value for r in rs) >= 200)
        # a duplicate would arrive after its twin; wait for a marker request sent afterwards
        marker = await gw.chat(model="demo-openai", messages=MSGS)
        await tail.until(lambda rs: any(marker.request_id.encode() == r.key for r in rs))
    counts: dict[str, int] = {}
    for r in tail.records:
        if b'"llm.result.v1"' in r.value:
            counts[r.key.decode()] = counts.get(r.key.decode(), 0) + 1
    assert all(counts.get(rid) == 1 for rid in ids), {k: v for k, v in counts.items() if v != 1}


async def test_one_trace_from_request_to_result(gw, stack_settings):
    """W3C trace context rides in Kafka headers: the result continues the request's trace."""
    from services.runtime import telemetry

    telemetry.setup("e2e-caller")
    requests_topic = gw.topics.requests.name
    async with (
        TopicTail(stack_settings.bootstrap_servers, requests_topic) as reqs,
        TopicTail(stack_settings.bootstrap_servers, gw.reply_to.topic, gw.reply_to.partition) as replies,
    ):
        r = await gw.chat(model="demo-openai", messages=MSGS)
        key = r.request_id.encode()
        await reqs.until(lambda rs: any(key in x.value for x in rs))
        await replies.until(lambda rs: any(x.key == key for x in rs))

    def trace_id(record):
        return dict(record.headers)["traceparent"].decode().split("-")[1]

    sent = next(x for x in reqs.records if key in x.value)
    answer = next(x for x in replies.records if x.key == key)
    assert trace_id(sent) == trace_id(answer) != "0" * 32
