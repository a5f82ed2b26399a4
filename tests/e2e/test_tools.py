"""Tools over the whole stack: the three tool formats (a Type Registry reference, an inline GTS
schema, a function) through the edge with the official ``openai`` SDK against each chat wire
format, sync and streaming; rejections naming the tool; parallel calls streamed over Kafka
with the SDK assembling to the whole answer; tool results round-tripping."""

from __future__ import annotations

from typing import Any

import jsonschema
import openai
import orjson
import pytest

from services.contracts.errors import ValidationError

from .test_edge_openai import DEMO_KEY

ALIASES = ["demo-openai", "demo-anthropic", "demo-ollama"]
WEATHER_ID = "gts.llmgw.demo.tools.get_weather.v1~"
WEATHER_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city"],
}
FORMATS: dict[str, dict[str, Any]] = {
    "gts_ref": {"type": "gts_ref", "gts_id": WEATHER_ID},
    "gts": {
        "type": "gts",
        "schema": {
            "$id": f"gts://{WEATHER_ID}",
            "title": "get_weather",
            "description": "The current weather in a city.",
            **WEATHER_PARAMS,
        },
    },
    "function": {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather.",
            "parameters": WEATHER_PARAMS,
        },
    },
}
TIME = {
    "type": "gts",
    "schema": {
        "$id": "gts://gts.llmgw.demo.tools.get_time.v1~",
        "title": "get_time",
        "type": "object",
        "properties": {"tz": {"type": "string"}},
        "required": ["tz"],
    },
}
ASK = [{"role": "user", "content": "what is the weather in Paris?"}]


@pytest.fixture(scope="module")
def client(edge_url: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=DEMO_KEY, base_url=f"{edge_url}/v1", max_retries=0, timeout=30)


@pytest.fixture
def aclient(edge_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=DEMO_KEY, base_url=f"{edge_url}/v1", max_retries=0, timeout=30)


def _scenario(s: str) -> dict[str, Any]:
    return {"emulator_scenario": s}


def _check_weather_call(name: str, arguments: str) -> None:
    assert name == "get_weather"
    jsonschema.validate(orjson.loads(arguments), WEATHER_PARAMS)


