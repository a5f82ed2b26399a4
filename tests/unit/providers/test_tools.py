"""Tools, per chat adapter (STYLE 19): the unified tools, ``tool_choice`` and parallel calls in
each provider's format; tool calls back in the unified format with the provider's ids (stable
generated ones where the provider has none); streamed calls (id and name first, then argument
pieces) that assemble to the whole answer; tool results that round-trip. The pure mapping is
checked alone, the rest against the emulator's wire formats."""

from __future__ import annotations

from typing import Any

import jsonschema
import orjson
import pytest

from services.contracts.errors import ProviderError
from services.executor.providers.ollama import OllamaAdapter, call_id
from services.executor.providers.transport import HttpTransport

from .emulated import CHAT, KINDS, assembled, emulator, request, target

__all__ = ["emulator"]

WEATHER_PARAMS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TIME_PARAMS = {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": WEATHER_PARAMS,
        "strict": False,
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": TIME_PARAMS}}
TOOLS = [WEATHER, TIME]
PARAMS = {"get_weather": WEATHER_PARAMS, "get_time": TIME_PARAMS}
ASK = {"role": "user", "content": "weather and time in Paris?"}

#: ``tools`` as each provider takes them.
WIRE_TOOLS = {
    "openai": TOOLS,
    "anthropic": [
        {"name": "get_weather", "description": "Weather in a city", "input_schema": WEATHER_PARAMS},
        {"name": "get_time", "input_schema": TIME_PARAMS},
    ],
    "ollama": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": WEATHER_PARAMS,
            },
        },
        {"type": "function", "function": {"name": "get_time", "parameters": TIME_PARAMS}},
    ],
    "gemini": [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather in a city",
                    "parametersJsonSchema": WEATHER_PARAMS,
                },
                {"name": "get_time", "parametersJsonSchema": TIME_PARAMS},
            ]
        }
    ],
}
NAMED = {"type": "function", "function": {"name": "get_time"}}
#: tool_choice -> what each provider's body holds: (tool_choice, names of the tools sent).
CHOICES: dict[str, list[tuple[Any, dict[str, tuple[Any, list[str] | None]]]]] = {
    "openai": [
        ("auto", ("auto", ["get_weather", "get_time"])),
        ("none", ("none", ["get_weather", "get_time"])),
        ("required", ("required", ["get_weather", "get_time"])),
        (NAMED, (NAMED, ["get_weather", "get_time"])),
    ],
    "anthropic": [
        ("auto", ({"type": "auto"}, ["get_weather", "get_time"])),
        ("none", ({"type": "none"}, ["get_weather", "get_time"])),
        ("required", ({"type": "any"}, ["get_weather", "get_time"])),
        (NAMED, ({"type": "tool", "name": "get_time"}, ["get_weather", "get_time"])),
    ],
    "ollama": [  # no tool_choice: it picks the tools sent
        ("auto", (None, ["get_weather", "get_time"])),
        ("none", (None, None)),
        ("required", (None, ["get_weather", "get_time"])),
        (NAMED, (None, ["get_time"])),
    ],
    "gemini": [  # toolConfig.functionCallingConfig
        ("auto", ({"functionCallingConfig": {"mode": "AUTO"}}, ["get_weather", "get_time"])),
        ("none", ({"functionCallingConfig": {"mode": "NONE"}}, ["get_weather", "get_time"])),
        ("required", ({"functionCallingConfig": {"mode": "ANY"}}, ["get_weather", "get_time"])),
        (
            NAMED,
            (
                {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}},
                ["get_weather", "get_time"],
            ),
        ),
    ],
}


def _names(body: dict[str, Any]) -> list[str] | None:
    if "tools" not in body:
        return None
    tools = [d for t in body["tools"] for d in t.get("functionDeclarations", [t])]  # Gemini nests them
    return [t.get("name") or t["function"]["name"] for t in tools]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --- the pure mapping ------------------------------------------------------------------------------


def test_every_chat_adapter_has_tool_expectations() -> None:
    assert set(WIRE_TOOLS) == set(CHOICES) == set(CHAT)


def test_unified_tools_in_each_provider_format(kind: str) -> None:
    body = CHAT[kind].to_wire(request(ASK, tools=TOOLS), target(kind), stream=False)
    assert body["tools"] == WIRE_TOOLS[kind]


@pytest.mark.parametrize(("kind", "choice", "expected"), [(k, c, e) for k in KINDS for c, e in CHOICES[k]])
def test_tool_choice_in_each_provider_format(
    kind: str, choice: Any, expected: tuple[Any, list[str] | None]
) -> None:
    body = CHAT[kind].to_wire(request(ASK, tools=TOOLS, tool_choice=choice), target(kind), stream=True)
    assert (body.get("tool_choice", body.get("toolConfig")), _names(body)) == expected


