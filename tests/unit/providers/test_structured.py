"""Structured output, per chat adapter (STYLE 19): ``response_format`` goes natively (OpenAI
as is, Anthropic as a forced answer tool mapped back to text, Ollama ``format``), and the
answer comes back as text content with finish reason ``stop``, sync and streaming. Whether
the text conforms is the executor's check (tests/unit/executor/test_structured.py); here the
emulator's conforming and violating answers are only told apart."""

from __future__ import annotations

from typing import Any

import jsonschema
import orjson
import pytest

from services.contracts.errors import CapabilityNotSupported, ValidationError
from services.executor.providers.anthropic import ANSWER_TOOL, AnthropicAdapter, AnthropicStreamParser
from services.executor.providers.transport import HttpTransport

from .emulated import CHAT, KINDS, emulator, request, target
from .support import feed_all

__all__ = ["emulator"]

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "temperature_c": {"type": "number", "minimum": -90, "maximum": 60},
        "conditions": {
            "type": "array",
            "items": {"type": "string", "enum": ["sun", "rain", "snow"]},
            "minItems": 1,
        },
    },
    "required": ["city", "temperature_c", "conditions"],
    "additionalProperties": False,
}
JSON_SCHEMA = {
    "type": "json_schema",
    "json_schema": {"name": "weather_report", "schema": SCHEMA, "strict": True},
}
JSON_OBJECT = {"type": "json_object"}
ASK = {"role": "user", "content": "the weather in Paris, as json"}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --- the pure mapping ------------------------------------------------------------------------------


def test_openai_sends_response_format_as_is() -> None:
    for rf in (JSON_SCHEMA, JSON_OBJECT):
        assert (
            CHAT["openai"].to_wire(request(ASK, response_format=rf), target("openai"), stream=True)[
                "response_format"
            ]
            == rf
        )


def test_ollama_sends_format() -> None:
    ollama = CHAT["ollama"]
    assert (
        ollama.to_wire(request(ASK, response_format=JSON_SCHEMA), target("ollama"), stream=False)["format"]
        == SCHEMA
    )
    assert (
        ollama.to_wire(request(ASK, response_format=JSON_OBJECT), target("ollama"), stream=False)["format"]
        == "json"
    )


def test_anthropic_forces_an_answer_tool() -> None:
    body = CHAT["anthropic"].to_wire(
        request(ASK, response_format=JSON_SCHEMA), target("anthropic"), stream=False
    )
    (tool,) = body["tools"]
    assert (tool["name"], tool["input_schema"]) == ("weather_report", SCHEMA)
    assert body["tool_choice"] == {
        "type": "tool",
        "name": "weather_report",
        "disable_parallel_tool_use": True,
    }
    assert "response_format" not in body


@pytest.mark.parametrize(
    ("response_format", "name", "schema"),
    [
        (JSON_OBJECT, ANSWER_TOOL, {"type": "object"}),
        ({"type": "json_schema", "json_schema": {"schema": SCHEMA}}, ANSWER_TOOL, SCHEMA),
        (
            {"type": "json_schema", "json_schema": {"name": "not a tool name!", "schema": SCHEMA}},
            ANSWER_TOOL,
            SCHEMA,
        ),
    ],
)
def test_anthropic_answer_tool_name_and_schema(
    response_format: dict[str, Any], name: str, schema: Any
) -> None:
    body = CHAT["anthropic"].to_wire(
        request(ASK, response_format=response_format), target("anthropic"), stream=False
    )
    assert [(t["name"], t["input_schema"]) for t in body["tools"]] == [(name, schema)]
    assert body["tool_choice"]["name"] == name


def test_anthropic_answer_tool_beside_the_callers_tools() -> None:
    adapter, dep = CHAT["anthropic"], target("anthropic")
    body = adapter.to_wire(request(ASK, tools=[TOOL], response_format=JSON_SCHEMA), dep, stream=False)
    assert [t["name"] for t in body["tools"]] == ["get_weather", "weather_report"]
    assert body["tool_choice"] == {"type": "any"}, "a tool call or the answer"
    auto = adapter.to_wire(
        request(ASK, tools=[TOOL], tool_choice="auto", response_format=JSON_SCHEMA), dep, stream=False
    )
    assert auto["tool_choice"] == {"type": "auto"}, "the caller's choice stands"


def test_anthropic_refuses_what_it_cannot_express() -> None:
    adapter, dep = CHAT["anthropic"], target("anthropic")
    clash = {"type": "function", "function": {"name": "weather_report", "parameters": {"type": "object"}}}
    with pytest.raises(ValidationError, match="the name of the structured-output answer"):
        adapter.to_wire(request(ASK, tools=[clash], response_format=JSON_SCHEMA), dep, stream=False)
    array = {"type": "json_schema", "json_schema": {"name": "xs", "schema": {"type": "array"}}}
    with pytest.raises(CapabilityNotSupported, match="root is an object") as err:
        adapter.to_wire(request(ASK, response_format=array), dep, stream=False)
    assert err.value.param == "response_format"


