"""The official ``openai`` SDK against the emulator."""

from __future__ import annotations

import json
import math

import openai
import pytest

from services.emulator.text import completion_text, count_prompt_tokens, embedding

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": [{"type": "text", "text": "say four words please"}]},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer"},
                    "unit": {"type": "string", "enum": ["c", "f"]},
                },
                "required": ["city"],
            },
        },
    }
]


@pytest.fixture
def client(emulator_url):
    with openai.OpenAI(base_url=f"{emulator_url}/v1", api_key="x", max_retries=0) as c:
        yield c


def test_prompt_count_helper():
    # 3 per message + words: "You are terse." (3) + "say four words please" (4)
    assert count_prompt_tokens(MESSAGES) == 13


def test_non_streaming(client):
    r = client.chat.completions.create(model="gpt-emu@tokens=5,cached=4", messages=MESSAGES)
    assert r.object == "chat.completion"
    assert r.model == "gpt-emu"
    assert r.id.startswith("chatcmpl-")
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == completion_text(5) == "tok0 tok1 tok2 tok3 tok4"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens == count_prompt_tokens(MESSAGES)
    assert r.usage.completion_tokens == 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + 5
    assert r.usage.prompt_tokens_details.cached_tokens == 4
    assert r.usage.completion_tokens_details.reasoning_tokens == 0


def test_max_tokens_gives_length(client):
    r = client.chat.completions.create(model="gpt-emu@tokens=10", messages=MESSAGES, max_tokens=3)
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content == completion_text(3)
    assert r.usage.completion_tokens == 3
    r = client.chat.completions.create(model="gpt-emu@tokens=10", messages=MESSAGES, max_completion_tokens=4)
    assert (r.choices[0].finish_reason, r.usage.completion_tokens) == ("length", 4)


def test_default_token_count_via_header(client):
    r = client.chat.completions.create(model="gpt-emu", messages=MESSAGES)
    assert r.usage.completion_tokens == 8
    r = client.chat.completions.create(
        model="gpt-emu@tokens=9", messages=MESSAGES, extra_headers={"x-emulator-scenario": "tokens=2"}
    )
    assert r.usage.completion_tokens == 2