def test_parallel_tool_calls_off(kind: str) -> None:
    body = CHAT[kind].to_wire(
        request(ASK, tools=TOOLS, extra={"parallel_tool_calls": False}), target(kind), stream=False
    )
    expected = {
        "openai": ("parallel_tool_calls", False),
        "anthropic": ("tool_choice", {"type": "auto", "disable_parallel_tool_use": True}),
        "ollama": ("parallel_tool_calls", None),  # no equivalent: dropped
        "gemini": ("parallel_tool_calls", None),  # no equivalent: dropped
    }[kind]
    assert body.get(expected[0]) == expected[1]


def test_anthropic_named_choice_keeps_parallel_off() -> None:
    body = CHAT["anthropic"].to_wire(
        request(ASK, tools=TOOLS, tool_choice=NAMED, extra={"parallel_tool_calls": False}),
        target("anthropic"),
        stream=False,
    )
    assert body["tool_choice"] == {"type": "tool", "name": "get_time", "disable_parallel_tool_use": True}
    none = CHAT["anthropic"].to_wire(
        request(ASK, tools=TOOLS, tool_choice="none", extra={"parallel_tool_calls": False}),
        target("anthropic"),
        stream=False,
    )
    assert none["tool_choice"] == {"type": "none"}, "Anthropic refuses disable_parallel_tool_use with none"


CONVERSATION = [
    ASK,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "id-w",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {
                "id": "id-t",
                "type": "function",
                "function": {"name": "get_time", "arguments": '{"tz": "CET"}'},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "id-w", "content": "18C"},
    {"role": "tool", "tool_call_id": "id-t", "content": "14:05"},
]


def test_tool_results_refer_to_their_calls(kind: str) -> None:
    body = CHAT[kind].to_wire(request(*CONVERSATION, tools=TOOLS), target(kind), stream=False)
    msgs = body.get("messages") or body["contents"]
    if kind == "openai":
        assert [m.get("tool_call_id") for m in msgs[2:]] == ["id-w", "id-t"]
        assert [c["id"] for c in msgs[1]["tool_calls"]] == ["id-w", "id-t"]
    elif kind == "anthropic":
        assert [b["id"] for b in msgs[1]["content"]] == ["id-w", "id-t"]
        assert [(b["type"], b["tool_use_id"]) for b in msgs[2]["content"]] == [
            ("tool_result", "id-w"),
            ("tool_result", "id-t"),
        ]
        assert msgs[1]["content"][0]["input"] == {"city": "Paris"}
    elif kind == "gemini":  # by name, and by id when the id is not one the gateway made
        assert [p["functionCall"]["id"] for p in msgs[1]["parts"]] == ["id-w", "id-t"]
        assert [(p["functionResponse"]["name"], p["functionResponse"]["id"]) for p in msgs[2]["parts"]] == [
            ("get_weather", "id-w"),
            ("get_time", "id-t"),
        ]
        assert msgs[1]["parts"][0]["functionCall"]["args"] == {"city": "Paris"}
    else:  # Ollama matches results to calls by name
        assert [m.get("tool_name") for m in msgs[2:]] == ["get_weather", "get_time"]
        assert msgs[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Paris"}}


def test_ollama_generated_ids_are_stable_and_distinct() -> None:
    body = {
        "model": "m",
        "done": True,
        "done_reason": "stop",
        "message": {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "f", "arguments": {"a": 1}}},
                {"function": {"index": 1, "name": "f", "arguments": {"a": 1}}},
                {"id": "own-id", "function": {"name": "f", "arguments": {"a": 2}}},
            ],
        },
    }
    first = OllamaAdapter().from_wire(body).message.tool_calls or []
    again = OllamaAdapter().from_wire(orjson.loads(orjson.dumps(body))).message.tool_calls or []
    assert [c.id for c in first] == [c.id for c in again]
    assert first[0].id == call_id(0, "f", '{"a":1}') and first[0].id.startswith("call_")
    assert first[0].id != first[1].id, "the same call at another position is another call"
    assert first[2].id == "own-id", "an id the server sent is kept"
    assert call_id(0, "f", '{"a":1}') != call_id(0, "f", '{"a":2}') != call_id(0, "g", '{"a":2}')


# --- against the emulator ----------------------------------------------------------------------------


