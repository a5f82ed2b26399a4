"""Tools in three formats -> the unified function format, before planning: each format, every
rejection (naming ``tools[i]``), the registry lookups, and the plan that carries the result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.contracts.errors import CapabilityNotSupported, InternalError, ValidationError
from services.contracts.events import ChatRequested
from services.router.handlers import plan
from services.router.tools import normalise, referenced, registry_schemas, with_tools
from services.runtime.config import load_config
from services.runtime.types import DirectoryTypeRegistry, TypeRegistryUnavailable, UnknownType

ROOT = Path(__file__).resolve().parents[3]
WEATHER_ID = "gts.llmgw.demo.tools.get_weather.v1~"
WEATHER_PARAMS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name, e.g. Paris"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Temperature unit"},
    },
    "required": ["city"],
}
WEATHER_FUNCTION = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": WEATHER_PARAMS,
    },
}
TIME_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "gts://gts.acme.clock.tools.get_time.v2.1~",
    "title": "get_time",
    "description": "Time in a zone",
    "type": "object",
    "properties": {"tz": {"type": "string"}},
    "required": ["tz"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def config():
    return load_config(ROOT / "config" / "demo.yaml", env={})


@pytest.fixture(scope="module")
def demo_types() -> DirectoryTypeRegistry:
    return DirectoryTypeRegistry(ROOT / "config" / "types")


def req(tools: list[dict[str, Any]], **params: Any) -> ChatRequested:
    return ChatRequested.model_validate(
        {
            "request_id": "r1",
            "tenant_id": "demo",
            "model": "demo-openai",
            "messages": [{"role": "user", "content": "weather?"}],
            "params": {"tools": tools, **params},
        }
    )


async def test_gts_ref_resolves_through_the_registry(demo_types: DirectoryTypeRegistry) -> None:
    tools = [{"type": "gts_ref", "gts_id": WEATHER_ID}]
    schemas = await registry_schemas(tools, demo_types)
    assert normalise(tools, schemas) == [WEATHER_FUNCTION]


def test_inline_gts_schema_becomes_a_function() -> None:
    (tool,) = normalise([{"type": "gts", "schema": TIME_SCHEMA}], {})
    assert tool == {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Time in a zone",
            "parameters": {
                "type": "object",
                "properties": {"tz": {"type": "string"}},
                "required": ["tz"],
                "additionalProperties": False,
            },
        },
    }


def test_inline_schema_without_description_has_no_description() -> None:
    schema = {k: v for k, v in TIME_SCHEMA.items() if k != "description"}
    (tool,) = normalise([{"type": "gts", "schema": schema}], {})
    assert "description" not in tool["function"]


def test_function_tools_pass_as_they_are() -> None:
    strict = {"type": "function", "function": {**WEATHER_FUNCTION["function"], "strict": True}}
    assert normalise([strict], {}) == [strict]


def test_three_formats_in_one_request_keep_their_order(demo_types: DirectoryTypeRegistry) -> None:
    echo = {"type": "function", "function": {"name": "echo", "parameters": {"type": "object"}}}
    builtin = {"type": "web_search_20250305", "name": "web_search"}
    tools = [echo, {"type": "gts", "schema": TIME_SCHEMA}, builtin, {"type": "gts_ref", "gts_id": WEATHER_ID}]
    out = normalise(tools, {WEATHER_ID: {"title": "get_weather", "type": "object"}})
    assert [t.get("function", {}).get("name") for t in out] == ["echo", "get_time", None, "get_weather"]
    assert out[2] is builtin, "a provider's own tool types pass unchanged"


@pytest.mark.parametrize(
    ("tool", "message"),
    [
        ({"type": "gts_ref", "gts_id": "gts.llmgw.demo.tools.get_weather.v01~"}, "is not a GTS type id"),
        ({"type": "gts_ref", "gts_id": "gts.llmgw.demo.tools.get_weather"}, "is not a GTS type id"),
        ({"type": "gts_ref"}, "gts_id None is not a GTS type id"),
        (
            {"type": "gts_ref", "gts_id": "gts.llmgw.demo.tools.get_rain.v1~"},
            r"unknown type gts.llmgw.demo.tools.get_rain.v1~ \(not in the type registry\)",
        ),
        (
            {"type": "gts", "schema": {**TIME_SCHEMA, "$id": "gts.acme.clock.tools.get_time.v2~"}},
            "is not gts://<GTS type id>",
        ),
        (
            {"type": "gts", "schema": {**TIME_SCHEMA, "$id": "gts://gts.acme.Clock.tools.get_time.v2~"}},
            "is not gts://<GTS type id>",
        ),
        (
            {"type": "gts", "schema": {k: v for k, v in TIME_SCHEMA.items() if k != "$id"}},
            r"schema \$id None",
        ),
        ({"type": "gts", "schema": {k: v for k, v in TIME_SCHEMA.items() if k != "title"}}, "needs a title"),
        ({"type": "gts", "schema": {**TIME_SCHEMA, "title": "Get the time"}}, "is not a tool name"),
        ({"type": "gts", "schema": "nope"}, "schema must be a JSON Schema object"),
        ({"type": "function"}, "needs a function object"),
        ({"type": "function", "function": {"description": "x"}}, "function.name is required"),
        ({"type": "function", "function": {"name": "a" * 65}}, "is not a tool name"),
        (
            {"type": "function", "function": {"name": "f", "parameters": "{}"}},
            "parameters must be a JSON Schema",
        ),
        ("get_weather", "must be an object"),
    ],
)
def test_rejections_name_the_tool(tool: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as err:
        normalise([WEATHER_FUNCTION, tool], {})
    assert err.value.param == "tools[1]" and err.value.message.startswith("tools[1]: ")


def test_two_tools_of_one_name_are_refused(demo_types: DirectoryTypeRegistry) -> None:
    with pytest.raises(ValidationError, match="a second tool named 'get_weather'") as err:
        normalise(
            [WEATHER_FUNCTION, {"type": "gts_ref", "gts_id": WEATHER_ID}],
            {WEATHER_ID: {"title": "get_weather"}},
        )
    assert err.value.param == "tools[1]"


def test_tool_choice_must_name_an_offered_function() -> None:
    ok = with_tools(
        req([WEATHER_FUNCTION], tool_choice={"type": "function", "function": {"name": "get_weather"}}), {}
    )
    assert ok.params.tools == [WEATHER_FUNCTION]
    with pytest.raises(ValidationError, match="tool_choice names function 'get_time'") as err:
        with_tools(
            req([WEATHER_FUNCTION], tool_choice={"type": "function", "function": {"name": "get_time"}}), {}
        )
    assert err.value.param == "tool_choice"


def test_with_tools_leaves_the_request_alone() -> None:
    original = req([{"type": "gts", "schema": TIME_SCHEMA}])
    normalised = with_tools(original, {})
    assert original.params.tools == [{"type": "gts", "schema": TIME_SCHEMA}]
    assert normalised.params.tools[0]["function"]["name"] == "get_time"  # type: ignore[index]


def test_referenced_ids_are_well_formed_and_listed_once() -> None:
    tools = [
        {"type": "gts_ref", "gts_id": WEATHER_ID},
        {"type": "gts_ref", "gts_id": "../../x"},
        {"type": "gts_ref", "gts_id": WEATHER_ID},
        WEATHER_FUNCTION,
        "junk",
    ]
    assert referenced(tools) == [WEATHER_ID]  # type: ignore[arg-type]


class FakeRegistry:
    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def get(self, gts_id: str) -> dict[str, Any]:
        self.asked.append(gts_id)
        answer = self.answers.get(gts_id, UnknownType(gts_id))
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        return None


async def test_registry_is_asked_only_for_references() -> None:
    reg = FakeRegistry({})
    assert await registry_schemas([WEATHER_FUNCTION, {"type": "gts", "schema": TIME_SCHEMA}], reg) == {}
    assert reg.asked == []


async def test_unknown_ids_are_left_for_normalise_to_name() -> None:
    reg = FakeRegistry({WEATHER_ID: {"title": "get_weather"}})
    tools = [{"type": "gts_ref", "gts_id": WEATHER_ID}, {"type": "gts_ref", "gts_id": "gts.a.b.c.d.v1~"}]
    assert await registry_schemas(tools, reg) == {WEATHER_ID: {"title": "get_weather"}}
    assert sorted(reg.asked) == sorted([WEATHER_ID, "gts.a.b.c.d.v1~"])


async def test_unavailable_registry_is_internal_error() -> None:
    reg = FakeRegistry({WEATHER_ID: TypeRegistryUnavailable("registry down")})
    with pytest.raises(InternalError, match=f"tool {WEATHER_ID}: registry down") as err:
        await registry_schemas([{"type": "gts_ref", "gts_id": WEATHER_ID}], reg)
    assert err.value.retryable


# --- plan ----------------------------------------------------------------------------------------------


async def test_plan_carries_unified_tools(config, demo_types: DirectoryTypeRegistry) -> None:
    tools = [{"type": "gts_ref", "gts_id": WEATHER_ID}, {"type": "gts", "schema": TIME_SCHEMA}]
    p = plan(req(tools), config, tool_schemas=await registry_schemas(tools, demo_types))
    assert [t["function"]["name"] for t in p.request.params.tools or []] == ["get_weather", "get_time"]
    assert p.request.params.tools[0] == WEATHER_FUNCTION  # type: ignore[index]


def test_plan_without_schemas_names_the_unknown_reference(config) -> None:
    with pytest.raises(ValidationError, match=f"tools\\[0\\]: unknown type {WEATHER_ID}"):
        plan(req([{"type": "gts_ref", "gts_id": WEATHER_ID}]), config)


def test_capabilities_are_checked_before_tools(config) -> None:
    with pytest.raises(CapabilityNotSupported, match="does not support tools"):
        plan(req([{"type": "gts_ref", "gts_id": "bad"}]).model_copy(update={"model": "mock-gpt"}), config)


def test_plan_without_tools_is_unchanged(config) -> None:
    r = ChatRequested(
        request_id="r1", tenant_id="demo", model="demo-openai", messages=[{"role": "user", "content": "hi"}]
    )
    assert plan(r, config).request is r
