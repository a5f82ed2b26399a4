"""The edge over plain HTTP on the whole stack: the native endpoint, auth, body limit,
request ids, the overhead header, keep-alive comments, client disconnects (observed as
cancel events on the control topic) and graceful shutdown."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest

from services.contracts.events import CancelRequested, new_id
from services.runtime.topics import Topics

from .helpers import TopicTail

AUTH = {"authorization": "Bearer sk-llmgw-demo"}
MSGS = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def http(edge_url):
    async with httpx.AsyncClient(base_url=edge_url, timeout=30) as client:
        yield client


@pytest.fixture
def topics(stack_settings) -> Topics:
    return Topics.load(stack_settings.topics_path, stack_settings.topic_prefix)


# --- native endpoint ------------------------------------------------------------------------------


async def test_native_chat(http):
    rid = f"native-{new_id()}"
    r = await http.post(
        "/v1/chat",
        headers=AUTH,
        json={
            "client_id": "billing-svc",
            "model": "demo-anthropic",
            "messages": MSGS,
            "metadata": {"request_id": rid},
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"id", "model", "provider", "usage", "message", "fallback_used"}
    assert (body["id"], body["model"], body["provider"]) == (rid, "demo-anthropic", "emulator-anthropic")
    assert body["fallback_used"] is False
    assert body["message"]["role"] == "assistant" and body["message"]["content"]
    u = body["usage"]
    assert u["completion_tokens"] == 8 and u["total_tokens"] == u["prompt_tokens"] + 8
    assert r.headers["x-request-id"] == rid and float(r.headers["x-llmgw-overhead-ms"]) >= 0


async def test_native_errors(http):
    body = {"client_id": "billing-svc", "model": "gpt-nonexistent", "messages": MSGS}
    r = await http.post("/v1/chat", headers=AUTH, json=body)
    assert r.status_code == 404
    assert set(r.json()["error"]) == {"type", "message"} and r.json()["error"]["type"] == "model_not_found"

    r = await http.post(
        "/v1/chat",
        headers={"authorization": "Bearer sk-llmgw-restricted"},
        json=body | {"model": "demo-ollama"},
    )
    assert r.status_code == 403 and r.json()["error"]["type"] == "model_not_approved"

    r = await http.post("/v1/chat", json=body)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


# --- auth, limits, headers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers", [{}, {"authorization": "Bearer sk-nope"}, {"authorization": "Token sk-llmgw-demo"}]
)
async def test_401_with_openai_error_body(http, headers):
    for method, path in (
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/demo-openai"),
    ):
        r = await http.request(method, path, headers=headers, json={"model": "demo-openai", "messages": MSGS})
        assert r.status_code == 401
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["code"] == "authentication_error"


async def test_body_over_limit_is_413(http):
    big = orjson.dumps(
        {"model": "demo-openai", "messages": [{"role": "user", "content": "x" * (9 * 1024 * 1024)}]}
    )
    r = await http.post(
        "/v1/chat/completions", headers=AUTH | {"content-type": "application/json"}, content=big
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large" and "limit" in r.json()["error"]["message"]
    r = await http.post("/v1/chat/completions", headers=AUTH, json={"model": "demo-openai", "messages": MSGS})
    assert r.status_code == 200  # the edge is fine afterwards


async def test_request_id_is_used_and_echoed(http):
    rid = f"caller-{new_id()}"
    r = await http.post(
        "/v1/chat/completions",
        headers=AUTH | {"x-request-id": rid},
        json={"model": "demo-openai", "messages": MSGS},
    )
    assert r.headers["x-request-id"] == rid and r.json()["id"] == f"chatcmpl-{rid}"
    r = await http.get("/v1/models", headers=AUTH)
    assert len(r.headers["x-request-id"]) >= 16  # generated when not given


async def test_overhead_header(http):
    r = await http.post("/v1/chat/completions", headers=AUTH, json={"model": "demo-openai", "messages": MSGS})
    overhead = float(r.headers["x-llmgw-overhead-ms"])
    assert 0 <= overhead < 5000
    body = {"model": "demo-openai", "messages": MSGS, "stream": True}
    async with http.stream("POST", "/v1/chat/completions", headers=AUTH, json=body) as s:
        assert 0 <= float(s.headers["x-llmgw-overhead-ms"]) < 5000
        await s.aread()


async def test_health_endpoints(http):
    assert (await http.get("/healthz")).status_code == 200
    assert (await http.get("/readyz")).status_code == 200


# --- streams: disconnects, keep-alive, shutdown ------------------------------------------------------


def slow_stream(rid: str, scenario: str) -> tuple[dict, dict]:
    body = {"model": "demo-openai", "messages": MSGS, "stream": True, "emulator_scenario": scenario}
    return body, AUTH | {"x-request-id": rid}


async def hang_up_after_first_chunk(edge_url: str, body: dict, headers: dict) -> None:
    """Open a stream on its own connection and close that connection once the first chunk arrived."""
    async with httpx.AsyncClient(base_url=edge_url, timeout=30) as http:
        async with http.stream("POST", "/v1/chat/completions", headers=headers, json=body) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    return


async def test_client_disconnect_mid_stream_publishes_cancel(edge_url, stack_settings, topics):
    rid = f"disc-{new_id()}"
    body, headers = slow_stream(rid, "tokens=200,chunk_delay_ms=50")
    async with TopicTail(stack_settings.bootstrap_servers, topics.control.name) as control:
        await hang_up_after_first_chunk(edge_url, body, headers)
        records = await control.until(lambda rs: any(x.key == rid.encode() for x in rs), timeout=15)
    cancel = CancelRequested.model_validate_json(next(x for x in records if x.key == rid.encode()).value)
    assert cancel.request_id == rid and cancel.tenant_id == "demo" and cancel.reason == "client_cancelled"


def _audited(rid: str, action: str):  # type: ignore[no-untyped-def]
    def cond(rs) -> bool:  # type: ignore[no-untyped-def]
        return any(
            orjson.loads(x.value).get("request_id") == rid and orjson.loads(x.value).get("action") == action
            for x in rs
        )

    return cond


async def test_disconnect_stops_the_provider_call(edge_url, stack_settings, topics):
    """The cancel reaches the executor: the request ends as ``cancelled`` in the audit trail."""
    rid = f"disc-{new_id()}"
    body, headers = slow_stream(rid, "tokens=400,chunk_delay_ms=50")
    async with TopicTail(stack_settings.bootstrap_servers, topics.audit.name) as audit:
        await hang_up_after_first_chunk(edge_url, body, headers)
        started = time.monotonic()
        await audit.until(_audited(rid, "cancelled"), timeout=15)
    assert time.monotonic() - started < 10  # well before the 20 s the answer would have taken


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/chat"])
async def test_hanging_up_on_a_non_streaming_request_cancels_it(edge_url, stack_settings, topics, path):
    """The client gives up on a 20 s answer once the executor runs it: the edge publishes the
    cancel (for the caller's tenant) and the provider call stops, well before the 20 s."""
    rid = f"hang-{new_id()}"
    body = {"model": "demo-openai", "messages": MSGS, "emulator_scenario": "tokens=400,chunk_delay_ms=50"}
    if path == "/v1/chat":
        body |= {"client_id": "billing-svc", "metadata": {"request_id": rid}}
    async with (
        TopicTail(stack_settings.bootstrap_servers, topics.audit.name) as audit,
        TopicTail(stack_settings.bootstrap_servers, topics.control.name) as control,
    ):
        async with httpx.AsyncClient(base_url=edge_url, timeout=30) as http:
            call = asyncio.create_task(http.post(path, headers=AUTH | {"x-request-id": rid}, json=body))
            await audit.until(_audited(rid, "started"), timeout=15)
            call.cancel()  # httpx closes the connection
            with pytest.raises(asyncio.CancelledError):
                await call
        hung_up = time.monotonic()
        records = await control.until(lambda rs: any(x.key == rid.encode() for x in rs), timeout=15)
        await audit.until(_audited(rid, "cancelled"), timeout=15)
    assert time.monotonic() - hung_up < 10
    cancel = CancelRequested.model_validate_json(next(x for x in records if x.key == rid.encode()).value)
    assert cancel.tenant_id == "demo" and cancel.reason == "client_cancelled"


async def test_keepalive_comments_while_waiting_for_the_first_token(http):
    """The stack's edge uses the default interval (10 s): a first token after 10.5 s."""
    body, headers = slow_stream(f"ka-{new_id()}", "ttfb_ms=10500,tokens=2")
    lines = []
    async with http.stream("POST", "/v1/chat/completions", headers=headers, json=body) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line:
                lines.append(line)
    assert lines[0] == ": keep-alive"
    assert lines[-1] == "data: [DONE]" and any(ln.startswith("data: {") for ln in lines)


async def test_streams_in_flight_finish_on_graceful_shutdown(edge_url, stack, http):
    """SIGTERM (``llmgw restart edge``) while a 2 s stream runs: the stream still completes."""
    body, headers = slow_stream(f"shut-{new_id()}", "tokens=40,chunk_delay_ms=50")
    lines = []
    async with http.stream("POST", "/v1/chat/completions", headers=headers, json=body) as r:
        restart = None
        async for line in r.aiter_lines():
            if line:
                lines.append(line)
            if restart is None and line.startswith("data: "):
                restart = asyncio.create_task(asyncio.to_thread(stack.restart, "edge"))
    assert lines[-1] == "data: [DONE]"
    text = "".join(
        orjson.loads(ln[6:])["choices"][0]["delta"].get("content") or ""
        for ln in lines
        if ln.startswith("data: {") and orjson.loads(ln[6:])["choices"]
    )
    assert len(text.split()) == 40
    await restart  # the edge is back (restart waits for /readyz)
    r = await http.post("/v1/chat/completions", headers=AUTH, json={"model": "demo-openai", "messages": MSGS})
    assert r.status_code == 200
