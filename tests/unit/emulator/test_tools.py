"""Tool calls (parallel too) in the three wire formats, checked with the official SDKs' own types."""

from __future__ import annotations

import json

import anthropic
import httpx
import jsonschema
import openai
import pydantic
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

from services.emulator.text import argument_pieces, arguments_json, completion_text

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer", "minimum": 1},
        "unit": {"type": "string", "enum": ["c", "f"]},
    },
    "required": ["city"],
}
CLOCK = {
    "type": "object",
    "properties": {"tz": {"type": "string"}, "precise": {"type": "boolean"}},
    "required": ["tz", "precise"],
}
SCHEMAS = {"get_weather": WEATHER, "get_time": CLOCK}
OPENAI_TOOLS = [
    {"type": "function", "function": {"name": n, "description": n, "parameters": s}}
    for n, s in SCHEMAS.items()
]
ANTHROPIC_TOOLS = [{"name": n, "description": n, "input_schema": s} for n, s in SCHEMAS.items()]
MESSAGES = [{"role": "user", "content": "what is the weather and the time"}]


def tokens_of(*arguments: dict) -> int:
    return sum(len(argument_pieces(arguments_json(a))) for a in arguments)


@pytest.fixture
def oai(emulator_url):
    with openai.OpenAI(base_url=f"{emulator_url}/v1", api_key="x", max_retries=0) as c:
        yield c


@pytest.fixture
def claude(emulator_url):
    with anthropic.Anthropic(base_url=emulator_url, api_key="x", max_retries=0) as c:
        yield c


@pytest.fixture
def http(emulator_url):
    with httpx.Client(base_url=emulator_url, timeout=10) as c:
        yield c


# --- OpenAI ---------------------------------------------------------------------------------------------


def test_openai_parallel_calls_cycle_through_tools(oai):
    r = oai.chat.completions.create(model="gpt-emu@tools=3", messages=MESSAGES, tools=OPENAI_TOOLS)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time", "get_weather"]
    assert len({c.id for c in calls}) == 3 and all(
        c.id.startswith("call_") and c.type == "function" for c in calls
    )
    arguments = [json.loads(c.function.arguments) for c in calls]
    for call, args in zip(calls, arguments, strict=True):
        jsonschema.validate(args, SCHEMAS[call.function.name])
    # Parallel calls to one tool differ (strings carry the call's index), so mixing them up shows.
    assert arguments[0]["city"] == "tok0" and arguments[2]["city"] == "tok2" and arguments[1]["tz"] == "tok1"
    assert r.usage.completion_tokens == tokens_of(*arguments)