@pytest.mark.parametrize("alias", ALIASES)
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_tool_format_against_each_wire_format(client: openai.OpenAI, alias: str, fmt: str) -> None:
    completion = client.chat.completions.create(
        model=alias,
        messages=ASK,
        tools=[FORMATS[fmt]],  # type: ignore[list-item]
        extra_body=_scenario("tool=1"),
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.id and call.type == "function"
    _check_weather_call(call.function.name, call.function.arguments)


def _assemble(chunks: list[Any]) -> tuple[dict[int, dict[str, Any]], str | None]:
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for c in chunks:
        if not c.choices:
            continue
        for tc in c.choices[0].delta.tool_calls or []:
            if tc.index not in calls:
                assert tc.id and tc.function and tc.function.name, "a call's first delta has its id and name"
                calls[tc.index] = {"id": tc.id, "name": tc.function.name, "arguments": ""}
            else:
                assert tc.id is None or tc.id == calls[tc.index]["id"]
            calls[tc.index]["arguments"] += (tc.function.arguments or "") if tc.function else ""
        finish = c.choices[0].finish_reason or finish
    return calls, finish


@pytest.mark.parametrize("alias", ALIASES)
async def test_streamed_calls_assemble_to_the_whole_answer(aclient: openai.AsyncOpenAI, alias: str) -> None:
    tools = [FORMATS["gts_ref"], TIME]
    whole = await aclient.chat.completions.create(
        model=alias,
        messages=ASK,
        tools=tools,  # type: ignore[arg-type]
        extra_body=_scenario("tools=2"),
    )
    stream = await aclient.chat.completions.create(
        model=alias,
        messages=ASK,
        tools=tools,
        stream=True,  # type: ignore[arg-type]
        extra_body=_scenario("tools=2"),
    )
    calls, finish = _assemble([c async for c in stream])
    assert finish == "tool_calls"
    expected = whole.choices[0].message.tool_calls or []
    assert [(c["name"], orjson.loads(c["arguments"])) for _, c in sorted(calls.items())] == [
        (e.function.name, orjson.loads(e.function.arguments)) for e in expected
    ]
    assert [c["name"] for c in calls.values()] == ["get_weather", "get_time"]
    if alias == "demo-ollama":  # Ollama sends no ids: the gateway's are the same for the same answer
        assert [c["id"] for _, c in sorted(calls.items())] == [e.id for e in expected]


@pytest.mark.parametrize("alias", ALIASES)
def test_tool_results_round_trip(client: openai.OpenAI, alias: str) -> None:
    tools = [FORMATS["gts_ref"], TIME]
    first = client.chat.completions.create(
        model=alias,
        messages=ASK,
        tools=tools,  # type: ignore[arg-type]
        extra_body=_scenario("tools=2"),
    )
    calls = first.choices[0].message.tool_calls or []
    assert len(calls) == 2
    messages = [
        *ASK,
        first.choices[0].message.model_dump(exclude_none=True),
        *({"role": "tool", "tool_call_id": c.id, "content": f"{c.function.name}: fine"} for c in calls),
    ]
    second = client.chat.completions.create(
        model=alias,
        messages=messages,
        tools=tools,  # type: ignore[arg-type]
        extra_body=_scenario("tools=2"),
    )
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content


@pytest.mark.parametrize("alias", ["demo-openai", "demo-anthropic", "demo-ollama"])
def test_tool_choice_none_and_named(client: openai.OpenAI, alias: str) -> None:
    tools = [FORMATS["function"], TIME]
    text = client.chat.completions.create(
        model=alias,
        messages=ASK,
        tools=tools,
        tool_choice="none",  # type: ignore[arg-type]
        extra_body=_scenario("tools=2"),
    )
    assert text.choices[0].message.tool_calls is None and text.choices[0].message.content
    named = client.chat.completions.create(
        model=alias,
        messages=ASK,
        tools=tools,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        extra_body=_scenario("tools=2"),
    )
    assert {c.function.name for c in named.choices[0].message.tool_calls or []} == {"get_time"}


@pytest.mark.parametrize(
    ("tool", "message"),
    [
        (
            {"type": "gts_ref", "gts_id": "gts.llmgw.demo.tools.get_rain.v1~"},
            "tools[0]: unknown type gts.llmgw.demo.tools.get_rain.v1~",
        ),
        (
            {"type": "gts_ref", "gts_id": "gts.llmgw.demo.tools.get_weather.v1"},
            "tools[0]: gts_id 'gts.llmgw.demo.tools.get_weather.v1' is not a GTS type id",
        ),
        (
            {"type": "gts", "schema": {**FORMATS["gts"]["schema"], "$id": "https://example.com/weather"}},
            "tools[0]: schema $id 'https://example.com/weather' is not gts://",
        ),
        (
            {"type": "gts", "schema": {k: v for k, v in FORMATS["gts"]["schema"].items() if k != "title"}},
            "tools[0]: the schema needs a title",
        ),
    ],
)
def test_bad_tools_are_a_400_naming_the_tool(
    client: openai.OpenAI, tool: dict[str, Any], message: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="demo-openai", messages=ASK, tools=[tool])  # type: ignore[list-item]
    assert err.value.code == "validation_error" and err.value.param == "tools[0]"
    assert message in err.value.message


# --- over Kafka with the gateway SDK -------------------------------------------------------------------


async def test_sdk_parallel_calls_stream_and_assemble(gw: Any) -> None:
    tools = [FORMATS["gts_ref"], TIME]
    whole = await gw.chat(model="demo-anthropic", messages=ASK, tools=tools, emulator_scenario="tools=3")
    assert whole.finish_reason == "tool_calls"
    calls: dict[int, dict[str, Any]] = {}
    final = None
    async for chunk in gw.stream_chat(
        model="demo-anthropic", messages=ASK, tools=tools, emulator_scenario="tools=3"
    ):
        for tc in chunk.delta.tool_calls or []:
            cur = calls.setdefault(tc.index, {"id": tc.id, "name": tc.name, "arguments": ""})
            assert cur["id"] and cur["name"], "id and name arrive with a call's first delta"
            cur["arguments"] += tc.arguments
        final = chunk
    assert final is not None and final.final and final.finish_reason == "tool_calls"
    assert [(c["name"], orjson.loads(c["arguments"])) for _, c in sorted(calls.items())] == [
        (t.function.name, orjson.loads(t.function.arguments)) for t in whole.message.tool_calls
    ]
    assert [c["name"] for _, c in sorted(calls.items())] == ["get_weather", "get_time", "get_weather"]
    assert all(c["id"].startswith("toolu_") for c in calls.values()), "the provider's ids are kept"


async def test_sdk_unknown_reference_is_validation_error(gw: Any) -> None:
    with pytest.raises(ValidationError, match="unknown type gts.llmgw.demo.tools.nope.v1~") as err:
        await gw.chat(
            model="demo-ollama",
            messages=ASK,
            tools=[{"type": "gts_ref", "gts_id": "gts.llmgw.demo.tools.nope.v1~"}],
        )
    assert err.value.param == "tools[0]"
