"""OpenAI adapter: request mapping, response reading, chunk stream, HTTP wiring."""

from __future__ import annotations

import orjson
import pytest

from services.contracts.errors import ProviderError
from services.contracts.events import Usage
from services.executor.providers.openai import OpenAIAdapter, OpenAIStreamParser

from .fixtures import wire
from .support import answer, chat, collect, deployment, feed_all, streamed

ADAPTER = OpenAIAdapter()
DEP = deployment("openai", "https://api.openai.test/v1/", "gpt-4o")

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
        },
    }
]


def test_to_wire_passes_messages_through_without_nones() -> None:
    req = chat(
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    )
    body = ADAPTER.to_wire(req, DEP, stream=False)
    assert body["model"] == "gpt-4o"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
            ],
        },
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    assert "stream" not in body and "stream_options" not in body


def test_to_wire_copies_set_params_only_and_extra_unchanged() -> None:
    req = chat(
        temperature=0.2,
        max_tokens=64,
        stop=["\n\n"],
        seed=7,
        tools=TOOLS,
        tool_choice="required",
        response_format={"type": "json_object"},
        extra={"logprobs": True, "top_logprobs": 2, "user": "u-9", "parallel_tool_calls": False},
    )
    body = ADAPTER.to_wire(req, DEP, stream=False)
    assert {k: v for k, v in body.items() if k not in ("model", "messages")} == {
        "temperature": 0.2,
        "max_tokens": 64,
        "stop": ["\n\n"],
        "seed": 7,
        "tools": TOOLS,
        "tool_choice": "required",
        "response_format": {"type": "json_object"},
        "logprobs": True,
        "top_logprobs": 2,
        "user": "u-9",
        "parallel_tool_calls": False,
    }


def test_to_wire_typed_params_and_gateway_keys_win_over_extra() -> None:
    req = chat(temperature=0.5, extra={"temperature": 1.9, "model": "evil", "stream": True})
    body = ADAPTER.to_wire(req, DEP, stream=False)
    assert body["temperature"] == 0.5 and body["model"] == "gpt-4o" and "stream" not in body


def test_to_wire_streaming_always_asks_for_usage() -> None:
    body = ADAPTER.to_wire(chat(extra={"stream_options": {"include_obfuscation": False}}), DEP, stream=True)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_obfuscation": False, "include_usage": True}


def test_from_wire_tool_calls_and_cached_tokens() -> None:
    done = ADAPTER.from_wire(orjson.loads(wire("openai_tools.json")))
    assert done.finish_reason == "tool_calls"
    assert done.message.content is None
    assert [(c.id, c.function.name, c.function.arguments) for c in done.message.tool_calls or []] == [
        ("call_9mGk3kZ0Lq2e1VtW8bXyP4sA", "get_weather", '{"location": "Paris"}'),
        ("call_Xq7Rt2WbN5yM0kLpA3sV8dEe", "get_time", '{"tz": "Europe/Paris"}'),
    ]
    assert done.usage == Usage(
        prompt_tokens=1180, completion_tokens=41, total_tokens=1221, cached_tokens=1024
    )
    assert done.model == "gpt-4o-2024-08-06"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("tool_calls", "tool_calls"),
        ("function_call", "tool_calls"),
        ("content_filter", "content_filter"),
        ("eos", "stop"),
        (None, "stop"),
    ],
)
def test_finish_reasons_are_normalised(raw: str | None, expected: str) -> None:
    body = {"choices": [{"message": {"content": "x"}, "finish_reason": raw}], "model": "m"}
    assert ADAPTER.from_wire(body).finish_reason == expected