def test_openai_stream_deltas_follow_the_wire_format(oai):
    chunks = list(
        oai.chat.completions.create(
            model="gpt-emu@tools=3",
            messages=MESSAGES,
            tools=OPENAI_TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    openings = [d for d in deltas if d.id is not None]
    assert [d.index for d in openings] == [0, 1, 2]
    for d in openings:
        assert d.type == "function" and d.function.name in SCHEMAS and d.function.arguments == ""
    assert chunks[0].choices[0].delta.role == "assistant"
    # Every argument piece comes after its call's opening and names only the index.
    pieces: dict[int, str] = {}
    opened: set[int] = set()
    for d in deltas:
        if d.id is not None:
            opened.add(d.index)
            continue
        assert d.index in opened and d.type is None and d.function.name is None
        pieces[d.index] = pieces.get(d.index, "") + d.function.arguments
    assert set(pieces) == {0, 1, 2}
    final = [c for c in chunks if c.choices][-1].choices[0]
    assert final.finish_reason == "tool_calls" and final.delta.tool_calls is None
    assert chunks[-1].usage.completion_tokens == tokens_of(*(json.loads(p) for p in pieces.values()))


def test_openai_stream_state_accumulates_the_same_calls_as_non_streaming(oai):
    plain = oai.chat.completions.create(model="gpt-emu@tools=4", messages=MESSAGES, tools=OPENAI_TOOLS)
    state = ChatCompletionStreamState()
    for chunk in oai.chat.completions.create(
        model="gpt-emu@tools=4", messages=MESSAGES, tools=OPENAI_TOOLS, stream=True
    ):
        state.handle_chunk(chunk)
    streamed = state.get_final_completion()
    got = [(c.function.name, c.function.arguments) for c in streamed.choices[0].message.tool_calls]
    want = [(c.function.name, c.function.arguments) for c in plain.choices[0].message.tool_calls]
    assert got == want and len(got) == 4
    assert streamed.choices[0].finish_reason == "tool_calls"


def test_openai_stream_helper_with_parallel_calls(oai):
    with oai.chat.completions.stream(
        model="gpt-emu@tools=2", messages=MESSAGES, tools=OPENAI_TOOLS
    ) as stream:
        done = [e for e in stream if e.type == "tool_calls.function.arguments.done"]
        final = stream.get_final_completion()
    assert [(e.index, e.name) for e in done] == [(0, "get_weather"), (1, "get_time")]
    assert [json.loads(e.arguments) for e in done] == [
        json.loads(c.function.arguments) for c in final.choices[0].message.tool_calls
    ]


def test_openai_tool_choice(oai):
    def names(**kwargs):
        r = oai.chat.completions.create(messages=MESSAGES, tools=OPENAI_TOOLS, **kwargs)
        return [c.function.name for c in r.choices[0].message.tool_calls or []], r.choices[0].finish_reason

    assert names(model="gpt-emu@tools=3", tool_choice="none") == ([], "stop")
    assert names(model="gpt-emu", tool_choice="auto") == ([], "stop")
    assert names(model="gpt-emu", tool_choice="required") == (["get_weather"], "tool_calls")
    assert names(model="gpt-emu@tools=2", tool_choice="required") == (
        ["get_weather", "get_time"],
        "tool_calls",
    )
    named = {"type": "function", "function": {"name": "get_time"}}
    assert names(model="gpt-emu", tool_choice=named) == (["get_time"], "tool_calls")
    assert names(model="gpt-emu@tools=2", tool_choice=named) == (["get_time", "get_time"], "tool_calls")
    assert names(model="gpt-emu@tools=3", parallel_tool_calls=False) == (["get_weather"], "tool_calls")
    allowed = {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": "required",
            "tools": [{"type": "function", "function": {"name": "get_time"}}],
        },
    }
    assert names(model="gpt-emu", tool_choice=allowed) == (["get_time"], "tool_calls")


def test_openai_tool_choice_errors(oai):
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(
            model="gpt-emu",
            messages=MESSAGES,
            tools=OPENAI_TOOLS,
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    assert info.value.param == "tool_choice" and "nope" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="gpt-emu", messages=MESSAGES, tool_choice="auto")
    assert info.value.param == "tool_choice"
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(
            model="gpt-emu", messages=MESSAGES, tools=OPENAI_TOOLS, tool_choice="always"
        )
    assert info.value.param == "tool_choice"


def _round_trip(oai, model="gpt-emu@tools=2"):
    first = oai.chat.completions.create(model=model, messages=MESSAGES, tools=OPENAI_TOOLS).choices[0].message
    results = [{"role": "tool", "tool_call_id": c.id, "content": "sunny 21"} for c in first.tool_calls]
    return [*MESSAGES, first.model_dump(exclude_none=True), *results]


def test_openai_tool_results_get_text(oai):
    history = _round_trip(oai)
    r = oai.chat.completions.create(model="gpt-emu@tools=2,tokens=3", messages=history, tools=OPENAI_TOOLS)
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.content == completion_text(3)
    assert r.choices[0].message.tool_calls is None
    # A forced tool is still honoured after tool results, as by the real API.
    r = oai.chat.completions.create(
        model="gpt-emu", messages=history, tools=OPENAI_TOOLS, tool_choice="required"
    )
    assert r.choices[0].finish_reason == "tool_calls"


def test_openai_rejects_unmatched_tool_results(oai):
    history = _round_trip(oai)
    wrong = [*history[:-1], {**history[-1], "tool_call_id": "call_unknown"}]
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="gpt-emu", messages=wrong, tools=OPENAI_TOOLS)
    assert info.value.status_code == 400 and info.value.param == f"messages.[{len(wrong) - 1}].tool_call_id"
    assert "call_unknown" in info.value.message and info.value.type == "invalid_request_error"
    with pytest.raises(
        openai.BadRequestError
    ) as info:  # a tool message with no assistant tool_calls before it
        oai.chat.completions.create(model="gpt-emu", messages=[*MESSAGES, history[-1]], tools=OPENAI_TOOLS)
    assert info.value.param == "messages.[1].role"
    with pytest.raises(openai.BadRequestError) as info:  # one of two calls left unanswered
        oai.chat.completions.create(
            model="gpt-emu", messages=[*history[:-1], {"role": "user", "content": "and?"}], tools=OPENAI_TOOLS
        )
    assert info.value.param == "messages.[1].role" and history[-1]["tool_call_id"] in info.value.message


