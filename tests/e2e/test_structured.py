"""Structured output over the whole stack, against each chat wire format: answers that conform
are delivered (sync and streaming, through the edge with the ``openai`` SDK and over Kafka
with the gateway SDK); answers that break the schema are ``validation_error`` with the
violations and the raw answer, sync and streaming, and are still billed in ``llm.usage``."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import orjson
import pytest

from services.contracts.errors import ValidationError
from services.contracts.events import new_id
from tests.unit.edge.openai_spec import check

from .helpers import TopicTail
from .test_edge_openai import DEMO_KEY

ALIASES = ["demo-openai", "demo-anthropic", "demo-ollama"]
SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "temperature_c": {"type": "number"},
        "conditions": {"type": "string", "enum": ["sun", "rain", "snow"]},
    },
    "required": ["city", "temperature_c", "conditions"],
    "additionalProperties": False,
}
RF = {"type": "json_schema", "json_schema": {"name": "weather_report", "schema": SCHEMA, "strict": True}}
ASK = [{"role": "user", "content": "the weather in Paris, as json"}]
VIOLATE = {"emulator_scenario": "schema_violation=1"}


@pytest.fixture(scope="module")
def client(edge_url: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=DEMO_KEY, base_url=f"{edge_url}/v1", max_retries=0, timeout=30)


def _violations_hold(details: dict[str, Any]) -> None:
    """``details`` names real violations of ``raw`` (checked independently here)."""
    raw = details["raw"]
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(orjson.loads(raw))
    assert details["violations"] and all(set(v) == {"path", "message"} for v in details["violations"])
    assert all(v["path"] == "" or v["path"].startswith("/") for v in details["violations"])


@pytest.mark.parametrize("alias", ALIASES)
def test_conforming_answer_sync_and_streamed(client: openai.OpenAI, alias: str) -> None:
    completion = client.chat.completions.create(model=alias, messages=ASK, response_format=RF)  # type: ignore[arg-type]
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    whole = orjson.loads(choice.message.content or "")
    jsonschema.validate(whole, SCHEMA)

    chunks = list(client.chat.completions.create(model=alias, messages=ASK, response_format=RF, stream=True))  # type: ignore[arg-type]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert orjson.loads(text) == whole


@pytest.mark.parametrize("alias", ALIASES)
def test_violation_is_a_400_with_the_violations(client: openai.OpenAI, alias: str) -> None:
    raw = client.chat.completions.with_raw_response
    with pytest.raises(openai.BadRequestError) as err:
        raw.create(model=alias, messages=ASK, response_format=RF, extra_body=VIOLATE)  # type: ignore[arg-type]
    body = err.value.response.json()
    check("ErrorResponse", body)
    assert err.value.code == "validation_error" and err.value.param == "response_format"
    assert "does not match response_format" in err.value.message
    _violations_hold(body["error"]["details"])


@pytest.mark.parametrize("alias", ALIASES)
def test_streamed_violation_ends_with_an_error_event(client: openai.OpenAI, alias: str) -> None:
    stream = client.chat.completions.create(
        model=alias,
        messages=ASK,
        response_format=RF,
        stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
        extra_body=VIOLATE,
    )
    received = []
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            received.append(chunk)
    assert received, "the answer's chunks came before the error"
    assert all(c.choices[0].finish_reason is None for c in received if c.choices), "no finish_reason: stop"
    body = err.value.body
    assert isinstance(body, dict) and body["code"] == "validation_error"
    _violations_hold(body["details"])
    streamed = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert body["details"]["raw"].startswith(streamed)


async def test_sdk_stream_yields_then_raises_and_usage_is_billed(gw: Any, stack_settings: Any) -> None:
    rid = new_id()
    chunks = []
    async with TopicTail(
        stack_settings.bootstrap_servers, f"{stack_settings.topic_prefix}llm.usage"
    ) as usage:
        with pytest.raises(ValidationError) as err:
            async for chunk in gw.stream_chat(
                model="demo-anthropic", messages=ASK, response_format=RF, request_id=rid, **VIOLATE
            ):
                chunks.append(chunk)
        recs = await usage.until(lambda rs: any(rid.encode() in r.value for r in rs))
    assert chunks and chunks[-1].final and chunks[-1].finish_reason == "error"
    assert not any(c.final for c in chunks[:-1])
    assert err.value.param == "response_format"
    _violations_hold(err.value.details)
    assert err.value.details["raw"] == "".join(c.delta.content or "" for c in chunks)
    (row,) = [json.loads(r.value) for r in recs if rid.encode() in r.value]
    assert (row["status"], row["error_code"], row["streamed"]) == ("error", "validation_error", True)
    assert row["completion_tokens"] > 0 and row["cost_usd"] > 0


async def test_sdk_sync_violation_is_billed(gw: Any, stack_settings: Any) -> None:
    rid = new_id()
    async with TopicTail(
        stack_settings.bootstrap_servers, f"{stack_settings.topic_prefix}llm.usage"
    ) as usage:
        with pytest.raises(ValidationError) as err:
            await gw.chat(model="demo-openai", messages=ASK, response_format=RF, request_id=rid, **VIOLATE)
        recs = await usage.until(lambda rs: any(rid.encode() in r.value for r in rs))
    _violations_hold(err.value.details)
    (row,) = [json.loads(r.value) for r in recs if rid.encode() in r.value]
    assert (row["status"], row["error_code"], row["streamed"]) == ("error", "validation_error", False)
    assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0 and row["cost_usd"] > 0


async def test_sdk_conforming_answer(gw: Any) -> None:
    result = await gw.chat(model="demo-ollama", messages=ASK, response_format=RF)
    assert result.status == "ok" and result.finish_reason == "stop"
    jsonschema.validate(orjson.loads(result.message.content), SCHEMA)
