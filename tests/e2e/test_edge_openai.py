"""The official ``openai`` SDK (sync and async) against the edge, over the whole stack; raw
bodies and stream chunks are validated against OpenAI's published OpenAPI document."""

from __future__ import annotations

import httpx
import openai
import orjson
import pytest

from services.runtime.config import load_config
from services.runtime.settings import ROOT
from tests.unit.edge.openai_spec import check

DEMO_KEY = "sk-llmgw-demo"
RESTRICTED_KEY = "sk-llmgw-restricted"
MSGS = [{"role": "user", "content": "tell me about kafka partitions"}]
ALIASES = ["demo-openai", "demo-anthropic", "demo-ollama"]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


@pytest.fixture(scope="module")
def client(edge_url) -> openai.OpenAI:
    return openai.OpenAI(api_key=DEMO_KEY, base_url=f"{edge_url}/v1", max_retries=0, timeout=30)


@pytest.fixture
def aclient(edge_url) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=DEMO_KEY, base_url=f"{edge_url}/v1", max_retries=0, timeout=30)


def sse_chunks(lines: list[str]) -> tuple[list[dict], list[str]]:
    """(chunk objects, raw data payloads) of an SSE body."""
    data = [ln[6:] for ln in lines if ln.startswith("data: ")]
    return [orjson.loads(d) for d in data if d != "[DONE]"], data


# --- chat completions ---------------------------------------------------------------------------


def test_sync_chat_matches_spec(client):
    raw = client.chat.completions.with_raw_response.create(model="demo-openai", messages=MSGS, max_tokens=50)
    check("CreateChatCompletionResponse", raw.http_response.json())
    completion = raw.parse()
    assert completion.object == "chat.completion" and completion.model == "demo-openai"
    assert completion.choices[0].message.role == "assistant" and completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    u = completion.usage
    assert u.completion_tokens == 8 and u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert completion.id == f"chatcmpl-{raw.headers['x-request-id']}"
    assert float(raw.headers["x-llmgw-overhead-ms"]) >= 0


@pytest.mark.parametrize("alias", ALIASES)
async def test_async_chat_each_wire_format(aclient, alias):
    completion = await aclient.chat.completions.create(model=alias, messages=MSGS)
    assert completion.model == alias and completion.choices[0].message.content
    assert completion.usage.completion_tokens == 8