class Lookup(pydantic.BaseModel):
    query: str
    limit: int


def test_openai_strict_function_tool_parses(oai):
    r = oai.chat.completions.parse(
        model="gpt-emu",
        messages=MESSAGES,
        tools=[openai.pydantic_function_tool(Lookup)],
        tool_choice="required",
    )
    (call,) = r.choices[0].message.tool_calls
    assert call.function.parsed_arguments == Lookup(query="tok0", limit=1)


def test_openai_strict_function_needs_a_strict_schema(oai):
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER, "strict": True}}
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="gpt-emu", messages=MESSAGES, tools=[tool])
    assert "Invalid schema for function 'get_weather'" in info.value.message
    assert "'additionalProperties' is required to be supplied and to be false" in info.value.message


def test_openai_disconnect_after_counts_argument_pieces(http):
    body = {
        "model": "gpt-emu@tools=2,disconnect_after=2",
        "messages": MESSAGES,
        "tools": OPENAI_TOOLS,
        "stream": True,
    }
    lines = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        http.stream("POST", "/v1/chat/completions", json=body) as r,
    ):
        lines.extend(r.iter_lines())
    argument_chunks = [x for x in lines if '"arguments":"' in x and '"arguments":""' not in x]
    assert len(argument_chunks) == 2 and not any("[DONE]" in x for x in lines)


# --- Anthropic ------------------------------------------------------------------------------------------


def test_anthropic_parallel_tool_use(claude):
    m = claude.messages.create(
        model="claude-emu@tools=3", max_tokens=100, messages=MESSAGES, tools=ANTHROPIC_TOOLS
    )
    assert m.stop_reason == "tool_use"
    assert [b.type for b in m.content] == ["tool_use"] * 3
    assert [b.name for b in m.content] == ["get_weather", "get_time", "get_weather"]
    assert len({b.id for b in m.content}) == 3 and all(b.id.startswith("toolu_") for b in m.content)
    for block in m.content:
        jsonschema.validate(block.input, SCHEMAS[block.name])
    assert m.content[1].input == {"tz": "tok1", "precise": True}
    assert m.usage.output_tokens == tokens_of(*(b.input for b in m.content))


