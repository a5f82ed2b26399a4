"""Rate limits over the whole stack (two routers): demo tenant ``limited`` (5 requests and 2,000
tokens a minute, 3 a minute per user). The tests run in order inside one minute of the tenant's
window: the answers' numbers, exactly the limit admitted under concurrent load, the counters
kept by a SIGKILLed owner's successor, and the refusals on every route."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import openai
import orjson
import pytest

from services.cli.stack import Stack
from services.client import GatewayClient
from services.contracts.errors import RateLimited
from services.contracts.events import ResultProduced

from .helpers import TopicTail
from .owners import kill_owner

KEY = "sk-llmgw-limited"
AUTH = {"authorization": f"Bearer {KEY}"}
MSGS = [{"role": "user", "content": "hi"}]
BODY = {"model": "demo-openai", "messages": MSGS, "max_tokens": 8}
STARTED: list[float] = []  # when the tenant's first request of this module was admitted


@pytest.fixture(scope="module")
async def limited(stack: Stack, stack_settings) -> AsyncIterator[GatewayClient]:
    async with GatewayClient(
        stack_settings.bootstrap_servers,
        "limited",
        None,
        topic_prefix=stack_settings.topic_prefix,
        timeout_s=90,
    ) as client:
        yield client


@pytest.fixture(scope="module")
def killed(stack: Stack) -> AsyncIterator[list[str]]:
    """Routers killed by the tests, started again once the module is done."""
    names: list[str] = []
    yield names  # type: ignore[misc]
    for name in names:
        stack.restart(name)


def headers_of(r: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in r.headers.items() if k.startswith("x-ratelimit") or k.startswith("retry-after")}


async def test_whole_answers_and_streams_carry_the_binding_numbers(edge_url):
    async with httpx.AsyncClient(base_url=edge_url, timeout=60) as http:
        STARTED.append(time.time())
        r = await http.post("/v1/chat/completions", headers=AUTH, json=BODY)
        assert r.status_code == 200, r.text
        h = headers_of(r)
        # limited-user: 3 a minute binds requests (2 left); the tenant's 2,000 tokens bind tokens
        assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("3", "2")
        assert h["x-ratelimit-reset-requests"] == "60s"
        assert (
            h["x-ratelimit-limit-tokens"] == "2000" and 1900 < int(h["x-ratelimit-remaining-tokens"]) < 2000
        )
        async with http.stream(
            "POST", "/v1/chat/completions", headers=AUTH, json=BODY | {"stream": True}
        ) as s:
            assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
            assert s.headers["x-ratelimit-remaining-requests"] == "1"  # in the head, before any SSE byte
            assert 0 < float(s.headers["x-ratelimit-reset-requests"].rstrip("s")) <= 60
            body = await s.aread()
        assert body.endswith(b"data: [DONE]\n\n")


async def test_exactly_the_limit_is_admitted_and_a_killed_owners_successor_keeps_the_counters(
    limited, stack, stack_settings, killed
):
    """Two of the tenant's 5 are used: of 12 requests at once from four users (3 each, within
    their own limit), exactly 3 are admitted. Then the router owning the tenant's partition is
    SIGKILLed: its successor rebuilds the window from Kafka and refuses the next one too."""
    calls = [
        limited.chat(model="demo-openai", messages=MSGS, user_id=f"u{i % 4}", max_tokens=8) for i in range(12)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    ok = [r for r in results if isinstance(r, ResultProduced)]
    refused = [r for r in results if isinstance(r, RateLimited)]
    assert (len(ok), len(refused)) == (3, 9), results
    assert all(r.ratelimit is not None and r.ratelimit.limit_tokens == 2000 for r in ok)
    assert min(r.ratelimit.remaining_requests for r in ok) == 0  # type: ignore[union-attr]
    assert {e.details["scope"] for e in refused} == {"tenant limited"}
    assert all(0 < e.details["retry_after_s"] <= 60 for e in refused)

    killed.append(await kill_owner(stack, stack_settings, "limited"))
    with pytest.raises(RateLimited) as exc:  # answered by the successor, once it owns the partition
        await limited.chat(
            model="demo-openai", messages=MSGS, user_id="after-kill", max_tokens=8, timeout_s=90
        )
    elapsed = time.time() - STARTED[0]
    assert elapsed < 60, "the module took longer than the window: the check above proves nothing"
    assert exc.value.details["scope"] == "tenant limited"
    assert exc.value.details["retry_after_s"] <= 60 - elapsed + 1


async def test_refusals_are_429_with_retry_after_on_every_route(edge_url, stack_settings):
    async with (
        httpx.AsyncClient(base_url=edge_url, timeout=90) as http,
        TopicTail(stack_settings.bootstrap_servers, f"{stack_settings.topic_prefix}llm.audit") as audit,
    ):
        for _ in range(6):  # the window is full from the tests above; if not, fill it
            r = await http.post(
                "/v1/chat/completions", headers=AUTH | {"x-request-id": f"rl-{time.time_ns()}"}, json=BODY
            )
            if r.status_code == 429:
                break
        assert r.status_code == 429
        h = headers_of(r)
        assert 1 <= int(h["retry-after"]) <= 60 and int(h["retry-after-ms"]) <= int(h["retry-after"]) * 1000
        assert h["x-ratelimit-remaining-requests"] == "0"
        err = r.json()["error"]
        assert (err["code"], err["type"]) == ("rate_limited", "rate_limit_error") and "retry in" in err[
            "message"
        ]
        rid = r.headers["x-request-id"]
        await audit.until(
            lambda rs: any(
                orjson.loads(x.value).get("request_id") == rid
                and orjson.loads(x.value)["action"] == "rate_limited"
                for x in rs
            )
        )

        async with http.stream(
            "POST", "/v1/chat/completions", headers=AUTH, json=BODY | {"stream": True}
        ) as s:
            assert s.status_code == 429 and s.headers["retry-after"]  # not a 200 stream
            assert orjson.loads(await s.aread())["error"]["code"] == "rate_limited"

        r = await http.post("/v1/chat", headers=AUTH, json={"client_id": "svc-e2e", **BODY})
        assert r.status_code == 429 and r.headers["retry-after"]
        err = r.json()["error"]
        assert err["type"] == "rate_limit_exceeded" and "client_id svc-e2e" in err["message"]

    client = openai.AsyncOpenAI(api_key=KEY, base_url=f"{edge_url}/v1", max_retries=0, timeout=60)
    with pytest.raises(openai.RateLimitError) as exc:
        await client.chat.completions.create(**BODY)
    assert exc.value.response.headers["retry-after"]
