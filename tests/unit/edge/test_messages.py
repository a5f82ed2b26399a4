"""``/v1/messages`` and ``/v1/messages/count_tokens`` on a fake pipeline: the Anthropic body's
mapping to the chat request, the answer's mapping back, errors in Anthropic's shape, and the
official ``anthropic`` SDK in process (``messages.create``, ``messages.stream`` and its
accumulator, tool use, its exception classes)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2
import orjson
import pytest
from anthropic.types import Message as AnthropicMessage

from services.contracts.errors import (
    BudgetExceeded,
    ModelNotApproved,
    ModelNotFound,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    StreamInterrupted,
    ValidationError,
)
from services.contracts.events import (
    AssistantMessage,
    ChatRequested,
    ChunkEmitted,
    Delta,
    ResultProduced,
    ToolCall,
    ToolCallDelta,
    ToolCallFunction,
    Usage,
)
from services.edge.api.anthropic_answer import message_json
from services.edge.api.anthropic_errors import status_and_type
from services.edge.api.anthropic_tokens import estimate_tokens
from services.edge.api.anthropic_wire import parse_messages
from services.edge.app import create_app
from services.edge.errors import HTTPError

from .conftest import DEMO_KEY, RESTRICTED_KEY, AsgiCall, chunks_for, ok_result

KEY = {"x-api-key": DEMO_KEY, "anthropic-version": "2023-06-01"}
BODY = {"model": "demo-openai", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


@pytest.fixture
async def sdk(app) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://edge") as hc:
        yield anthropic.AsyncAnthropic(
            api_key=DEMO_KEY, base_url="http://edge", http_client=hc, max_retries=0
        )


def tool_result(req: ChatRequested) -> ResultProduced:
    r = ok_result(req, text="")
    r.message = AssistantMessage(
        content=None,
        tool_calls=[
            ToolCall(id="call_1", function=ToolCallFunction(name="get_weather", arguments='{"city":"Paris"}'))
        ],
    )
    r.finish_reason = "tool_calls"
    return r


def tool_chunks(req: ChatRequested) -> list[ChunkEmitted]:
    ids = {"request_id": req.request_id, "tenant_id": req.tenant_id}
    return [
        ChunkEmitted(**ids, seq=0, delta=Delta(role="assistant", content="Checking. ")),
        ChunkEmitted(
            **ids,
            seq=1,
            delta=Delta(
                tool_calls=[ToolCallDelta(index=0, id="call_1", name="get_weather", arguments='{"ci')]
            ),
        ),
        ChunkEmitted(
            **ids, seq=2, delta=Delta(tool_calls=[ToolCallDelta(index=0, arguments='ty": "Paris"}')])
        ),
        ChunkEmitted(
            **ids,
            seq=3,
            final=True,
            finish_reason="tool_calls",
            usage=Usage(prompt_tokens=50, completion_tokens=12, total_tokens=62, cached_tokens=20),
        ),
    ]


# --- request mapping ------------------------------------------------------------------------------


def test_system_and_plain_messages():
    call = parse_messages(
        {
            **BODY,
            "system": [
                {"type": "text", "text": "Be brief."},
                {"type": "text", "text": "Be kind.", "cache_control": {"type": "ephemeral"}},
            ],
            "messages": [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}],
                },
                {"role": "user", "content": [{"type": "text", "text": "again"}]},
            ],
        }
    )
    assert call.messages == [
        {"role": "system", "content": "Be brief.\n\nBe kind."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "again"},
    ]
    assert parse_messages({**BODY, "system": "S"}).messages[0] == {"role": "system", "content": "S"}


def test_media_blocks_become_openai_parts():
    blocks = [
        {"type": "text", "text": "what is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://img.example/a.png"}},
        {
            "type": "document",
            "title": "spec.pdf",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
        },
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain words"}},
        {"type": "document", "source": {"type": "url", "url": "https://docs.example/a.pdf"}},
        {"type": "document", "source": {"type": "file", "file_id": "file-abc"}},
        {
            "type": "document",
            "title": "notes",
            "source": {"type": "content", "content": [{"type": "text", "text": "n1"}]},
        },
    ]
    [msg] = parse_messages({**BODY, "messages": [{"role": "user", "content": blocks}]}).messages
    assert msg["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://img.example/a.png"}},
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "spec.pdf"},
        },
        {
            "type": "file",
            "file": {"file_data": "data:text/plain;base64,cGxhaW4gd29yZHM=", "filename": "document.txt"},
        },
        {"type": "file", "file": {"url": "https://docs.example/a.pdf"}},
        {"type": "file", "file": {"file_id": "file-abc"}},
        {"type": "text", "text": "notes\nn1"},
    ]


def test_tool_use_and_tool_results_become_tool_calls_and_tool_messages():
    call = parse_messages(
        {
            **BODY,
            "messages": [
                {"role": "user", "content": "weather in Paris and the time?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "...", "signature": "s"},
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                        {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": [{"type": "text", "text": "sunny"}],
                        },
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_2",
                            "is_error": True,
                            "content": [
                                {"type": "text", "text": "a clock:"},
                                {
                                    "type": "image",
                                    "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                                },
                            ],
                        },
                        {"type": "text", "text": "thanks"},
                    ],
                },
            ],
        }
    )
    assert call.messages[1:] == [
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {"id": "toolu_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "a clock:"},
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}],
        },
        {"role": "user", "content": "thanks"},
    ]
    only_tools = parse_messages(
        {
            **BODY,
            "messages": [
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}
            ],
        }
    )
    assert only_tools.messages[0]["content"] is None


def test_parameters_tools_and_choice():
    call = parse_messages(
        {
            **BODY,
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 40,
            "stop_sequences": ["\n\nHuman:"],
            "stream": True,
            "tools": [WEATHER],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "metadata": {"user_id": "end-user-7"},
            "emulator_scenario": "tool=1",
            "fallbacks": ["demo-anthropic"],
            "tenant_id": "someone-else",
        }
    )
    assert call.stream and call.model == "demo-openai"
    assert call.fields == {
        "max_tokens": 64,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["\n\nHuman:"],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "The weather in a city.",
                    "parameters": WEATHER["input_schema"],
                },
            }
        ],
        "tool_choice": "required",
        "metadata": {"user_id": "end-user-7"},
        "fallbacks": ["demo-anthropic"],
    }
    assert call.extra == {"top_k": 40, "emulator_scenario": "tool=1", "parallel_tool_calls": False}


@pytest.mark.parametrize(
    ("choice", "mapped"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
def test_tool_choice(choice, mapped):
    assert parse_messages({**BODY, "tools": [WEATHER], "tool_choice": choice}).fields["tool_choice"] == mapped


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"model": ""}, "model"),
        ({"messages": []}, "messages"),
        ({"temperature": 1.5}, "temperature"),
        ({"stop_sequences": "x"}, "stop_sequences"),
        ({"stream": "yes"}, "stream"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "audio", "data": "x"}]}]},
            "messages.0.content.0.type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}],
                    }
                ]
            },
            "messages.0.content.0.source.media_type",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
            "messages.0.content.0.tool_use_id",
        ),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
        ({"tools": [{"name": "f"}]}, "tools.0.input_schema"),
        ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
        ({"tool_choice": {"type": "required"}}, "tool_choice.type"),
        ({"system": [{"type": "image"}]}, "system.0"),
        ({"metadata": {"user_id": 7}}, "metadata.user_id"),
        ({"total_ms": -1}, "total_ms"),
    ],
)
def test_invalid_bodies_name_the_field(change, param):
    body = {**BODY, **change}
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(ValidationError) as exc:
        parse_messages(body)
    assert exc.value.param == param and exc.value.message.startswith(param)


def test_count_tokens_bodies_need_no_max_tokens():
    call = parse_messages(
        {"model": "demo-openai", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        count_only=True,
    )
    assert "max_tokens" not in call.fields and not call.stream


def test_estimate_is_utf8_bytes_over_four_plus_the_allowances():
    call = parse_messages({**BODY, "system": "12345678", "messages": [{"role": "user", "content": "héllo"}]})
    # 3 per request; 4 + ceil(8 / 4) for the system message; 4 + ceil(6 / 4) for "héllo"
    assert estimate_tokens(call) == 3 + (4 + 2) + (4 + 2)
    image = {
        "role": "user",
        "content": [
            {"type": "text", "text": "abcd"},
            {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
        ],
    }
    assert estimate_tokens(parse_messages({**BODY, "messages": [image]})) == 3 + 4 + 1 + 1600
    with_tools = parse_messages({**BODY, "tools": [WEATHER]})
    assert estimate_tokens(with_tools) - estimate_tokens(parse_messages(BODY)) == -(
        -len(orjson.dumps(with_tools.fields["tools"])) // 4
    )


# --- answer mapping ---------------------------------------------------------------------------------


def test_answer_with_text_and_tool_use():
    req = ChatRequested(
        request_id="r9", tenant_id="demo", model="demo-openai", messages=[{"role": "user", "content": "x"}]
    )
    result = tool_result(req)
    result.message = AssistantMessage(content="Checking.", tool_calls=result.message.tool_calls)  # type: ignore[union-attr]
    result.usage = Usage(prompt_tokens=30, completion_tokens=9, total_tokens=39, cached_tokens=10)
    body = message_json(result, "demo-openai")
    AnthropicMessage.model_validate(body)
    assert body == {
        "id": "msg_r9",
        "type": "message",
        "role": "assistant",
        "model": "demo-openai",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 9, "cache_read_input_tokens": 10},
    }


# --- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (ValidationError("x"), (400, "invalid_request_error")),
        (BudgetExceeded("x"), (402, "billing_error")),
        (ModelNotApproved("x"), (403, "permission_error")),
        (ModelNotFound("x"), (404, "not_found_error")),
        (RateLimited("x"), (429, "rate_limit_error")),
        (ProviderError("x", details={"upstream_status": None}), (529, "overloaded_error")),
        (ProviderError("x", details={"upstream_status": 503}), (529, "overloaded_error")),
        (ProviderError("x", details={"upstream_status": 529}), (529, "overloaded_error")),
        (ProviderError("x", details={"upstream_status": 429}), (529, "overloaded_error")),
        (ProviderError("x", details={"upstream_status": 400}), (400, "invalid_request_error")),
        (ProviderError("x", details={"upstream_status": 500}), (500, "api_error")),
        (ProviderError("x", details={"upstream_status": 401}), (500, "api_error")),
        (ProviderTimeout("x"), (504, "timeout_error")),
        (StreamInterrupted("x"), (500, "api_error")),
        (HTTPError(404, "Invalid URL"), (404, "not_found_error")),
    ],
)
def test_error_types_by_status(err, expected):
    assert status_and_type(err) == expected


# --- the route, over HTTP -------------------------------------------------------------------------


async def test_create_with_x_api_key(http, pipeline):
    r = await http.post("/v1/messages", json=BODY, headers=KEY)
    assert r.status_code == 200
    body = r.json()
    AnthropicMessage.model_validate(body)
    [req] = pipeline.requests
    assert (req.tenant_id, req.user_id, req.api_key) == ("demo", "demo-user", "demo key")
    assert req.params.max_tokens == 64 and not req.stream
    assert (
        body["id"] == f"msg_{req.request_id}"
        and r.headers["request-id"] == r.headers["x-request-id"] == req.request_id
    )
    assert body["content"] == [{"type": "text", "text": "hello there"}] and body["stop_reason"] == "end_turn"
    assert body["usage"] == {"input_tokens": 3, "output_tokens": 2, "cache_read_input_tokens": 0}
    assert float(r.headers["x-llmgw-overhead-ms"]) >= 0


async def test_bearer_works_and_x_api_key_wins(http, pipeline):
    r = await http.post("/v1/messages", json=BODY, headers={"authorization": f"Bearer {RESTRICTED_KEY}"})
    assert r.status_code == 200 and pipeline.requests[-1].tenant_id == "restricted"
    r = await http.post("/v1/messages", json=BODY, headers={"authorization": "Bearer sk-wrong", **KEY})
    assert r.status_code == 200 and pipeline.requests[-1].tenant_id == "demo"


@pytest.mark.parametrize(
    "headers", [{}, {"x-api-key": "sk-wrong"}, {"authorization": "Bearer sk-wrong"}, {"x-api-key": ""}]
)
async def test_missing_or_bad_keys_are_anthropic_authentication_errors(http, pipeline, headers):
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        r = await http.post(path, json=BODY, headers=headers)
        assert r.status_code == 401
        body = r.json()
        assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
        assert body["request_id"] == r.headers["x-request-id"]
    assert not pipeline.requests


async def test_own_refusals_are_audited(edge_settings, demo_config, pipeline):
    records = []

    async def audit(event):
        records.append(event)
        done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    app = create_app(edge_settings, config=demo_config, pipeline=pipeline, audit=audit)
    await app.startup()
    bad_key = AsgiCall(
        app, "POST", "/v1/messages", orjson.dumps(BODY), headers={"authorization": "Bearer sk-x"}
    )
    await bad_key.start()
    no_max = AsgiCall(app, "POST", "/v1/messages", orjson.dumps({**BODY, "max_tokens": None}), headers=KEY)
    await no_max.start()
    assert (bad_key.status, no_max.status) == (401, 400)
    assert orjson.loads(no_max.data)["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required: an integer >= 1",
    }
    assert [(r.action, r.error_code, r.operation) for r in records] == [
        ("blocked", "authentication_error", "chat"),
        ("blocked", "validation_error", "chat"),
    ]


async def test_body_limit_is_request_too_large(edge_settings, demo_config, pipeline):
    app = create_app(
        dataclasses.replace(edge_settings, max_body_bytes=100), config=demo_config, pipeline=pipeline
    )
    await app.startup()
    c = AsgiCall(app, "POST", "/v1/messages", orjson.dumps({**BODY, "system": "x" * 200}), headers=KEY)
    await c.start()
    assert c.status == 413 and orjson.loads(c.data)["error"]["type"] == "request_too_large"


@pytest.mark.parametrize(
    ("err", "status", "kind", "retry"),
    [
        (ModelNotFound("model 'nope' does not exist", param="model"), 404, "not_found_error", "false"),
        (ProviderError("overloaded", details={"upstream_status": 529}), 529, "overloaded_error", "true"),
        (RateLimited("slow down", details={"retry_after_s": 2.5}), 429, "rate_limit_error", "true"),
    ],
)
async def test_pipeline_errors(http, pipeline, err, status, kind, retry):
    pipeline.answer = lambda req: err
    r = await http.post("/v1/messages", json=BODY, headers=KEY)
    assert r.status_code == status and r.headers["x-should-retry"] == retry
    assert r.json() == {
        "type": "error",
        "error": {"type": kind, "message": err.message},
        "request_id": r.headers["request-id"],
    }
    if status == 429:
        assert r.headers["retry-after"] == "3"


async def test_count_tokens(http, pipeline):
    body = {
        "model": "demo-anthropic",
        "system": "12345678",
        "messages": [{"role": "user", "content": "héllo"}],
    }
    r = await http.post("/v1/messages/count_tokens", json=body, headers=KEY)
    assert r.status_code == 200 and r.json() == {"input_tokens": 15}
    assert r.headers["x-llmgw-token-count"] == "estimate" and r.headers["request-id"]
    assert pipeline.model_lists == [("demo", "demo-anthropic")] and not pipeline.requests
    r = await http.post("/v1/messages/count_tokens", json={**body, "model": "no-such"}, headers=KEY)
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = await http.post("/v1/messages/count_tokens", json={**body, "model": "demo-embed"}, headers=KEY)
    assert r.status_code == 400 and "does not serve chat" in r.json()["error"]["message"]


# --- streams over HTTP ------------------------------------------------------------------------------


def frames(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for raw in data.split(b"\n\n"):
        lines = [ln for ln in raw.split(b"\n") if ln and not ln.startswith(b":")]
        if not lines:
            continue
        event, payload = lines
        assert event.startswith(b"event: ") and payload.startswith(b"data: ")
        out.append((event[7:].decode(), orjson.loads(payload[6:])))
    return out


async def test_stream_frames(app, pipeline):
    c = AsgiCall(app, "POST", "/v1/messages", orjson.dumps({**BODY, "stream": True}), headers=KEY)
    await c.start()
    assert c.status == 200 and c.headers[b"content-type"].startswith(b"text/event-stream")
    assert c.headers[b"request-id"] == c.headers[b"x-request-id"]
    names = [e for e, _ in frames(c.data)]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    [req] = pipeline.requests
    assert req.stream and frames(c.data)[0][1]["message"]["usage"]["input_tokens"] == 3 + 4 + 1


async def test_stream_pings_after_message_start_and_comments_before(edge_settings, demo_config, pipeline):
    app = create_app(
        dataclasses.replace(edge_settings, keepalive_s=0.1), config=demo_config, pipeline=pipeline
    )
    await app.startup()
    # a slow upstream: 0.25 s to its first token, then 0.4 s of silence (pings every keepalive_s / 2)
    pipeline.chunks = lambda req: [0.25, *chunks_for(req, ["a"])[:1], 0.4, *chunks_for(req, ["a"])[1:]]
    c = AsgiCall(app, "POST", "/v1/messages", orjson.dumps({**BODY, "stream": True}), headers=KEY)
    await c.start()
    head, _, rest = c.data.partition(b"event: message_start")
    assert head and set(head.split(b"\n\n")) <= {b": keep-alive", b""}  # no frame before message_start
    names = [e for e, _ in frames(c.data)]
    assert names[0] == "message_start" and names.count("ping") >= 3 and names[-1] == "message_stop"
    assert b": keep-alive" not in rest  # after message_start, pings keep the stream alive


async def test_stream_refused_before_the_first_chunk_is_a_plain_http_error(app, pipeline):
    pipeline.chunks = lambda req: [ModelNotFound("model 'nope' does not exist", param="model")]
    c = AsgiCall(app, "POST", "/v1/messages", orjson.dumps({**BODY, "stream": True}), headers=KEY)
    await c.start()
    assert c.status == 404 and c.headers[b"x-should-retry"] == b"false" and c.headers[b"request-id"]
    assert orjson.loads(c.data)["error"]["type"] == "not_found_error"


async def test_disconnect_cancels_the_streamed_request(app, pipeline):
    pipeline.chunks = lambda req: [*chunks_for(req, ["a"])[:1], 30.0, *chunks_for(req, ["never"])[1:]]
    c = AsgiCall(app, "POST", "/v1/messages", orjson.dumps({**BODY, "stream": True}), headers=KEY)
    task = c.start()
    await c.wait_for(lambda: b"text_delta" in c.data)
    c.disconnect.set()
    await asyncio.wait_for(task, 2)
    assert pipeline.cancels == [pipeline.requests[0].request_id] and b"never" not in c.data


# --- the official SDK, in process -------------------------------------------------------------------


async def test_sdk_create(sdk, pipeline):
    msg = await sdk.messages.create(
        model="demo-openai", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )
    assert msg.type == "message" and msg.content[0].type == "text" and msg.content[0].text == "hello there"
    assert msg.usage.input_tokens == 3 and msg.usage.output_tokens == 2
    # the SDK's documented ``_request_id``: read from the request-id header
    assert msg._request_id == pipeline.requests[0].request_id


async def test_sdk_stream_accumulates_the_final_message(sdk, pipeline):
    async with sdk.messages.stream(
        model="demo-openai", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    ) as s:
        texts = [t async for t in s.text_stream]
        final = await s.get_final_message()
    assert texts == ["hel", "lo"] and final.content[0].text == "hello"  # the first delta included
    assert final.stop_reason == "end_turn" and final.id == f"msg_{pipeline.requests[0].request_id}"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        3,
        2,
    )  # the upstream's, from message_delta


async def test_sdk_tool_use_whole_and_streamed(sdk, pipeline):
    pipeline.answer = tool_result
    pipeline.chunks = tool_chunks
    args = {
        "model": "demo-anthropic",
        "max_tokens": 64,
        "tools": [WEATHER],
        "messages": [{"role": "user", "content": "Paris?"}],
    }
    whole = await sdk.messages.create(**args)
    assert whole.stop_reason == "tool_use"
    [block] = whole.content
    assert (block.type, block.id, block.name, block.input) == (
        "tool_use",
        "call_1",
        "get_weather",
        {"city": "Paris"},
    )
    async with sdk.messages.stream(**args) as s:
        final = await s.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use"] and final.stop_reason == "tool_use"
    assert final.content[1].input == {"city": "Paris"} and final.content[0].text == "Checking. "
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.output_tokens) == (
        30,
        20,
        12,
    )
    assert pipeline.requests[0].params.tools == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": WEATHER["input_schema"],
            },
        }
    ]


async def test_sdk_exceptions(sdk, pipeline):
    pipeline.answer = lambda req: ModelNotFound("model 'nope' does not exist", param="model")
    with pytest.raises(anthropic.NotFoundError) as nf:
        await sdk.messages.create(model="nope", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert nf.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    pipeline.answer = lambda req: ProviderError("overloaded", details={"upstream_status": 529})
    with pytest.raises(anthropic.OverloadedError):
        await sdk.messages.create(
            model="demo-openai", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    pipeline.chunks = lambda req: [
        *chunks_for(req, ["a"])[:1],
        ProviderError("dropped", details={"upstream_status": None}),
    ]
    with pytest.raises(anthropic.APIStatusError) as mid:
        async with sdk.messages.stream(
            model="demo-openai", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        ) as s:
            async for _ in s:
                pass
    assert mid.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


async def test_sdk_count_tokens(sdk):
    r = await sdk.messages.count_tokens(model="demo-openai", messages=[{"role": "user", "content": "héllo"}])
    assert r.input_tokens == 3 + 4 + 2
