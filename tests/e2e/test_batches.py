"""Batches through the whole stack (README "Batches"), driven by the official SDKs: the edge's
``/v1/batches`` and ``/v1/messages/batches`` routes, the batch service running the items on the
requests path (``demo-ollama`` and ``demo-gemini``: their providers have no batch API), the items'
outcomes read back as result files and Anthropic results.

* a 1,000-item batch: partial results read while it runs, every line once and in input order at
  the end, the Batch's ``usage`` the sum of the items' usage records;
* each item billed at half its single price (a priced alias);
* a cancel half-way: some succeeded, the rest canceled, the counts add up, the files agree;
* Anthropic's Message Batches end to end; a refused input; tenant isolation of batch and file ids.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anthropic
import openai
import orjson
import pytest

from services.contracts.events import Usage
from services.runtime.batches import item_id
from services.runtime.config import load_config
from services.runtime.pricing import cost_usd
from services.runtime.topics import Topics
from tests.e2e.helpers import TopicTail

pytestmark = pytest.mark.asyncio(loop_scope="session")

DEMO_KEY = "sk-llmgw-demo"
OTHER_KEY = "sk-llmgw-restricted"  # the tenant "restricted"
T = TypeVar("T")


@pytest.fixture
def oai(edge_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=DEMO_KEY, base_url=f"{edge_url}/v1", max_retries=0, timeout=60)


@pytest.fixture
def other(edge_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=OTHER_KEY, base_url=f"{edge_url}/v1", max_retries=0, timeout=60)


@pytest.fixture
def ant(edge_url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key=DEMO_KEY, base_url=edge_url, max_retries=0, timeout=60)


def line(i: int, model: str = "demo-ollama", scenario: str = "tokens=5") -> dict[str, Any]:
    return {
        "custom_id": f"req-{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": model,
            "messages": [{"role": "user", "content": f"line {i}"}],
            "max_tokens": 16,
            "emulator_scenario": scenario,
        },
    }


async def create(oai: openai.AsyncOpenAI, lines: list[dict[str, Any]]) -> openai.types.Batch:
    data = b"".join(orjson.dumps(x) + b"\n" for x in lines)
    f = await oai.files.create(file=("batch.jsonl", data), purpose="batch")
    return await oai.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
    )


async def until(get: Callable[[], Awaitable[T]], ok: Callable[[T], bool], timeout: float = 180) -> T:
    """``get()`` until ``ok`` holds of its answer (the batch's state as the edge answers it)."""
    deadline = time.monotonic() + timeout
    while True:
        got = await get()
        if ok(got):
            return got
        assert time.monotonic() < deadline, f"not reached in {timeout} s: {got}"
        await asyncio.sleep(0.1)  # between reads of an HTTP resource: a poll, no event to wait on


async def jsonl(oai: openai.AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [orjson.loads(x) for x in (await oai.files.content(file_id)).read().splitlines()]


def usage_of(records, batch_id: str) -> list[dict[str, Any]]:
    return [u for r in records if r.value and (u := orjson.loads(r.value)).get("batch_id") == batch_id]


async def test_a_thousand_item_batch_with_partial_results_and_usage(oai, stack_settings):
    t = Topics.load(stack_settings.topics_path, stack_settings.topic_prefix)
    n = 1000
    async with TopicTail(stack_settings.bootstrap_servers, t.usage.name) as usage:
        batch = await create(oai, [line(i, scenario="tokens=5,ttfb_ms=10") for i in range(n)])
        assert batch.status == "validating" and batch.request_counts is not None
        assert (batch.request_counts.total, batch.model) == (n, "demo-ollama")

        def some(b: openai.types.Batch) -> bool:
            return b.request_counts is not None and b.request_counts.completed >= 50

        running = await until(lambda: oai.batches.retrieve(batch.id), some)
        partial = await jsonl(oai, running.output_file_id)  # read while it runs
        assert running.request_counts is not None
        assert running.request_counts.completed <= len(partial) < n  # the items done by now
        indices = [int(p["custom_id"].removeprefix("req-")) for p in partial]
        assert indices == sorted(indices)  # input order
        assert all(p["response"]["status_code"] == 200 and p["error"] is None for p in partial)

        done = await until(lambda: oai.batches.retrieve(batch.id), lambda b: b.status == "completed", 600)
        assert done.request_counts is not None and done.request_counts.model_dump() == {
            "total": n,
            "completed": n,
            "failed": 0,
        }
        assert done.in_progress_at and done.finalizing_at and done.completed_at
        output = await jsonl(oai, done.output_file_id)
        assert [o["custom_id"] for o in output] == [f"req-{i}" for i in range(n)]
        assert [o["response"]["request_id"] for o in output] == [item_id(batch.id, i) for i in range(n)]
        bodies = [openai.types.chat.ChatCompletion.model_validate(o["response"]["body"]) for o in output]
        assert all(b.choices[0].message.content for b in bodies)
        assert {o["id"] for o in partial} <= {o["id"] for o in output}  # ids stable across reads
        assert await jsonl(oai, done.error_file_id) == []
        meta = await oai.files.retrieve(done.output_file_id or "")
        assert meta.purpose == "batch_output" and meta.bytes > 0

        await usage.until(lambda rs: len(usage_of(rs, batch.id)) >= n, timeout=120)
        used = usage_of(usage.records, batch.id)
        assert sorted(u["request_id"] for u in used) == sorted(item_id(batch.id, i) for i in range(n))
        assert done.usage is not None
        assert done.usage.input_tokens == sum(u["prompt_tokens"] for u in used) > 0
        assert done.usage.output_tokens == sum(u["completion_tokens"] for u in used) > 0
        assert done.usage.total_tokens == sum(u["total_tokens"] for u in used)
        assert sum(b.usage.total_tokens for b in bodies if b.usage) == done.usage.total_tokens


async def test_each_item_costs_half_its_single_price(oai, stack_settings):
    config = load_config(stack_settings.config_path, stack_settings.env)
    dep = config.models["demo-gemini"].deployments[0]
    assert dep.price.input_per_mtok > 0 and not config.providers[dep.provider].batch_api
    t = Topics.load(stack_settings.topics_path, stack_settings.topic_prefix)
    n = 10
    async with TopicTail(stack_settings.bootstrap_servers, t.usage.name) as usage:
        batch = await create(oai, [line(i, model="demo-gemini", scenario="tokens=7") for i in range(n)])
        await until(lambda: oai.batches.retrieve(batch.id), lambda b: b.status == "completed")
        await usage.until(lambda rs: len(usage_of(rs, batch.id)) >= n, timeout=60)
    used = usage_of(usage.records, batch.id)
    assert {u["custom_id"] for u in used} == {f"req-{i}" for i in range(n)}
    for u in used:
        tokens = Usage(
            prompt_tokens=u["prompt_tokens"],
            completion_tokens=u["completion_tokens"],
            total_tokens=u["total_tokens"],
            cached_tokens=u["cached_tokens"],
        )
        single = cost_usd(tokens, dep)
        assert single > 0 and u["cost_usd"] == pytest.approx(single / 2, abs=1e-10)


async def test_a_cancel_half_way(oai):
    n = 300
    batch = await create(oai, [line(i, scenario="tokens=5,ttfb_ms=100") for i in range(n)])

    def some(b: openai.types.Batch) -> bool:
        return b.request_counts is not None and b.request_counts.completed >= 20

    await until(lambda: oai.batches.retrieve(batch.id), some)
    cancelling = await oai.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at is not None
    done = await until(lambda: oai.batches.retrieve(batch.id), lambda b: b.status == "cancelled")
    c = done.request_counts
    assert c is not None and c.total == n and c.completed + c.failed == n
    assert 20 <= c.completed < n and c.failed > 0
    output = await jsonl(oai, done.output_file_id)
    errors = await jsonl(oai, done.error_file_id)
    assert len(output) == c.completed and len(errors) == c.failed
    assert {o["custom_id"] for o in output} | {e["custom_id"] for e in errors} == {
        f"req-{i}" for i in range(n)
    }
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"} and all(
        e["response"] is None for e in errors
    )
    with pytest.raises(openai.ConflictError):
        await oai.batches.cancel(batch.id)


async def test_a_refused_input_fails_the_batch_and_runs_nothing(oai):
    batch = await create(oai, [line(0), {**line(1), "body": {"model": "demo-ollama", "messages": []}}])
    assert batch.status == "failed" and batch.errors is not None
    [err] = batch.errors.data or []
    assert (err.line, err.param) == (2, "body.messages")
    again = await oai.batches.retrieve(batch.id)  # the batch service leaves an ended batch alone
    assert again.status == "failed" and again.request_counts is not None and again.request_counts.total == 0


async def test_another_tenant_sees_no_batch_and_no_result_file(oai, other):
    batch = await create(oai, [line(i) for i in range(3)])
    await until(lambda: oai.batches.retrieve(batch.id), lambda b: b.status == "completed")
    for call in (other.batches.retrieve, other.batches.cancel):
        with pytest.raises(openai.NotFoundError) as info:
            await call(batch.id)
        assert info.value.code == "batch_not_found"
    for file_id in (batch.output_file_id, batch.error_file_id):
        assert file_id is not None
        for file_call in (other.files.retrieve, other.files.content):
            with pytest.raises(openai.NotFoundError):
                await file_call(file_id)
    assert batch.id not in {b.id async for b in other.batches.list()}
    assert batch.id in {b.id async for b in oai.batches.list(limit=100)}
    with pytest.raises(openai.NotFoundError):
        await other.batches.create(
            input_file_id=batch.input_file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert len(await jsonl(oai, batch.output_file_id)) == 3


async def test_anthropic_message_batches_end_to_end(ant, edge_url):
    n = 20
    requests = [
        {
            "custom_id": f"m-{i}",
            "params": {
                "model": "demo-ollama",
                "max_tokens": 16,
                "messages": [{"role": "user", "content": f"hello {i}"}],
                "emulator_scenario": "tokens=4",
            },
        }
        for i in range(n)
    ]
    batch = await ant.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    assert batch.processing_status == "in_progress" and batch.request_counts.processing == n
    assert batch.results_url and batch.results_url.endswith(f"/v1/messages/batches/{batch.id}/results")
    assert batch.id in {b.id for b in (await ant.messages.batches.list(limit=100)).data}
    done = await until(
        lambda: ant.messages.batches.retrieve(batch.id), lambda b: b.processing_status == "ended"
    )
    assert done.request_counts.model_dump() == {
        "processing": 0,
        "succeeded": n,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert done.ended_at is not None
    results = [r async for r in await ant.messages.batches.results(batch.id)]
    assert [r.custom_id for r in results] == [f"m-{i}" for i in range(n)]
    for r in results:
        assert r.result.type == "succeeded"
        assert r.result.message.content[0].type == "text" and r.result.message.content[0].text
        assert r.result.message.usage.output_tokens > 0
    with pytest.raises(anthropic.BadRequestError):
        await ant.messages.batches.cancel(batch.id)
    with pytest.raises(anthropic.BadRequestError) as bad:
        await ant.messages.batches.create(requests=[{"custom_id": "a b", "params": requests[0]["params"]}])  # type: ignore[list-item]
    assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]

    other = anthropic.AsyncAnthropic(api_key=OTHER_KEY, base_url=edge_url, max_retries=0, timeout=30)
    with pytest.raises(anthropic.NotFoundError):
        await other.messages.batches.retrieve(batch.id)
    with pytest.raises(anthropic.NotFoundError):
        await other.messages.batches.results(batch.id)
    assert batch.id not in {b.id for b in (await other.messages.batches.list()).data}
    with pytest.raises(anthropic.NotFoundError):
        await other.messages.batches.delete(batch.id)

    deleted = await ant.messages.batches.delete(batch.id)
    assert deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        await ant.messages.batches.retrieve(batch.id)
