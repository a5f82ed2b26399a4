"""Structured output: JSON that conforms to the requested schema (or, with schema_violation=1, breaks it)."""

from __future__ import annotations

import datetime
import enum
import json
from typing import Literal

import anthropic
import httpx
import jsonschema
import openai
import pydantic
import pytest

from services.emulator import schemas
from services.emulator.text import argument_pieces, completion_text

RECIPE = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 6},
        "servings": {"type": "integer", "minimum": 2, "maximum": 12},
        "rating": {"type": "number", "exclusiveMinimum": 3, "exclusiveMaximum": 5},
        "vegan": {"type": "boolean"},
        "course": {"type": "string", "enum": ["starter", "main", "dessert"]},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "steps": {"type": "array", "items": {"$ref": "#/$defs/Step"}},
        "source": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/Source"}]},
    },
    "required": ["title", "servings", "rating", "vegan", "course", "tags", "steps", "source"],
    "additionalProperties": False,
    "$defs": {
        "Step": {
            "type": "object",
            "properties": {"n": {"type": "integer"}, "text": {"type": "string"}},
            "required": ["n", "text"],
            "additionalProperties": False,
        },
        "Source": {
            "type": "object",
            "properties": {
                "url": {"type": "string", "format": "uri"},
                "at": {"type": "string", "format": "date-time"},
            },
            "required": ["url", "at"],
            "additionalProperties": False,
        },
    },
}

SCHEMA_CASES = [
    RECIPE,
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    {"type": "object", "properties": {"a": {"type": ["integer", "null"], "multipleOf": 5, "minimum": 7}}},
    {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3},
    {"type": "string", "maxLength": 2},
    {"type": "object", "additionalProperties": False},
    {"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 2},
    {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            {"properties": {"b": {"const": 3}}, "required": ["b"]},
        ]
    },
    {
        "type": "object",
        "properties": {
            "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}], "items": False}
        },
        "required": ["pair"],
    },
    {
        "$ref": "#/$defs/Node",
        "$defs": {
            "Node": {
                "type": "object",
                "required": ["v", "kids"],
                "properties": {
                    "v": {"type": "integer"},
                    "kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                },
            }
        },
    },
]
MESSAGES = [{"role": "user", "content": "give me a recipe as json"}]


def valid(value, schema) -> bool:
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).is_valid(value)


@pytest.mark.parametrize("schema", SCHEMA_CASES)
def test_example_conforms_and_violation_breaks(schema):
    good = schemas.example(schema)
    assert valid(good, schema), good
    assert schemas.example(schema) == good  # deterministic
    bad = schemas.violation(schema)
    assert not valid(bad, schema), bad
    json.dumps(bad)  # still JSON
    if isinstance(good, dict):
        kept = schemas.violation(schema, keep_object=True)
        assert isinstance(kept, dict) and not valid(kept, schema)


def test_violation_drops_a_required_property_and_mistypes_another():
    bad = schemas.violation(RECIPE)
    assert "title" not in bad
    assert isinstance(bad["servings"], str)


def test_violation_of_a_schema_that_takes_anything_keeps_the_value():
    assert schemas.violation({}) == schemas.example({})


def test_example_honours_bounds_and_formats():
    value = schemas.example(RECIPE)
    assert len(value["title"]) >= 6 and 2 <= value["servings"] <= 12 and 3 < value["rating"] < 5
    assert value["course"] == "starter" and len(value["tags"]) == 2 and value["source"] is not None
    datetime.datetime.fromisoformat(value["source"]["at"].replace("Z", "+00:00"))


# --- OpenAI ---------------------------------------------------------------------------------------------


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


def json_schema_format(schema, strict=True):
    return {"type": "json_schema", "json_schema": {"name": "recipe", "schema": schema, "strict": strict}}


def test_openai_json_schema(oai):
    r = oai.chat.completions.create(
        model="gpt-emu", messages=MESSAGES, response_format=json_schema_format(RECIPE)
    )
    content = r.choices[0].message.content
    assert valid(json.loads(content), RECIPE)
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == len(argument_pieces(content))


def test_openai_json_schema_streamed_pieces_assemble_to_the_same_json(oai):
    plain = (
        oai.chat.completions.create(
            model="gpt-emu", messages=MESSAGES, response_format=json_schema_format(RECIPE)
        )
        .choices[0]
        .message.content
    )
    chunks = list(
        oai.chat.completions.create(
            model="gpt-emu", messages=MESSAGES, stream=True, response_format=json_schema_format(RECIPE)
        )
    )
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1 and "".join(pieces) == plain


def test_openai_schema_violation(oai):
    kwargs = {
        "model": "gpt-emu@schema_violation=1",
        "messages": MESSAGES,
        "response_format": json_schema_format(RECIPE),
    }
    plain = oai.chat.completions.create(**kwargs).choices[0].message.content
    with oai.chat.completions.stream(**kwargs) as stream:
        streamed = stream.get_final_completion().choices[0].message.content
    assert plain == streamed
    value = json.loads(plain)
    assert not valid(value, RECIPE) and "title" not in value


class Course(enum.Enum):
    STARTER = "starter"
    MAIN = "main"


class Step(pydantic.BaseModel):
    n: int
    text: str


class Recipe(pydantic.BaseModel):
    title: str
    course: Course
    kind: Literal["sweet", "savoury"]
    steps: list[Step]
    note: str | None
    when: datetime.date


def test_openai_sdk_parse_with_pydantic(oai):
    r = oai.chat.completions.parse(model="gpt-emu", messages=MESSAGES, response_format=Recipe)
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, Recipe)
    assert (
        parsed.course is Course.STARTER
        and parsed.kind == "sweet"
        and parsed.steps == [Step(n=1, text="tok0")]
    )
    with oai.chat.completions.stream(model="gpt-emu", messages=MESSAGES, response_format=Recipe) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.parsed == parsed


