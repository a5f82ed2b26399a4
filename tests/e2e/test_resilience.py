"""Failures end to end: provider errors, fallback, timeouts, mid-stream disconnects, cancels,
and the chunk rate. The emulator's behaviour is chosen per request with the non-OpenAI
field ``emulator_scenario``, which the gateway passes through to the provider untouched."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from services.contracts.errors import GatewayTimeout, ProviderError, ProviderTimeout
from services.contracts.events import UsageRecorded, new_id

from .helpers import TopicTail

MSGS = [{"role": "user", "content": "hello"}]


async def test_provider_error_keeps_upstream_status_and_message(gw):
    with pytest.raises(ProviderError) as exc:
        await gw.chat(model="demo-openai", messages=MSGS, emulator_scenario="status=503")
    assert "HTTP 503" in exc.value.message and exc.value.details["upstream_status"] == 503


async def test_fallback_to_the_next_alias(gw):
    r = await gw.chat(
        model="demo-openai",
        messages=MSGS,
        fallbacks=["demo-anthropic"],
        emulator_scenario=f"fail_first=1,status=500,key={new_id()}",
    )
    assert r.status == "ok" and r.fallback_used and r.provider == "emulator-anthropic"


async def test_fallback_exhausted_reports_the_last_error(gw):
    with pytest.raises(ProviderError, match="HTTP 429"):
        await gw.chat(
            model="demo-openai", messages=MSGS, fallbacks=["demo-ollama"], emulator_scenario="status=429"
        )


async def test_ttft_timeout(gw):
    with pytest.raises(ProviderTimeout, match="no token within ttft_ms=300"):
        async for _ in gw.stream_chat(
            model="demo-anthropic", messages=MSGS, ttft_ms=300, emulator_scenario="ttfb_ms=3000"
        ):
            pass


async def test_total_timeout(gw):
    with pytest.raises(ProviderTimeout, match="total_ms=400"):
        await gw.chat(model="demo-openai", messages=MSGS, total_ms=400, emulator_scenario="hang=1")


async def test_client_timeout_raises_and_cancels_the_provider_call(gw, stack_settings):
    async with TopicTail(
        stack_settings.bootstrap_servers, f"{stack_settings.topic_prefix}llm.usage"
    ) as usage:
        rid = new_id()
        with pytest.raises(GatewayTimeout, match=f"no answer to request {rid} within 1s"):
            await gw.chat(
                model="demo-openai", messages=MSGS, request_id=rid, timeout_s=1, emulator_scenario="hang=1"
            )
        recs = await usage.until(lambda rs: any(rid.encode() in r.value for r in rs))
    u = UsageRecorded.model_validate_json(next(r.value for r in recs if rid.encode() in r.value))
    assert u.status == "cancelled" and u.error_code == "cancelled"


async def test_a_call_the_caller_cancels_cancels_the_provider_call(gw, stack_settings):
    """The caller's task is cancelled (it gave up): the SDK publishes the cancel, the provider
    call stops and usage records the request as cancelled."""
    async with (
        TopicTail(stack_settings.bootstrap_servers, f"{stack_settings.topic_prefix}llm.audit") as audit,
        TopicTail(stack_settings.bootstrap_servers, f"{stack_settings.topic_prefix}llm.usage") as usage,
    ):
        rid = new_id()
        call = asyncio.create_task(
            gw.chat(model="demo-openai", messages=MSGS, request_id=rid, emulator_scenario="hang=1")
        )
        await audit.until(lambda rs: any(rid.encode() in r.value and b'"started"' in r.value for r in rs))
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        recs = await usage.until(lambda rs: any(rid.encode() in r.value for r in rs))
    u = UsageRecorded.model_validate_json(next(r.value for r in recs if rid.encode() in r.value))
    assert u.status == "cancelled" and u.error_code == "cancelled"


async def test_stream_stopped_by_the_caller_is_cancelled(gw, stack_settings):
    async with TopicTail(
        stack_settings.bootstrap_servers, f"{stack_settings.topic_prefix}llm.audit"
    ) as audit:
        rid = new_id()
        got = 0
        stream = gw.stream_chat(
            model="demo-anthropic",
            messages=MSGS,
            request_id=rid,
            emulator_scenario="tokens=500,chunk_delay_ms=20",
        )
        async for _ in stream:
            got += 1
            if got == 2:
                break
        await stream.aclose()
        recs = await audit.until(
            lambda rs: any(rid.encode() in r.value and b'"cancelled"' in r.value for r in rs)
        )
    actions = [r.value for r in recs if rid.encode() in r.value]
    assert any(b'"action":"started"' in a for a in actions)


async def test_mid_stream_disconnect_is_a_provider_error_after_the_chunks(gw):
    seen = []
    with pytest.raises(ProviderError):
        async for c in gw.stream_chat(
            model="demo-openai",
            messages=MSGS,
            emulator_scenario="tokens=20,disconnect_after=3,chunk_delay_ms=30",
        ):
            seen.append(c)
    assert seen and "".join(c.delta.content or "" for c in seen).strip()
    assert not any(c.final for c in seen)


async def test_chunk_events_at_most_one_per_window_after_the_first(gw):
    chunks = [
        c
        async for c in gw.stream_chat(
            model="demo-openai", messages=MSGS, emulator_scenario="tokens=100,chunk_delay_ms=2"
        )
    ]
    assert "".join(c.delta.content or "" for c in chunks).count("tok") == 100
    times = [c.occurred_at for c in chunks]
    gaps = [(b - a) / dt.timedelta(milliseconds=1) for a, b in zip(times[1:-1], times[2:-1], strict=False)]
    assert all(g >= 19.0 for g in gaps), gaps
    assert len(chunks) < 100 / 3  # ~200 ms of tokens: far fewer events than tokens
