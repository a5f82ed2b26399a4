"""Routing choices on the whole stack: ``cheapest`` (demo-routed answers from gpt-emu-mini),
the fallback indicator at the edge (``x-llmgw-fallback``, native ``fallback_used``), and
``fastest`` rebuilt after a router restart, on a side stack (one router, one executor, the
session's emulator) whose catalog comes from an HTTP model registry."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import orjson
import pytest

from services.cli.stack import Stack
from services.client import GatewayClient
from services.contracts.events import UsageRecorded, new_id
from services.runtime.topics import Topics, apply_topics

from .helpers import TopicTail

AUTH = {"authorization": "Bearer sk-llmgw-demo"}
MSGS = [{"role": "user", "content": "hello"}]
SLOW, QUICK = "slow-emu@ttfb_ms=250", "quick-emu"
#: The side stack's catalog: only its model registry has this alias; the slow deployment is
#: first in configuration order, so a router without statistics tries it first.
CATALOG = {
    "models": {
        "e2e-fastest": {
            "routing": "fastest",
            "capabilities": ["chat", "stream"],
            "deployments": [
                {"provider": "emulator-openai", "model": SLOW},
                {"provider": "emulator-openai", "model": QUICK},
            ],
        }
    }
}


async def test_cheapest_answers_from_the_cheaper_deployment(gw, stack_settings):
    async with TopicTail(
        stack_settings.bootstrap_servers, f"{stack_settings.topic_prefix}llm.usage"
    ) as usage:
        r = await gw.chat(model="demo-routed", messages=MSGS)
        recs = await usage.until(lambda rs: any(r.request_id.encode() in x.value for x in rs))
    assert (r.alias, r.provider, r.model, r.fallback_used) == (
        "demo-routed",
        "emulator-openai",
        "gpt-emu-mini",
        False,
    )
    u = UsageRecorded.model_validate_json(next(x.value for x in recs if r.request_id.encode() in x.value))
    assert (u.alias, u.provider, u.model, u.fallback_used) == (
        "demo-routed",
        "emulator-openai",
        "gpt-emu-mini",
        False,
    )
    assert u.failed_attempts is None


async def test_the_usage_record_names_the_attempts_that_failed_before_a_fallback(gw, stack_settings):
    scenario = f"fail_first=1,status=500,key={new_id()}"
    async with TopicTail(
        stack_settings.bootstrap_servers, f"{stack_settings.topic_prefix}llm.usage"
    ) as usage:
        r = await gw.chat(
            model="demo-openai", messages=MSGS, fallbacks=["demo-anthropic"], emulator_scenario=scenario
        )
        recs = await usage.until(lambda rs: any(r.request_id.encode() in x.value for x in rs))
    u = UsageRecorded.model_validate_json(next(x.value for x in recs if r.request_id.encode() in x.value))
    assert (u.alias, u.provider, u.fallback_used) == ("demo-anthropic", "emulator-anthropic", True)
    assert [(f.alias, f.provider, f.model, f.error_code) for f in u.failed_attempts or ()] == [
        ("demo-openai", "emulator-openai", "gpt-emu", "provider_error")
    ]


async def test_fallback_reaches_http_callers(edge_url):
    body = {"model": "demo-openai", "messages": MSGS, "fallbacks": ["demo-anthropic"]}
    async with httpx.AsyncClient(base_url=edge_url, timeout=30) as http:
        r = await http.post("/v1/chat/completions", headers=AUTH, json=body)
        assert r.status_code == 200 and "x-llmgw-fallback" not in r.headers
        failing = {**body, "emulator_scenario": f"fail_first=1,status=500,key={new_id()}"}
        r = await http.post("/v1/chat/completions", headers=AUTH, json=failing)
        assert r.status_code == 200, r.text
        assert (
            r.headers["x-llmgw-fallback"]
            == "demo-openai/emulator-openai -> demo-anthropic/emulator-anthropic"
        )
        native = {"client_id": "e2e", **body}
        r = await http.post("/v1/chat", headers=AUTH, json=native)
        assert r.json()["fallback_used"] is False
        r = await http.post(
            "/v1/chat",
            headers=AUTH,
            json={**native, "emulator_scenario": f"fail_first=1,status=500,key={new_id()}"},
        )
        assert r.status_code == 200, r.text
        assert (r.json()["fallback_used"], r.json()["model"], r.json()["provider"]) == (
            True,
            "demo-anthropic",
            "emulator-anthropic",
        )


async def test_a_streams_fallback_is_in_its_first_headers(edge_url):
    body = {"model": "demo-openai", "messages": MSGS, "fallbacks": ["demo-anthropic"], "stream": True}
    async with httpx.AsyncClient(base_url=edge_url, timeout=30) as http:
        async with http.stream("POST", "/v1/chat/completions", headers=AUTH, json=body) as r:
            assert r.status_code == 200 and "x-llmgw-fallback" not in r.headers
            await r.aread()
        failing = {**body, "emulator_scenario": f"fail_first=1,status=500,key={new_id()}"}
        async with http.stream("POST", "/v1/chat/completions", headers=AUTH, json=failing) as r:
            assert r.status_code == 200
            assert (
                r.headers["x-llmgw-fallback"]
                == "demo-openai/emulator-openai -> demo-anthropic/emulator-anthropic"
            )
            text = (await r.aread()).decode()
        assert text.rstrip().endswith("data: [DONE]") and '"content":"tok0' in text.replace(" ", "")


# --- fastest, rebuilt after a restart ----------------------------------------------------------


@pytest.fixture(scope="module")
def registry_url() -> Iterator[str]:
    body = orjson.dumps(CATALOG)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200 if self.path == "/models" else 404)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
async def side(stack, stack_settings, emulator_url, registry_url, tmp_path_factory) -> AsyncIterator[Stack]:
    state = tmp_path_factory.mktemp("side")
    config = state / "gateway.yaml"
    config.write_text(
        stack_settings.config_path.read_text()
        + f"\nmodel_registry: {{url: '{registry_url}', cache_ttl_s: 60}}\n"
    )
    settings = dataclasses.replace(
        stack_settings, topic_prefix=f"side{uuid.uuid4().hex[:6]}.", state_dir=state, config_path=config
    )
    await apply_topics(settings.bootstrap_servers, Topics.load(settings.topics_path, settings.topic_prefix))
    s = Stack(settings)
    comps = [c for c in s.plan(routers=1, executors=1, edge=False) if c.name in ("router-0", "executor-0")]
    try:
        for c in comps:
            c.env["LLMGW_EMULATOR_URL"] = emulator_url  # the session's emulator
            s._start(c)
            s.save(comps)
        for c in comps:
            await asyncio.to_thread(s._wait, c, 90)
        yield s
    finally:
        await asyncio.to_thread(s.down)


@pytest.fixture(scope="module")
async def side_gw(side) -> AsyncIterator[GatewayClient]:
    s = side.settings
    async with GatewayClient(
        s.bootstrap_servers, "demo", "e2e-user", topic_prefix=s.topic_prefix, timeout_s=30
    ) as client:
        yield client


async def answered_by(gw: GatewayClient) -> str:
    """The upstream model that served one streamed request (named on its first chunk)."""
    first = None
    async for chunk in gw.stream_chat(model="e2e-fastest", messages=MSGS):
        first = first or chunk.model
    assert first is not None
    return first


async def averages(gw: GatewayClient) -> dict[str, float | None]:
    [m] = await gw.list_models(model="e2e-fastest")
    return {d.model: d.ttft_ms_avg for d in m.deployments}


async def test_fastest_is_rebuilt_after_a_router_restart(side, side_gw):
    # no statistics yet: configuration order, then the unmeasured one is explored; until the
    # router has seen a usage record of each (it reads llm.usage itself, in batches up to a
    # second apart), keep asking, for at most 60 s
    served = []
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        served.append(await answered_by(side_gw))
        avg = await averages(side_gw)
        if None not in avg.values() or asyncio.get_running_loop().time() > deadline:
            break
    assert served[0] == SLOW and QUICK in served
    assert avg[QUICK] < avg[SLOW] and avg[SLOW] >= 200
    assert await answered_by(side_gw) == QUICK

    await asyncio.to_thread(side.restart, "router-0")

    # ready only after replaying llm.usage: the same averages, so the quick one first at once
    after = await averages(side_gw)
    assert None not in after.values() and after[QUICK] < after[SLOW] and after[SLOW] >= 200
    assert await answered_by(side_gw) == QUICK