def test_anthropic_wire_stream_blocks(http):
    body = {
        "model": "claude-emu@tools=3",
        "max_tokens": 100,
        "messages": MESSAGES,
        "tools": ANTHROPIC_TOOLS,
        "stream": True,
    }
    events = []
    for frame in http.post("/v1/messages", json=body).text.split("\n\n"):
        if frame:
            name, data = frame.split("\n")
            events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    names = [n for n, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    starts = [d for n, d in events if n == "content_block_start"]
    stops = [d["index"] for n, d in events if n == "content_block_stop"]
    assert [d["index"] for d in starts] == stops == [0, 1, 2]
    for start in starts:
        assert start["content_block"]["type"] == "tool_use" and start["content_block"]["input"] == {}
    # Each block's deltas sit between its start and its stop, and rebuild a conforming input.
    current, buffers = None, {}
    for name, data in events:
        if name == "content_block_start":
            current = data["index"]
        elif name == "content_block_delta":
            assert data["index"] == current and data["delta"]["type"] == "input_json_delta"
            buffers[current] = buffers.get(current, "") + data["delta"]["partial_json"]
        elif name == "content_block_stop":
            assert data["index"] == current
    for start in starts:
        jsonschema.validate(json.loads(buffers[start["index"]]), SCHEMAS[start["content_block"]["name"]])
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_anthropic_stream_accumulator_matches_non_streaming(claude):
    plain = claude.messages.create(
        model="claude-emu@tools=3", max_tokens=100, messages=MESSAGES, tools=ANTHROPIC_TOOLS
    )
    with claude.messages.stream(
        model="claude-emu@tools=3", max_tokens=100, messages=MESSAGES, tools=ANTHROPIC_TOOLS
    ) as stream:
        final = stream.get_final_message()
    assert [(b.type, b.name, b.input) for b in final.content] == [
        (b.type, b.name, b.input) for b in plain.content
    ]
    assert final.stop_reason == "tool_use" and final.usage.output_tokens == plain.usage.output_tokens


def test_anthropic_tool_choice(claude):
    def names(model="claude-emu", **kwargs):
        m = claude.messages.create(
            model=model, max_tokens=100, messages=MESSAGES, tools=ANTHROPIC_TOOLS, **kwargs
        )
        return [b.name for b in m.content if b.type == "tool_use"], m.stop_reason

    assert names() == ([], "end_turn")
    assert names("claude-emu@tools=3", tool_choice={"type": "none"}) == ([], "end_turn")
    assert names(tool_choice={"type": "any"}) == (["get_weather"], "tool_use")
    assert names(tool_choice={"type": "tool", "name": "get_time"}) == (["get_time"], "tool_use")
    assert names("claude-emu@tools=3", tool_choice={"type": "auto", "disable_parallel_tool_use": True}) == (
        ["get_weather"],
        "tool_use",
    )
    assert names("claude-emu@tools=2", tool_choice={"type": "any", "disable_parallel_tool_use": True}) == (
        ["get_weather"],
        "tool_use",
    )
    with pytest.raises(anthropic.BadRequestError) as info:
        names(tool_choice={"type": "tool", "name": "nope"})
    assert info.value.body["error"]["type"] == "invalid_request_error" and "nope" in info.value.message


def _anthropic_round_trip(claude):
    first = claude.messages.create(
        model="claude-emu@tools=2", max_tokens=100, messages=MESSAGES, tools=ANTHROPIC_TOOLS
    )
    results = [{"type": "tool_result", "tool_use_id": b.id, "content": "sunny 21"} for b in first.content]
    return [
        *MESSAGES,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": results},
    ]


def test_anthropic_tool_results_get_text(claude):
    history = _anthropic_round_trip(claude)
    m = claude.messages.create(
        model="claude-emu@tools=2,tokens=4", max_tokens=100, messages=history, tools=ANTHROPIC_TOOLS
    )
    assert m.stop_reason == "end_turn" and [b.type for b in m.content] == ["text"]
    assert m.content[0].text == completion_text(4)
    m = claude.messages.create(
        model="claude-emu",
        max_tokens=100,
        messages=history,
        tools=ANTHROPIC_TOOLS,
        tool_choice={"type": "any"},
    )
    assert m.stop_reason == "tool_use"


def test_anthropic_rejects_unmatched_tool_results(claude):
    history = _anthropic_round_trip(claude)
    results = history[-1]["content"]
    wrong = [
        *history[:-1],
        {"role": "user", "content": [results[0], {**results[1], "tool_use_id": "toolu_nope"}]},
    ]
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model="claude-emu", max_tokens=100, messages=wrong, tools=ANTHROPIC_TOOLS)
    assert info.value.status_code == 400
    assert info.value.body["error"]["type"] == "invalid_request_error"
    assert info.value.body["error"]["message"].startswith(
        "messages.2.content.1: unexpected `tool_use_id` found in `tool_result` blocks: toolu_nope."
    )
    with pytest.raises(anthropic.BadRequestError) as info:  # no tool_use in the message before
        claude.messages.create(
            model="claude-emu",
            max_tokens=100,
            messages=[*MESSAGES, history[1], history[2], {"role": "assistant", "content": "ok"}, history[2]],
            tools=ANTHROPIC_TOOLS,
        )
    assert "messages.4.content.0: unexpected `tool_use_id`" in info.value.message
    with pytest.raises(anthropic.BadRequestError) as info:  # a tool_use left without its result
        claude.messages.create(
            model="claude-emu",
            max_tokens=100,
            messages=[*history[:-1], {"role": "user", "content": [results[0]]}],
            tools=ANTHROPIC_TOOLS,
        )
    assert "messages.1: `tool_use` ids were found without `tool_result` blocks" in info.value.message
    assert results[1]["tool_use_id"] in info.value.message