async def test_tool_calls_come_back_unified(kind: str, emulator: HttpTransport) -> None:
    done = await CHAT[kind].complete(emulator, request(ASK, tools=TOOLS), target(kind, "tools=2"), None)
    assert done.finish_reason == "tool_calls" and not done.message.content
    calls = done.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert all(c.id for c in calls) and len({c.id for c in calls}) == len(calls)
    for c in calls:
        jsonschema.validate(orjson.loads(c.function.arguments), PARAMS[c.function.name])
    prefix = {"openai": "call_", "anthropic": "toolu_", "ollama": "call_", "gemini": "call_"}[kind]
    assert all(c.id.startswith(prefix) for c in calls)


async def test_streamed_tool_calls_assemble_to_the_whole_answer(kind: str, emulator: HttpTransport) -> None:
    req, dep = request(ASK, tools=TOOLS), target(kind, "tools=3")
    whole = (await CHAT[kind].complete(emulator, req, dep, None)).message.tool_calls or []
    deltas = [d async for d in CHAT[kind].stream(emulator, req, dep, None)]

    seen: set[int] = set()
    for tc in (tc for d in deltas for tc in d.tool_calls or ()):
        if tc.index not in seen:  # a call's first delta names it
            assert tc.id and tc.name, f"call {tc.index} began without its id and name: {tc}"
            seen.add(tc.index)
        else:
            assert tc.id is None and tc.name is None, "id and name come once, first"
    assert deltas[-1].finish_reason == "tool_calls"
    calls = assembled(deltas)
    assert [(c.index, c.name) for c in calls] == [(0, "get_weather"), (1, "get_time"), (2, "get_weather")]
    assert [orjson.loads(c.arguments) for c in calls] == [orjson.loads(w.function.arguments) for w in whole]
    if kind in ("ollama", "gemini"):  # generated ids: the same answer names its calls alike
        assert [c.id for c in calls] == [w.id for w in whole]


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_choice_reaches_the_provider(kind: str, stream: bool, emulator: HttpTransport) -> None:
    adapter, dep = CHAT[kind], target(kind, "tools=2")

    async def calls(choice: Any) -> tuple[list[str], str]:
        req = request(ASK, tools=TOOLS, tool_choice=choice)
        if stream:
            deltas = [d async for d in adapter.stream(emulator, req, dep, None)]
            return [c.name or "" for c in assembled(deltas)], "".join(d.content or "" for d in deltas)
        done = await adapter.complete(emulator, req, dep, None)
        return [c.function.name for c in done.message.tool_calls or []], done.message.content or ""

    names, text = await calls("none")
    assert names == [] and text, "none: a text answer"
    names, _ = await calls(NAMED)
    assert names and set(names) == {"get_time"}, "a named tool: only that one is called"
    names, _ = await calls("auto")
    assert names == ["get_weather", "get_time"]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_parallel_calls_off_gives_one_call(kind: str, emulator: HttpTransport) -> None:
    req = request(ASK, tools=TOOLS, extra={"parallel_tool_calls": False})
    done = await CHAT[kind].complete(emulator, req, target(kind, "tools=3"), None)
    assert [c.function.name for c in done.message.tool_calls or []] == ["get_weather"]


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_results_round_trip(kind: str, stream: bool, emulator: HttpTransport) -> None:
    """The calls as they came back, answered by tool results naming their ids: the provider
    accepts the conversation (the emulator refuses results that answer no call) and answers."""
    adapter, dep = CHAT[kind], target(kind, "tools=2")
    first = await adapter.complete(emulator, request(ASK, tools=TOOLS), dep, None)
    calls = first.message.tool_calls or []
    assert len(calls) == 2
    follow = request(
        ASK,
        {"role": "assistant", "content": None, "tool_calls": [c.model_dump() for c in calls]},
        *({"role": "tool", "tool_call_id": c.id, "content": f"result of {c.function.name}"} for c in calls),
        tools=TOOLS,
    )
    if stream:
        deltas = [d async for d in adapter.stream(emulator, follow, dep, None)]
        text, finish = "".join(d.content or "" for d in deltas), deltas[-1].finish_reason
    else:
        done = await adapter.complete(emulator, follow, dep, None)
        text, finish = done.message.content or "", done.finish_reason
    assert text and finish == "stop"


async def test_a_result_naming_no_call_is_refused(emulator: HttpTransport) -> None:
    """The round trip above proves something: ids that do not match are refused."""
    bad = request(
        ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "toolu_real",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_other", "content": "x"},
        tools=TOOLS,
    )
    with pytest.raises(ProviderError, match="HTTP 400"):
        await CHAT["anthropic"].complete(emulator, bad, target("anthropic"), None)
