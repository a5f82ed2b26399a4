"""The official ``anthropic`` SDK against the emulator."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest

from services.emulator.text import completion_text, count_prompt_tokens

SYSTEM = [{"type": "text", "text": "Be brief and kind."}]
MESSAGES = [
    {"role": "user", "content": "tell me three things"},
    {"role": "assistant", "content": [{"type": "text", "text": "sure"}]},
    {"role": "user", "content": [{"type": "text", "text": "go"}]},
]
TOOLS = [
    {
        "name": "lookup",
        "description": "Look a thing up",
        "input_schema": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
            "required": ["query"],
        },
    }
]
PROMPT = count_prompt_tokens(MESSAGES, SYSTEM)


@pytest.fixture
def client(emulator_url):
    with anthropic.Anthropic(base_url=emulator_url, api_key="x", max_retries=0) as c:
        yield c


def test_prompt_count_includes_system():
    assert PROMPT == (3 + 4) + (3 + 4) + (3 + 1) + (3 + 1)
    assert count_prompt_tokens(MESSAGES, "Be brief and kind.") == PROMPT


def test_non_streaming(client):
    m = client.messages.create(model="claude-emu@tokens=5", max_tokens=100, system=SYSTEM, messages=MESSAGES)
    assert m.type == "message" and m.role == "assistant" and m.id.startswith("msg_")
    assert m.model == "claude-emu"
    assert m.content[0].type == "text"
    assert m.content[0].text == completion_text(5)
    assert m.stop_reason == "end_turn" and m.stop_sequence is None
    assert m.usage.input_tokens == PROMPT
    assert m.usage.output_tokens == 5
    assert m.usage.cache_read_input_tokens == 0 and m.usage.cache_creation_input_tokens == 0


def test_system_string_and_cached(client):
    m = client.messages.create(
        model="claude-emu@cached=6", max_tokens=100, system="Be brief and kind.", messages=MESSAGES
    )
    assert m.usage.cache_read_input_tokens == 6
    assert m.usage.input_tokens == PROMPT - 6


def test_max_tokens_stop_reason(client):
    m = client.messages.create(model="claude-emu@tokens=10", max_tokens=3, messages=MESSAGES)
    assert m.stop_reason == "max_tokens"
    assert m.content[0].text == completion_text(3)
    assert m.usage.output_tokens == 3


def test_stream_helper(client):
    with client.messages.stream(
        model="claude-emu@tokens=7", max_tokens=100, system=SYSTEM, messages=MESSAGES
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == completion_text(7)
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 7
    assert final.usage.input_tokens == PROMPT


def test_raw_stream_event_order(client):
    events = list(
        client.messages.create(model="claude-emu@tokens=3", max_tokens=100, messages=MESSAGES, stream=True)
    )
    # The SDK drops ``ping`` (see test_wire_event_order for the raw wire).
    assert [e.type for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0].message
    assert start.content == [] and start.usage.output_tokens == 1
    assert start.usage.input_tokens == count_prompt_tokens(MESSAGES)
    assert [e.delta.text for e in events[2:5]] == ["tok0", " tok1", " tok2"]
    assert events[6].delta.stop_reason == "end_turn"
    assert events[6].usage.output_tokens == 3


def test_wire_event_order(emulator_url):
    body = {"model": "claude-emu@tokens=2", "max_tokens": 100, "messages": MESSAGES, "stream": True}
    r = httpx.post(f"{emulator_url}/v1/messages", json=body)
    assert r.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in r.text.split("\n\n") if f]
    names = []
    for frame in frames:
        event_line, data_line = frame.split("\n")
        name = event_line.removeprefix("event: ")
        assert json.loads(data_line.removeprefix("data: "))["type"] == name
        names.append(name)
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_tool_use_non_streaming(client):
    m = client.messages.create(model="claude-emu@tool=1", max_tokens=100, messages=MESSAGES, tools=TOOLS)
    assert m.stop_reason == "tool_use"
    (block,) = m.content
    assert block.type == "tool_use" and block.id.startswith("toolu_") and block.name == "lookup"
    assert block.input == {"query": "tok0", "limit": 1}


def test_tool_use_stream_helper(client):
    with client.messages.stream(
        model="claude-emu",
        max_tokens=100,
        messages=MESSAGES,
        tools=TOOLS,
        tool_choice={"type": "tool", "name": "lookup"},
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds
    assert final.stop_reason == "tool_use"
    block = final.content[0]
    assert block.type == "tool_use" and block.name == "lookup"
    assert block.input == {"query": "tok0", "limit": 1}
    assert final.usage.output_tokens == kinds.count("input_json")


def test_tool_choice_none_and_auto_without_flag(client):
    m = client.messages.create(model="claude-emu", max_tokens=100, messages=MESSAGES, tools=TOOLS)
    assert m.stop_reason == "end_turn"
    m = client.messages.create(
        model="claude-emu@tool=1",
        max_tokens=100,
        messages=MESSAGES,
        tools=TOOLS,
        tool_choice={"type": "none"},
    )
    assert m.stop_reason == "end_turn"


def test_errors(client):
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model="claude-emu@status=429", max_tokens=10, messages=MESSAGES)
    assert info.value.body["error"]["type"] == "rate_limit_error"
    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(model="claude-emu@status=500", max_tokens=10, messages=MESSAGES)
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model="claude-emu@status=529", max_tokens=10, messages=MESSAGES)
    assert info.value.status_code == 529
    assert info.value.body["error"]["type"] == "overloaded_error"
    with pytest.raises(anthropic.BadRequestError, match="'wat'"):
        client.messages.create(model="claude-emu@wat=1", max_tokens=10, messages=MESSAGES)


def test_max_tokens_is_required(client):
    with pytest.raises(anthropic.BadRequestError) as info:
        client.post("/v1/messages", body={"model": "claude-emu", "messages": MESSAGES}, cast_to=object)
    assert info.value.body == {
        "type": "error",
        "request_id": info.value.body["request_id"],
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }


def test_fail_first(client, unique_key):
    model = f"claude-emu@fail_first=1,status=529,key={unique_key}"
    with pytest.raises(anthropic.APIStatusError):
        client.messages.create(model=model, max_tokens=10, messages=MESSAGES)
    assert client.messages.create(model=model, max_tokens=10, messages=MESSAGES).stop_reason == "end_turn"


def test_models_list(client):
    assert "claude-emu" in [m.id for m in client.models.list()]


async def test_async_stream(emulator_url):
    async with anthropic.AsyncAnthropic(base_url=emulator_url, api_key="x", max_retries=0) as client:
        async with client.messages.stream(
            model="claude-emu@tokens=4", max_tokens=100, messages=MESSAGES
        ) as s:
            text = "".join([t async for t in s.text_stream])
            final = await s.get_final_message()
    assert text == completion_text(4) == final.content[0].text