def test_sync_stream_with_usage(client):
    stream = client.chat.completions.create(
        model="demo-openai", messages=MSGS, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    assert all(c.usage is None for c in chunks[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1


@pytest.mark.parametrize("alias", ALIASES)
async def test_async_stream_each_wire_format(aclient, alias):
    stream = await aclient.chat.completions.create(
        model=alias, messages=MSGS, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8


async def test_stream_without_usage_option(aclient):
    stream = await aclient.chat.completions.create(model="demo-openai", messages=MSGS, stream=True)
    chunks = [c async for c in stream]
    assert all(c.choices for c in chunks) and chunks[-1].choices[0].finish_reason == "stop"


def test_raw_stream_chunks_match_spec(edge_url):
    body = {
        "model": "demo-openai",
        "messages": MSGS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream(
        "POST",
        f"{edge_url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {DEMO_KEY}"},
        timeout=30,
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert float(r.headers["x-llmgw-overhead-ms"]) >= 0
        lines = list(r.iter_lines())
    chunks, data = sse_chunks(lines)
    assert data[-1] == "[DONE]"
    for c in chunks:
        check("CreateChatCompletionStreamResponse", c)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


def test_tool_calls(client):
    raw = client.chat.completions.with_raw_response.create(
        model="demo-openai",
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=TOOLS,
        tool_choice="required",
    )
    check("CreateChatCompletionResponse", raw.http_response.json())
    choice = raw.parse().choices[0]
    assert (
        choice.finish_reason == "tool_calls" and choice.message.tool_calls[0].function.name == "get_weather"
    )
    assert "city" in orjson.loads(choice.message.tool_calls[0].function.arguments)


async def test_tool_call_stream(aclient):
    stream = await aclient.chat.completions.create(
        model="demo-openai",
        messages=[{"role": "user", "content": "weather?"}],
        tools=TOOLS,
        tool_choice="required",
        stream=True,
    )
    calls: dict[int, dict] = {}
    finish = None
    async for c in stream:
        for tc in c.choices[0].delta.tool_calls or []:
            cur = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
            cur["id"] = cur["id"] or tc.id
            cur["name"] = cur["name"] or (tc.function.name if tc.function else None)
            cur["arguments"] += (tc.function.arguments or "") if tc.function else ""
        finish = c.choices[0].finish_reason or finish
    assert finish == "tool_calls" and calls[0]["name"] == "get_weather" and calls[0]["id"]
    assert "city" in orjson.loads(calls[0]["arguments"])


def test_unknown_fields_are_passed_on_not_rejected(client):
    completion = client.chat.completions.create(
        model="demo-openai",
        messages=MSGS,
        user="end-user-1",
        logit_bias={"50256": -100},
        extra_body={"some_vendor_field": {"x": 1}, "emulator_scenario": "tokens=3"},
    )
    # the emulator read the passed-through field: proof that unknown fields reach the provider
    assert completion.usage.completion_tokens == 3


# --- errors ------------------------------------------------------------------------------------------


def test_unknown_key_is_authentication_error(edge_url):
    bad = openai.OpenAI(api_key="sk-not-a-key", base_url=f"{edge_url}/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as exc:
        bad.chat.completions.create(model="demo-openai", messages=MSGS)
    assert exc.value.status_code == 401 and exc.value.code == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="gpt-nonexistent", messages=MSGS)
    assert exc.value.code == "model_not_found" and "gpt-nonexistent" in exc.value.message


async def test_unknown_model_stream_is_not_found_before_any_chunk(aclient):
    with pytest.raises(openai.NotFoundError):
        await aclient.chat.completions.create(model="gpt-nonexistent", messages=MSGS, stream=True)


def test_restricted_tenant_is_permission_denied(edge_url):
    restricted = openai.OpenAI(api_key=RESTRICTED_KEY, base_url=f"{edge_url}/v1", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as exc:
        restricted.chat.completions.create(model="demo-anthropic", messages=MSGS)
    assert exc.value.code == "model_not_approved"
    assert restricted.chat.completions.create(model="demo-openai", messages=MSGS).choices[0].message.content


def test_max_tokens_over_model_limit_is_bad_request(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="demo-ollama", messages=MSGS, max_tokens=10**6)
    assert exc.value.code == "validation_error" and exc.value.param == "max_tokens"


def test_invalid_param_is_bad_request_naming_it(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="demo-openai", messages=MSGS, temperature=7)
    assert exc.value.param == "temperature"


def test_upstream_error_is_server_error(client):
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(
            model="demo-openai", messages=MSGS, extra_body={"emulator_scenario": "status=429"}
        )
    # an upstream 429 is a provider error (502): the gateway's own rate limits are 429 (unit-tested)
    assert exc.value.status_code == 502 and exc.value.code == "provider_error" and "429" in exc.value.message


# --- models ----------------------------------------------------------------------------------------


def test_models_list_and_retrieve(client, edge_url):
    raw = client.models.with_raw_response.list()
    check("ListModelsResponse", raw.http_response.json())
    ids = [m.id for m in raw.parse()]
    assert {"demo-openai", "demo-anthropic", "demo-ollama"} <= set(ids)
    data = {m["id"]: m for m in raw.http_response.json()["data"]}
    assert (
        data["demo-anthropic"]["context_window"] == 200000
        and data["demo-anthropic"]["max_output_tokens"] == 8192
    )
    assert (
        data["demo-anthropic"]["pricing"]["output_per_mtok"] == 15.0
        and "tools" in data["demo-anthropic"]["capabilities"]
    )

    raw = client.models.with_raw_response.retrieve("demo-openai")
    check("Model", raw.http_response.json())
    assert raw.parse().id == "demo-openai"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-nonexistent")

    restricted = openai.OpenAI(api_key=RESTRICTED_KEY, base_url=f"{edge_url}/v1", max_retries=0)
    allowed = load_config(ROOT / "config" / "demo.yaml", env={}).tenants["restricted"].allowed_models
    assert [m.id for m in restricted.models.list()] == sorted(allowed) and "demo-anthropic" not in allowed
    with pytest.raises(openai.NotFoundError):
        restricted.models.retrieve("demo-anthropic")
