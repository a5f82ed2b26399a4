"""Budgets over the whole stack (two routers): demo tenant ``budgeted`` (USD 0.001 a UTC day).
50 requests at once: settled spend stays within the budget plus the largest (actual - reserved)
of one request; a refusal is 402 naming what remains; a SIGKILLed owner's successor keeps the
spend. The ledger of this session's topics starts empty, so the day's budget is whole."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from services.cli.stack import Stack
from services.client import GatewayClient
from services.contracts.errors import BudgetExceeded
from services.contracts.events import ResultProduced

from .owners import kill_owner
from .test_rate_limits import headers_of

KEY = "sk-llmgw-budgeted"
AUTH = {"authorization": f"Bearer {KEY}"}
MSGS = [{"role": "user", "content": "hi"}]
BUDGET = 0.001
#: 150 output tokens at most (demo-openai: USD 0.60 per million out): about USD 0.00009 reserved
#: per request, so about 10 of 50 fit. The emulator answers 140 tokens after 1.5 s, so all 50
#: are decided before the first settles.
MAX_TOKENS, TOKENS, SCENARIO = 150, 140, "ttfb_ms=1500,tokens=140"


@pytest.fixture(scope="module")
async def budgeted(stack: Stack, stack_settings) -> AsyncIterator[GatewayClient]:
    async with GatewayClient(
        stack_settings.bootstrap_servers,
        "budgeted",
        "budgeted-user",
        topic_prefix=stack_settings.topic_prefix,
        timeout_s=90,
    ) as client:
        yield client


@pytest.fixture(scope="module")
def killed(stack: Stack) -> AsyncIterator[list[str]]:
    names: list[str] = []
    yield names  # type: ignore[misc]
    for name in names:
        stack.restart(name)


async def records(bootstrap: str, topic: str) -> list[dict]:
    """Every record of ``topic`` up to its end, decoded."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await c.start()
    try:
        async with asyncio.timeout(30):
            while not c.partitions_for_topic(topic):  # a fresh client's metadata may not have it yet
                await c._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        c.assign(tps)
        ends = await c.end_offsets(tps)
        await c.seek_to_beginning(*tps)
        out: list[dict] = []
        left = {tp for tp in tps if ends[tp]}
        while left:
            for recs in (await c.getmany(*left, timeout_ms=500)).values():
                out += [orjson.loads(r.value) for r in recs]
            left = {tp for tp in left if await c.position(tp) < ends[tp]}
        return out
    finally:
        await c.stop()


async def spend(settings) -> tuple[dict[str, float], dict[str, float]]:
    """(reserved, settled) USD per request id of tenant budgeted, from llm.admissions and llm.usage."""
    p = settings.topic_prefix
    adm = {
        d["request_id"]: d["cost_usd"]
        for d in await records(settings.bootstrap_servers, f"{p}llm.admissions")
        if d["tenant_id"] == "budgeted"
    }
    use = {
        d["request_id"]: d["cost_usd"]
        for d in await records(settings.bootstrap_servers, f"{p}llm.usage")
        if d["tenant_id"] == "budgeted"
    }
    return adm, use


async def spend_of(
    settings, ids: set[str], timeout_s: float = 30.0
) -> tuple[dict[str, float], dict[str, float]]:
    """``spend`` once both topics hold a record of every one of ``ids`` (or at the deadline, as
    they are): a topic read right after the answers may end at offsets a moment old."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        reserved, settled = await spend(settings)
        if (ids <= set(reserved) and ids <= set(settled)) or asyncio.get_running_loop().time() > deadline:
            return reserved, settled


async def test_fifty_at_once_never_overshoot_and_a_killed_owners_successor_keeps_the_spend(
    budgeted, edge_url, stack, stack_settings, killed
):
    calls = [
        budgeted.chat(model="demo-openai", messages=MSGS, max_tokens=MAX_TOKENS, emulator_scenario=SCENARIO)
        for _ in range(50)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    ok = [r for r in results if isinstance(r, ResultProduced)]
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert len(ok) + len(refused) == 50, [
        r for r in results if not isinstance(r, ResultProduced | BudgetExceeded)
    ]
    reserved, settled = await spend_of(stack_settings, {r.request_id for r in ok})
    assert set(reserved) == {r.request_id for r in ok} and set(settled) == set(reserved)
    # exact: every request reserved the same, and all 50 were decided before any settled
    one = next(iter(reserved.values()))
    assert len(ok) == int(BUDGET / one + 1e-9) and len(ok) >= 5
    # the bound: settled spend <= budget + the largest (actual - reserved) of one request
    worst = max(settled[r] - reserved[r] for r in reserved)
    assert sum(settled.values()) <= BUDGET + max(worst, 0.0) + 1e-12
    assert all(e.http_status == 402 and e.details["remaining_usd"] < one for e in refused)

    async with httpx.AsyncClient(base_url=edge_url, timeout=90) as http:
        body = {"model": "demo-openai", "messages": MSGS, "max_tokens": 1000}

        async def remaining() -> float:
            r = await http.post("/v1/chat/completions", headers=AUTH, json=body)
            assert r.status_code == 402, r.text
            assert not any(k.startswith("retry-after") for k in headers_of(r))  # a retry will not help
            err = r.json()["error"]
            assert err["code"] == "budget_exceeded" and "left" in err["message"]
            return float(err["details"]["remaining_usd"])

        left = BUDGET - sum(settled.values())
        for _ in range(100):  # the owner settles the usage as it reads it
            if abs(await remaining() - left) < 1e-9:
                break
            await asyncio.sleep(0.1)
        assert abs(await remaining() - left) < 1e-9

        killed.append(await kill_owner(stack, stack_settings, "budgeted"))
        assert abs(await remaining() - left) < 1e-9  # the successor's ledger, rebuilt from Kafka