def test_stream_tool_call_deltas_and_held_back_finish() -> None:
    deltas = feed_all(OpenAIStreamParser(), wire("openai_tools.sse"))
    calls = [tc for d in deltas for tc in d.tool_calls or []]
    assert [(c.index, c.id, c.name) for c in calls if c.id] == [
        (0, "call_9mGk3kZ0Lq2e1VtW8bXyP4sA", "get_weather"),
        (1, "call_Xq7Rt2WbN5yM0kLpA3sV8dEe", "get_time"),
    ]
    args = {i: "".join(c.arguments for c in calls if c.index == i) for i in (0, 1)}
    assert args == {0: '{"location": "Paris"}', 1: '{"tz": "Europe/Paris"}'}
    final = deltas[-1]
    assert final.finish_reason == "tool_calls"
    assert final.usage == Usage(
        prompt_tokens=1180, completion_tokens=41, total_tokens=1221, cached_tokens=1024
    )
    assert final.model == "gpt-4o-2024-08-06"
    assert all(d.finish_reason is None for d in deltas[:-1])


def test_stream_ignores_comments_event_and_id_lines() -> None:
    parser = OpenAIStreamParser()
    assert parser.feed(": OPENROUTER PROCESSING") == []
    assert parser.feed("event: message") == []
    assert parser.feed("id: 42") == []
    assert parser.feed("") == []
    out = parser.feed(
        'data:{"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}'
    )
    assert [d.content for d in out] == ["hi"]


def test_stream_without_usage_finishes_at_done_with_no_usage() -> None:
    parser = OpenAIStreamParser()
    parser.feed(
        'data: {"model":"m","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"length"}]}'
    )
    final = parser.feed("data: [DONE]")
    assert [(d.finish_reason, d.usage) for d in final] == [("length", None)]
    assert parser.close() == []


def test_stream_usage_in_the_finishing_chunk_finishes_at_once() -> None:
    parser = OpenAIStreamParser()
    out = parser.feed(
        'data: {"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
        '"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}'
    )
    assert [(d.finish_reason, d.usage) for d in out] == [
        ("stop", Usage(prompt_tokens=3, completion_tokens=1, total_tokens=4))
    ]
    assert parser.feed("data: [DONE]") == [] and parser.close() == []


def test_stream_error_object_is_a_provider_error() -> None:
    parser = OpenAIStreamParser("openai-east")
    parser.feed('data: {"model":"m","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}')
    with pytest.raises(ProviderError, match="openai-east: stream error: The server is overloaded") as err:
        parser.feed('data: {"error":{"message":"The server is overloaded","type":"server_error","code":502}}')
    assert err.value.details == {"upstream_status": 502, "upstream_type": "server_error"}


def test_stream_malformed_json_is_a_provider_error() -> None:
    with pytest.raises(ProviderError, match="malformed stream line"):
        OpenAIStreamParser().feed('data: {"choices": [')


def test_stream_done_without_finish_is_truncated() -> None:
    parser = OpenAIStreamParser()
    parser.feed('data: {"model":"m","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}')
    assert parser.feed("data: [DONE]") == []
    with pytest.raises(ProviderError, match="stream ended before finish_reason"):
        parser.close()


async def test_complete_sends_bearer_json_to_chat_completions(mock_http) -> None:
    http, rec = mock_http(answer(200, wire("openai_tools.json")))
    done = await ADAPTER.complete(http, chat(tools=TOOLS, extra={"metadata": {"k": "v"}}), DEP, "sk-1")
    assert done.finish_reason == "tool_calls"
    assert str(rec.request.url) == "https://api.openai.test/v1/chat/completions"
    assert rec.request.headers["authorization"] == "Bearer sk-1"
    assert rec.body == {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Hi"}],
        "tools": TOOLS,
        "metadata": {"k": "v"},
    }


async def test_stream_sends_stream_options(mock_http) -> None:
    http, rec = mock_http(streamed(wire("openai_tools.sse"), "text/event-stream", piece=64))
    deltas = await collect(ADAPTER.stream(http, chat(), DEP, "sk-1"))
    assert deltas[-1].finish_reason == "tool_calls"
    assert rec.body["stream"] is True and rec.body["stream_options"] == {"include_usage": True}


async def test_success_status_with_error_body_is_a_provider_error(mock_http) -> None:
    http, _ = mock_http(answer(200, b'{"error": {"message": "upstream model crashed"}}'))
    with pytest.raises(ProviderError, match="unexpected response shape: upstream model crashed"):
        await ADAPTER.complete(http, chat(), DEP, None)