def test_streaming_with_usage(client):
    stream = client.chat.completions.create(
        model="gpt-emu@tokens=6,cached=2",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) == 6
    assert "".join(c.choices[0].delta.content for c in content) == completion_text(6)
    assert content[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.choices == []
    assert last.usage.prompt_tokens == count_prompt_tokens(MESSAGES)
    assert last.usage.completion_tokens == 6
    assert last.usage.prompt_tokens_details.cached_tokens == 2
    assert len({c.id for c in chunks}) == 1


def test_streaming_without_usage(client):
    chunks = list(client.chat.completions.create(model="gpt-emu@tokens=3", messages=MESSAGES, stream=True))
    assert all(c.choices for c in chunks)
    assert len(chunks) == 4


def test_stream_helper(client):
    with client.chat.completions.stream(
        model="gpt-emu@tokens=4", messages=MESSAGES, stream_options={"include_usage": True}
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert "".join(deltas) == completion_text(4)
    assert final.choices[0].message.content == completion_text(4)
    assert final.choices[0].finish_reason == "stop"
    assert final.usage.completion_tokens == 4


def test_tool_call_non_streaming(client):
    r = client.chat.completions.create(model="gpt-emu@tool=1", messages=MESSAGES, tools=TOOLS)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "tok0", "days": 1, "unit": "c"}
    assert r.usage.completion_tokens >= 1


def test_no_tool_call_without_flag_or_with_none(client):
    r = client.chat.completions.create(model="gpt-emu", messages=MESSAGES, tools=TOOLS)
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.tool_calls is None
    r = client.chat.completions.create(
        model="gpt-emu@tool=1", messages=MESSAGES, tools=TOOLS, tool_choice="none"
    )
    assert r.choices[0].finish_reason == "stop"


def test_named_tool_choice_forces_call(client):
    r = client.chat.completions.create(
        model="gpt-emu",
        messages=MESSAGES,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert r.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_tool_call_streaming(client):
    chunks = list(
        client.chat.completions.create(
            model="gpt-emu@tool=1",
            messages=MESSAGES,
            tools=TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    first = chunks[0].choices[0].delta.tool_calls[0]
    assert (first.index, first.function.name, first.function.arguments) == (0, "get_weather", "")
    assert first.id.startswith("call_")
    pieces = [
        c.choices[0].delta.tool_calls[0].function.arguments
        for c in chunks[1:]
        if c.choices and c.choices[0].delta.tool_calls
    ]
    assert len(pieces) > 1
    assert json.loads("".join(pieces)) == {"city": "tok0", "days": 1, "unit": "c"}
    # Like OpenAI, finish_reason comes in a last chunk with an empty delta.
    last = [c for c in chunks if c.choices][-1]
    assert last.choices[0].finish_reason == "tool_calls" and last.choices[0].delta.tool_calls is None
    assert chunks[-1].usage.completion_tokens == len(pieces)


def test_tool_call_stream_helper(client):
    with client.chat.completions.stream(model="gpt-emu@tool=1", messages=MESSAGES, tools=TOOLS) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] == "tok0"
    assert final.choices[0].finish_reason == "tool_calls"


def test_embeddings_float_and_base64(client):
    floats = client.embeddings.create(
        model="text-embedding-emu", input=["hello world", "bye"], encoding_format="float"
    )
    assert [d.index for d in floats.data] == [0, 1]
    assert len(floats.data[0].embedding) == 16
    assert floats.data[0].embedding == pytest.approx(list(embedding("hello world", 16)))
    assert math.isclose(sum(v * v for v in floats.data[0].embedding), 1.0, rel_tol=1e-6)
    assert floats.usage.prompt_tokens == 3 and floats.usage.total_tokens == 3
    # The SDK asks for base64 by default and decodes it itself.
    decoded = client.embeddings.create(model="text-embedding-emu", input=["hello world", "bye"])
    for a, b in zip(decoded.data, floats.data, strict=True):
        assert list(a.embedding) == pytest.approx(b.embedding, rel=1e-6)
    explicit = client.embeddings.create(
        model="text-embedding-emu", input="hello world", encoding_format="base64", dimensions=32
    )
    assert isinstance(explicit.data[0].embedding, str)


def test_embeddings_dimensions_and_token_arrays(client):
    r = client.embeddings.create(
        model="text-embedding-emu", input=[[1, 2, 3], [4]], dimensions=5, encoding_format="float"
    )
    assert [len(d.embedding) for d in r.data] == [5, 5]
    assert r.usage.prompt_tokens == 4
    assert r.data[0].embedding != r.data[1].embedding


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert "gpt-emu" in ids


def test_rate_limit_and_server_errors(client):
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-emu@status=429", messages=MESSAGES)
    assert info.value.status_code == 429
    assert info.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-emu@status=500", messages=MESSAGES)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gpt-emu@status=503", messages=MESSAGES, stream=True)
    assert info.value.status_code == 503


def test_bad_request_for_unknown_scenario_key(client):
    with pytest.raises(openai.BadRequestError, match="'colour'"):
        client.chat.completions.create(model="gpt-emu@colour=red", messages=MESSAGES)


def test_fail_first(client, unique_key):
    model = f"gpt-emu@fail_first=2,key={unique_key}"
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model=model, messages=MESSAGES)
    assert client.chat.completions.create(model=model, messages=MESSAGES).choices[0].finish_reason == "stop"


def test_fail_first_is_retried_by_the_sdk(emulator_url, unique_key):
    client = openai.OpenAI(base_url=f"{emulator_url}/v1", api_key="x", max_retries=2)
    r = client.chat.completions.create(
        model=f"gpt-emu@fail_first=2,status=429,retry_after_ms=10,key={unique_key}", messages=MESSAGES
    )
    assert r.choices[0].message.content == completion_text(8)


async def test_async_client(emulator_url):
    async with openai.AsyncOpenAI(base_url=f"{emulator_url}/v1", api_key="x", max_retries=0) as client:
        r = await client.chat.completions.create(model="gpt-emu@tokens=3,cached=1", messages=MESSAGES)
        assert r.choices[0].message.content == completion_text(3)
        assert r.usage.prompt_tokens_details.cached_tokens == 1
        stream = await client.chat.completions.create(
            model="gpt-emu@tokens=3", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        text = ""
        usage = None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            usage = chunk.usage or usage
        assert text == completion_text(3)
        assert usage.total_tokens == count_prompt_tokens(MESSAGES) + 3
        async with client.chat.completions.stream(model="gpt-emu@tokens=2", messages=MESSAGES) as s:
            final = await s.get_final_completion()
        assert final.choices[0].message.content == completion_text(2)
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="gpt-emu@status=429", messages=MESSAGES)
