"""``/v1/models`` is the router's ``models.list`` answer in OpenAI's shape; the fallback
indicator reaches HTTP callers (``x-llmgw-fallback`` on the OpenAI routes, sync and streamed;
``fallback_used`` on ``/v1/chat``)."""

from __future__ import annotations

import orjson

from services.contracts.events import ModelFilter, ModelsListRequested
from services.edge.api.models import model_object
from services.router.discovery import models_result

from .conftest import AUTH, AsgiCall, chunks_for, ok_result
from .openai_spec import check

CHAT = {
    "model": "demo-openai",
    "messages": [{"role": "user", "content": "hi"}],
    "fallbacks": ["demo-anthropic"],
}
FROM_TO = "demo-openai/emulator-openai -> demo-anthropic/emulator-anthropic"


def fell_back(req):
    return ok_result(req).model_copy(
        update={
            "alias": "demo-anthropic",
            "provider": "emulator-anthropic",
            "model": "claude-emu",
            "fallback_used": True,
            "fallback_from": "demo-openai/emulator-openai",
        }
    )


async def test_models_are_the_kafka_answer_as_openai_objects(http, app, demo_config):
    r = await http.get("/v1/models", headers=AUTH)
    assert r.status_code == 200
    check("ListModelsResponse", r.json())
    answer = models_result(demo_config, ModelsListRequested(request_id="x", tenant_id="demo")).output
    assert r.json()["data"] == [model_object(m, app.edge.created) for m in answer.models]

    r = await http.get("/v1/models/demo-routed", headers=AUTH)
    m = r.json()
    check("Model", m)
    assert (m["object"], m["owned_by"], m["routing"], m["usable"]) == ("model", "llmgw", "cheapest", True)
    assert [(d["model"], d["pricing"]["input_per_mtok"], d["usable"]) for d in m["deployments"]] == [
        ("gpt-emu", 0.15, True),
        ("gpt-emu-mini", 0.05, True),
    ]
    embed = models_result(
        demo_config,
        ModelsListRequested(request_id="y", tenant_id="demo", filter=ModelFilter(model="demo-embed")),
    ).output
    assert (await http.get("/v1/models/demo-embed", headers=AUTH)).json() == model_object(
        embed.models[0], app.edge.created
    )
    assert embed.models[0].operations == ["embed"]


async def test_sync_fallback_header_names_first_planned_and_answering_deployments(http, pipeline):
    r = await http.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 200 and "x-llmgw-fallback" not in r.headers
    pipeline.answer = fell_back
    r = await http.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 200 and r.headers["x-llmgw-fallback"] == FROM_TO
    check("CreateChatCompletionResponse", r.json())
    assert r.json()["model"] == "demo-anthropic"


async def test_native_answer_says_fallback_used(http, pipeline):
    body = {"client_id": "svc", "model": "demo-openai", "messages": CHAT["messages"]}
    assert (await http.post("/v1/chat", json=body, headers=AUTH)).json()["fallback_used"] is False
    pipeline.answer = fell_back
    r = await http.post("/v1/chat", json=body, headers=AUTH)
    assert r.json()["fallback_used"] is True
    assert (r.json()["model"], r.json()["provider"]) == ("demo-anthropic", "emulator-anthropic")


async def test_stream_fallback_header_comes_from_the_first_chunk(app, pipeline):
    async def stream(first_update):
        def chunks(req):
            out = chunks_for(req, ["hel", "lo"])
            return [out[0].model_copy(update=first_update), *out[1:]]

        pipeline.chunks = chunks
        c = AsgiCall(app, "POST", "/v1/chat/completions", orjson.dumps({**CHAT, "stream": True}))
        await c.start()
        assert c.status == 200 and c.data.endswith(b"data: [DONE]\n\n")
        return c.headers

    headers = await stream({})
    assert b"x-llmgw-fallback" not in headers and b"x-llmgw-overhead-ms" in headers
    headers = await stream({"fallback": FROM_TO, "provider": "emulator-anthropic"})
    assert headers[b"x-llmgw-fallback"] == FROM_TO.encode() and b"x-llmgw-overhead-ms" in headers