def test_openai_sdk_parse_fails_on_violation(oai):
    with pytest.raises(pydantic.ValidationError):
        oai.chat.completions.parse(
            model="gpt-emu@schema_violation=1", messages=MESSAGES, response_format=Recipe
        )


def test_openai_json_object(oai):
    r = oai.chat.completions.create(
        model="gpt-emu@tokens=3", messages=MESSAGES, response_format={"type": "json_object"}
    )
    assert json.loads(r.choices[0].message.content) == {"answer": completion_text(3)}
    r = oai.chat.completions.create(
        model="gpt-emu@tokens=3,schema_violation=1",
        messages=MESSAGES,
        response_format={"type": "json_object"},
    )
    assert not isinstance(json.loads(r.choices[0].message.content), dict)
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(
            model="gpt-emu",
            messages=[{"role": "user", "content": "hi"}],
            response_format={"type": "json_object"},
        )
    assert "must contain the word 'json'" in info.value.message and info.value.param == "messages"


def test_openai_strict_schema_is_checked(oai):
    loose = {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(
            model="gpt-emu", messages=MESSAGES, response_format=json_schema_format(loose)
        )
    assert info.value.body["message"] == (
        "Invalid schema for response_format 'recipe': In context=(), 'required' is required "
        "to be supplied and to be an array including every key in properties. Missing 'b'."
    )
    # Not strict: accepted, and the answer still conforms.
    r = oai.chat.completions.create(
        model="gpt-emu", messages=MESSAGES, response_format=json_schema_format(loose, strict=False)
    )
    assert valid(json.loads(r.choices[0].message.content), loose)
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(
            model="gpt-emu",
            messages=MESSAGES,
            response_format={"type": "json_schema", "json_schema": {"schema": {}}},
        )
    assert info.value.param == "response_format.json_schema.name"


def test_openai_max_tokens_cuts_json(oai):
    r = oai.chat.completions.create(
        model="gpt-emu", messages=MESSAGES, max_tokens=2, response_format=json_schema_format(RECIPE)
    )
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 2
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.choices[0].message.content)


# --- Anthropic ------------------------------------------------------------------------------------------

RECIPE_TOOL = [
    {"name": "recipe", "description": "Answer as a recipe", "input_schema": RECIPE},
    {"name": "other", "input_schema": {"type": "object", "properties": {"x": {"type": "string"}}}},
]


def test_anthropic_forced_tool_as_structured_output(claude):
    for model in ("claude-emu", "claude-emu@tools=3"):
        m = claude.messages.create(
            model=model,
            max_tokens=500,
            messages=MESSAGES,
            tools=RECIPE_TOOL,
            tool_choice={"type": "tool", "name": "recipe", "disable_parallel_tool_use": True},
        )
        (block,) = m.content
        assert block.type == "tool_use" and block.name == "recipe" and m.stop_reason == "tool_use"
        assert valid(block.input, RECIPE)


def test_anthropic_forced_tool_violation_streamed_and_not(claude):
    kwargs = {
        "model": "claude-emu@schema_violation=1",
        "max_tokens": 500,
        "messages": MESSAGES,
        "tools": RECIPE_TOOL,
        "tool_choice": {"type": "tool", "name": "recipe"},
    }
    plain = claude.messages.create(**kwargs).content[0].input
    with claude.messages.stream(**kwargs) as stream:
        streamed = stream.get_final_message().content[0].input
    assert plain == streamed and isinstance(plain, dict)
    assert not valid(plain, RECIPE) and "title" not in plain


def test_anthropic_native_structured_output(claude):
    m = claude.messages.parse(model="claude-emu", max_tokens=500, messages=MESSAGES, output_format=Recipe)
    assert isinstance(m.parsed_output, Recipe) and m.parsed_output.steps == [Step(n=1, text="tok0")]
    fmt = {"format": {"type": "json_schema", "schema": RECIPE}}
    with claude.messages.stream(
        model="claude-emu", max_tokens=500, messages=MESSAGES, output_config=fmt
    ) as stream:
        text = "".join(stream.text_stream)
    assert valid(json.loads(text), RECIPE)
    m = claude.messages.create(
        model="claude-emu@schema_violation=1", max_tokens=500, messages=MESSAGES, output_config=fmt
    )
    assert not valid(json.loads(m.content[0].text), RECIPE)


# --- Ollama ---------------------------------------------------------------------------------------------


def test_ollama_format_schema(http):
    body = {"model": "llama-emu", "messages": MESSAGES, "format": RECIPE, "stream": False}
    r = http.post("/api/chat", json=body).json()
    content = r["message"]["content"]
    assert valid(json.loads(content), RECIPE) and r["eval_count"] == len(argument_pieces(content))
    lines = [json.loads(x) for x in http.post("/api/chat", json={**body, "stream": True}).text.splitlines()]
    assert len(lines) > 2 and "".join(x["message"]["content"] for x in lines) == content
    bad = http.post("/api/chat", json={**body, "model": "llama-emu@schema_violation=1"}).json()
    assert not valid(json.loads(bad["message"]["content"]), RECIPE)


def test_ollama_format_json_and_bad_format(http):
    r = http.post(
        "/api/chat",
        json={"model": "llama-emu@tokens=2", "messages": MESSAGES, "format": "json", "stream": False},
    ).json()
    assert json.loads(r["message"]["content"]) == {"answer": completion_text(2)}
    r = http.post("/api/chat", json={"model": "llama-emu", "messages": MESSAGES, "format": "yaml"})
    assert r.status_code == 400 and "invalid format" in r.json()["error"]
