"""Retries, back-off and timeouts on the whole stack, against the emulator's fault scenarios:
429 with Retry-After, 5xx storms, hangs. ``demo-retried`` retries each failed call twice;
``demo-hasty``'s provider gives each call 1 s (``timeout_s``)."""

from __future__ import annotations

import time

import pytest

from services.contracts.errors import ProviderError
from services.contracts.events import UsageRecorded, new_id

from .helpers import TopicTail

MSGS = [{"role": "user", "content": "again"}]


async def usage_of(tail: TopicTail, rid: str) -> UsageRecorded:
    recs = await tail.until(lambda rs: any(rid.encode() in r.value for r in rs))
    return UsageRecorded.model_validate_json(next(r.value for r in recs if rid.encode() in r.value))


@pytest.fixture
async def usage(stack_settings):  # type: ignore[no-untyped-def]
    async with TopicTail(stack_settings.bootstrap_servers, f"{stack_settings.topic_prefix}llm.usage") as tail:
        yield tail


async def test_a_429_with_retry_after_is_retried_after_the_wait(gw, usage):
    rid = new_id()
    t0 = time.monotonic()
    r = await gw.chat(
        model="demo-retried",
        messages=MSGS,
        request_id=rid,
        emulator_scenario=f"fail_first=1,status=429,retry_after_ms=600,key={rid}",
    )
    assert r.status == "ok" and r.attempts == 2 and not r.fallback_used
    assert time.monotonic() - t0 >= 0.6 and r.latency.total_ms >= 600
    assert (await usage_of(usage, rid)).attempts == 2


async def test_a_5xx_storm_is_retried_with_back_off(gw, usage):
    rid = new_id()
    r = await gw.chat(
        model="demo-retried",
        messages=MSGS,
        request_id=rid,
        emulator_scenario=f"fail_first=2,status=503,key={rid}",
    )
    assert r.status == "ok" and r.attempts == 3
    u = await usage_of(usage, rid)
    assert u.status == "ok" and u.attempts == 3 and not u.failed_attempts  # retries of one deployment


async def test_retries_run_out_and_the_request_may_allow_fewer(gw, usage):
    rid = new_id()
    with pytest.raises(ProviderError, match="HTTP 503"):
        await gw.chat(model="demo-retried", messages=MSGS, request_id=rid, emulator_scenario="status=503")
    assert (await usage_of(usage, rid)).attempts == 3
    rid = new_id()
    with pytest.raises(ProviderError, match="HTTP 503"):
        await gw.chat(
            model="demo-retried",
            messages=MSGS,
            request_id=rid,
            max_attempts=2,
            emulator_scenario=f"fail_first=2,status=503,key={rid}",
        )
    assert (await usage_of(usage, rid)).attempts == 2


async def test_a_retry_after_beyond_the_ceiling_falls_back_at_once(gw):
    rid = new_id()
    t0 = time.monotonic()
    r = await gw.chat(
        model="demo-retried",
        messages=MSGS,
        fallbacks=["demo-openai"],
        emulator_scenario=f"fail_first=1,status=429,retry_after_ms=60000,key={rid}",
    )
    assert r.status == "ok" and r.fallback_used and r.alias == "demo-openai" and r.attempts == 2
    assert time.monotonic() - t0 < 10  # nobody waited the minute asked for


async def test_a_hung_provider_times_out_and_falls_back_while_time_remains(gw):
    rid = new_id()
    t0 = time.monotonic()
    r = await gw.chat(
        model="demo-hasty",
        messages=MSGS,
        fallbacks=["demo-openai"],
        total_ms=20_000,
        emulator_scenario=f"hang_first=1,key={rid}",
    )
    assert r.status == "ok" and r.fallback_used and r.provider == "emulator-openai" and r.attempts == 2
    assert 1.0 <= time.monotonic() - t0 < 10  # the hasty provider's 1 s, then the fallback


async def test_ttft_ms_bounds_the_head_of_a_whole_answer(gw):
    rid = new_id()
    r = await gw.chat(
        model="demo-openai",
        messages=MSGS,
        fallbacks=["demo-anthropic"],
        ttft_ms=500,
        emulator_scenario=f"hang_first=1,key={rid}",
    )
    assert r.status == "ok" and r.fallback_used and r.provider == "emulator-anthropic" and r.attempts == 2
    assert r.latency.queue_ms is not None and r.latency.queue_ms >= 0
