"""Anthropic adapter: request translation, response reading, SSE event stream, HTTP wiring."""

from __future__ import annotations

import orjson
import pytest

from services.contracts.errors import ProviderError, ValidationError
from services.contracts.events import Usage
from services.executor.providers.anthropic import AnthropicAdapter, AnthropicStreamParser

from .fixtures import wire
from .support import answer, chat, collect, deployment, feed_all, streamed

ADAPTER = AnthropicAdapter()
DEP = deployment("anthropic", "https://api.anthropic.test/", "claude-sonnet-4-20250514")

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}


def test_to_wire_system_and_plain_turns() -> None:
    req = chat(
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Bonjour"},
        {"role": "user", "content": "Ça va?"},
    )
    body = ADAPTER.to_wire(req, DEP, stream=False)
    assert body == {
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 4096,
        "system": "Be brief.\n\nAnswer in French.",
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Bonjour"},
            {"role": "user", "content": "Ça va?"},
        ],
    }


def test_to_wire_images_become_url_and_base64_sources() -> None:
    req = chat(
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Compare"},
                {"type": "image_url", "image_url": {"url": "https://img.test/cat.jpg", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGRiIAAABXRUJQ"}},
            ],
        }
    )
    assert ADAPTER.to_wire(req, DEP, stream=False)["messages"][0]["content"] == [
        {"type": "text", "text": "Compare"},
        {"type": "image", "source": {"type": "url", "url": "https://img.test/cat.jpg"}},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/webp", "data": "UklGRiIAAABXRUJQ"},
        },
    ]


def test_to_wire_tool_calls_and_merged_tool_results() -> None:
    req = chat(
        {"role": "user", "content": "Weather and time in Paris?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                },
                {"id": "toolu_2", "type": "function", "function": {"name": "get_time", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18°C, sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "14:05"}]},
        {"role": "user", "content": "Thanks"},
    )
    assert ADAPTER.to_wire(req, DEP, stream=False)["messages"] == [
        {"role": "user", "content": "Weather and time in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18°C, sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "14:05"}],
                },
            ],
        },
        {"role": "user", "content": "Thanks"},
    ]


def test_to_wire_rejects_tool_arguments_that_are_not_json() -> None:
    req = chat(
        {
            "role": "assistant",
            "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{oops"}}],
        }
    )
    with pytest.raises(ValidationError):
        ADAPTER.to_wire(req, DEP, stream=False)


def test_to_wire_params_tools_and_extra() -> None:
    req = chat(
        temperature=0.3,
        top_p=0.9,
        max_tokens=512,
        stop=["END"],
        seed=1,
        presence_penalty=0.5,
        tools=[WEATHER, {"type": "web_search_20250305", "name": "web_search"}],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        extra={"top_k": 40, "metadata": {"user_id": "u-1"}},
    )
    body = ADAPTER.to_wire(req, DEP, stream=True)
    assert {k: v for k, v in body.items() if k not in ("model", "messages")} == {
        "max_tokens": 512,
        "temperature": 0.3,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "tools": [
            {
                "name": "get_weather",
                "description": "Weather for a city",
                "input_schema": WEATHER["function"]["parameters"],
            },
            {"type": "web_search_20250305", "name": "web_search"},
        ],
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "top_k": 40,
        "metadata": {"user_id": "u-1"},
        "stream": True,
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "n"}}, {"type": "tool", "name": "n"}),
    ],
)
def test_tool_choice_mapping(choice, expected) -> None:
    assert (
        ADAPTER.to_wire(chat(tools=[WEATHER], tool_choice=choice), DEP, stream=False)["tool_choice"]
        == expected
    )


def test_parallel_tool_calls_false_disables_parallel_use() -> None:
    body = ADAPTER.to_wire(chat(tools=[WEATHER], extra={"parallel_tool_calls": False}), DEP, stream=False)
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert "parallel_tool_calls" not in body


def test_from_wire_text_tool_use_and_cache_usage() -> None:
    done = ADAPTER.from_wire(orjson.loads(wire("anthropic_tools.json")))
    assert done.message.content == "Let me check that for you."
    assert [
        (c.id, c.function.name, orjson.loads(c.function.arguments)) for c in done.message.tool_calls or []
    ] == [
        ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", {"location": "Paris"}),
        ("toolu_01CqP9uLzW5YhVbN2mXe7RkT", "get_time", {"tz": "Europe/Paris"}),
    ]
    assert done.finish_reason == "tool_calls"
    assert done.usage == Usage(
        prompt_tokens=2292, completion_tokens=89, total_tokens=2381, cached_tokens=1800
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ],
)
def test_stop_reasons_are_normalised(raw: str, expected: str) -> None:
    body = {"content": [{"type": "text", "text": "x"}], "stop_reason": raw, "usage": {}, "model": "m"}
    assert ADAPTER.from_wire(body).finish_reason == expected


def test_stream_text_then_tool_use_with_ordinal_indexes() -> None:
    deltas = feed_all(AnthropicStreamParser(), wire("anthropic_tools.sse"))
    assert "".join(d.content or "" for d in deltas) == "Let me check that for you."
    calls = [tc for d in deltas for tc in d.tool_calls or []]
    assert [(c.index, c.id, c.name) for c in calls if c.id] == [
        (0, "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather"),
        (1, "toolu_01CqP9uLzW5YhVbN2mXe7RkT", "get_time"),
    ]
    args = {i: "".join(c.arguments for c in calls if c.index == i) for i in (0, 1)}
    assert args == {0: '{"location": "Paris"}', 1: '{"tz": "Europe/Paris"}'}
    final = deltas[-1]
    assert (final.finish_reason, final.model) == ("tool_calls", "claude-sonnet-4-20250514")
    assert final.usage == Usage(
        prompt_tokens=2292, completion_tokens=89, total_tokens=2381, cached_tokens=1800
    )
    assert all(d.finish_reason is None and d.usage is None for d in deltas[:-1])


def test_stream_error_event_is_a_provider_error() -> None:
    parser = AnthropicStreamParser("anthropic-eu")
    parser.feed("event: error")
    with pytest.raises(ProviderError, match="anthropic-eu: stream error: Overloaded") as err:
        parser.feed('data: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}')
    assert err.value.details == {"upstream_status": 529, "upstream_type": "overloaded_error"}


def test_stream_closed_before_message_stop() -> None:
    raw = wire("anthropic_text.sse").decode()
    parser = AnthropicStreamParser()
    for line in raw[: raw.index("event: message_stop")].splitlines():
        parser.feed(line)
    with pytest.raises(ProviderError, match="stream ended before message_stop"):
        parser.close()


async def test_complete_sends_key_version_and_body(mock_http) -> None:
    http, rec = mock_http(answer(200, wire("anthropic_text.json")))
    await ADAPTER.complete(
        http, chat({"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}), DEP, "ak-1"
    )
    sent = rec.request
    assert str(sent.url) == "https://api.anthropic.test/v1/messages"
    assert sent.headers["x-api-key"] == "ak-1"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert rec.body == {
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 4096,
        "system": "S",
        "messages": [{"role": "user", "content": "Hi"}],
    }


async def test_stream_over_http(mock_http) -> None:
    http, rec = mock_http(streamed(wire("anthropic_tools.sse"), "text/event-stream", piece=33))
    deltas = await collect(ADAPTER.stream(http, chat(), DEP, "ak-1"))
    assert deltas[-1].finish_reason == "tool_calls"
    assert rec.body["stream"] is True