# --- Ollama ---------------------------------------------------------------------------------------------


def test_ollama_parallel_tool_calls(http):
    body = {"model": "llama-emu@tools=3", "messages": MESSAGES, "tools": OPENAI_TOOLS, "stream": False}
    r = http.post("/api/chat", json=body).json()
    calls = r["message"]["tool_calls"]
    assert r["message"]["content"] == "" and r["done_reason"] == "stop"
    # Ollama's ToolCallFunction.index is omitempty; there are no call ids.
    assert [c["function"].get("index") for c in calls] == [None, 1, 2]
    assert all(set(c) == {"function"} for c in calls)
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time", "get_weather"]
    for call in calls:
        jsonschema.validate(call["function"]["arguments"], SCHEMAS[call["function"]["name"]])
    assert r["eval_count"] == tokens_of(*(c["function"]["arguments"] for c in calls))

    lines = [json.loads(x) for x in http.post("/api/chat", json={**body, "stream": True}).text.splitlines()]
    assert len(lines) == 4 and [x["done"] for x in lines] == [False, False, False, True]
    assert [x["message"]["tool_calls"] for x in lines[:3]] == [[c] for c in calls]
    assert lines[-1]["eval_count"] == r["eval_count"] and "tool_calls" not in lines[-1]["message"]


def test_ollama_tool_result_gets_text(http):
    first = http.post(
        "/api/chat",
        json={"model": "llama-emu@tools=2", "messages": MESSAGES, "tools": OPENAI_TOOLS, "stream": False},
    ).json()["message"]
    history = [
        *MESSAGES,
        first,
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
        {"role": "tool", "content": "noon", "tool_name": "get_time"},
    ]
    r = http.post(
        "/api/chat",
        json={
            "model": "llama-emu@tools=2,tokens=2",
            "messages": history,
            "tools": OPENAI_TOOLS,
            "stream": False,
        },
    ).json()
    assert r["message"] == {"role": "assistant", "content": completion_text(2)}


def test_ollama_no_tools_no_calls(http):
    r = http.post(
        "/api/chat", json={"model": "llama-emu@tools=2", "messages": MESSAGES, "stream": False}
    ).json()
    assert "tool_calls" not in r["message"] and r["message"]["content"] == completion_text(8)


def test_anthropic_consecutive_user_turns_combine(claude):
    """The API combines consecutive same-role messages, so results may be split across them."""
    history = _anthropic_round_trip(claude)
    first, second = history[-1]["content"]
    split = [*history[:-1], {"role": "user", "content": [first]}, {"role": "user", "content": [second]}]
    m = claude.messages.create(
        model="claude-emu@tools=2,tokens=2", max_tokens=100, messages=split, tools=ANTHROPIC_TOOLS
    )
    assert m.stop_reason == "end_turn" and m.content[0].text == completion_text(2)
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(
            model="claude-emu",
            max_tokens=100,
            messages=[
                *history[:-1],
                {"role": "user", "content": [first]},
                {"role": "assistant", "content": "x"},
                {"role": "user", "content": [second]},
            ],
            tools=ANTHROPIC_TOOLS,
        )
    assert "messages.1: `tool_use` ids were found without `tool_result` blocks" in info.value.message