ANTHROPIC_ANSWER = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "stop_reason": "tool_use",
    "content": [
        {
            "type": "tool_use",
            "id": "toolu_a",
            "name": "weather_report",
            "input": {"city": "Paris", "temperature_c": 18, "conditions": ["sun"]},
        }
    ],
    "usage": {"input_tokens": 10, "output_tokens": 5},
}


def test_anthropic_answer_tool_reads_back_as_text() -> None:
    req = request(ASK, response_format=JSON_SCHEMA)
    done = AnthropicAdapter().from_wire(ANTHROPIC_ANSWER, req)
    assert done.finish_reason == "stop" and done.message.tool_calls is None
    assert orjson.loads(done.message.content or "") == {
        "city": "Paris",
        "temperature_c": 18,
        "conditions": ["sun"],
    }
    plain = AnthropicAdapter().from_wire(ANTHROPIC_ANSWER)  # a request without response_format
    assert plain.finish_reason == "tool_calls" and plain.message.tool_calls and plain.message.content is None


def test_anthropic_answer_beside_a_real_tool_call() -> None:
    body = {
        **ANTHROPIC_ANSWER,
        "content": [
            {"type": "tool_use", "id": "toolu_w", "name": "get_weather", "input": {"city": "Paris"}},
            *ANTHROPIC_ANSWER["content"],
        ],
    }  # type: ignore[misc]
    done = AnthropicAdapter().from_wire(body, request(ASK, tools=[TOOL], response_format=JSON_SCHEMA))
    assert [c.id for c in done.message.tool_calls or []] == ["toolu_w"]
    assert done.finish_reason == "tool_calls" and orjson.loads(done.message.content or "")["city"] == "Paris"


ANTHROPIC_ANSWER_STREAM = "\n".join(
    [
        "event: message_start",
        'data: {"type":"message_start","message":{"model":"claude-x","usage":{"input_tokens":10,"output_tokens":1}}}',
        "event: content_block_start",
        'data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_a",'
        '"name":"weather_report","input":{}}}',
        "event: content_block_delta",
        'data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\\"city\\": "}}',
        "event: content_block_delta",
        'data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"\\"Paris\\"}"}}',
        "event: content_block_stop",
        'data: {"type":"content_block_stop","index":0}',
        "event: message_delta",
        'data: {"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":5}}',
        "event: message_stop",
        'data: {"type":"message_stop"}',
    ]
)


def test_anthropic_stream_answer_tool_is_content() -> None:
    deltas = feed_all(AnthropicStreamParser("anthropic", "weather_report"), ANTHROPIC_ANSWER_STREAM)
    assert [d.content for d in deltas if d.content] == ['{"city": ', '"Paris"}']
    assert not any(d.tool_calls for d in deltas)
    assert deltas[-1].finish_reason == "stop"
    plain = feed_all(AnthropicStreamParser(), ANTHROPIC_ANSWER_STREAM)
    assert plain[-1].finish_reason == "tool_calls" and not any(d.content for d in plain)


# --- against the emulator ----------------------------------------------------------------------------


async def _answer(
    kind: str, emu: HttpTransport, rf: dict[str, Any], scenario: str, stream: bool
) -> tuple[str, str]:
    adapter, req, dep = CHAT[kind], request(ASK, response_format=rf), target(kind, scenario)
    if stream:
        deltas = [d async for d in adapter.stream(emu, req, dep, None)]
        assert not any(d.tool_calls for d in deltas)
        return "".join(d.content or "" for d in deltas), deltas[-1].finish_reason or ""
    done = await adapter.complete(emu, req, dep, None)
    assert done.message.tool_calls is None
    return done.message.content or "", done.finish_reason


@pytest.mark.parametrize("stream", [False, True])
async def test_json_schema_answer_is_text_that_conforms(
    kind: str, stream: bool, emulator: HttpTransport
) -> None:
    text, finish = await _answer(kind, emulator, JSON_SCHEMA, "", stream)
    assert finish == "stop"
    jsonschema.validate(orjson.loads(text), SCHEMA)


async def test_streamed_and_whole_answers_agree(kind: str, emulator: HttpTransport) -> None:
    whole, _ = await _answer(kind, emulator, JSON_SCHEMA, "", False)
    streamed, _ = await _answer(kind, emulator, JSON_SCHEMA, "", True)
    assert orjson.loads(streamed) == orjson.loads(whole)


@pytest.mark.parametrize("stream", [False, True])
async def test_schema_violation_reaches_the_gateway_as_text(
    kind: str, stream: bool, emulator: HttpTransport
) -> None:
    text, finish = await _answer(kind, emulator, JSON_SCHEMA, "schema_violation=1", stream)
    assert finish == "stop"
    value = orjson.loads(text)
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(value)


@pytest.mark.parametrize("stream", [False, True])
async def test_json_object_answer(kind: str, stream: bool, emulator: HttpTransport) -> None:
    text, finish = await _answer(kind, emulator, JSON_OBJECT, "", stream)
    assert finish == "stop" and isinstance(orjson.loads(text), dict)
