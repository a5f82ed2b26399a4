"""Structured output is checked by the executor: the contract (violations as JSON Pointers,
schemas compiled once), then whole requests through ``Executor.handle`` against the emulator
in-process (no broker: the publisher records what would be published). A violating answer is
``validation_error`` with the violations and the raw text, its usage still billed; a stream
ends with that error on its terminal chunk instead of ``finish_reason: stop``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.contracts.errors import ValidationError
from services.contracts.events import (
    ChatParams,
    ChatRequested,
    ChunkEmitted,
    ResultProduced,
    UsageRecorded,
    new_id,
)
from services.emulator import create_app
from services.executor.app import Executor
from services.executor.structured import JSON_OBJECT, contract_for, pointer
from services.router.handlers import plan
from services.runtime.config import load_config
from services.runtime.settings import ROOT, Settings
from services.runtime.topics import Topics
from tests.unit.providers.support import AsgiTransport

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {
            "type": "array",
            "items": {"type": "object", "properties": {"t/c": {"type": "number"}}, "required": ["t/c"]},
        },
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
RF = {"type": "json_schema", "json_schema": {"name": "forecast", "schema": SCHEMA}}


# --- the contract ------------------------------------------------------------------------------------


def test_conforming_answer_passes() -> None:
    contract = contract_for(RF)
    assert contract is not None
    assert contract.violation('{"city": "Paris", "days": [{"t/c": 18}]}', "stop") is None


def test_violations_are_json_pointers_into_the_answer() -> None:
    err = contract_for(RF).violation('{"days": [{"t/c": 1}, {"t/c": "warm"}], "extra": 1}', "stop")  # type: ignore[union-attr]
    assert isinstance(err, ValidationError) and err.param == "response_format"
    violations = err.details["violations"]
    assert {v["path"] for v in violations} == {"", "/days/1/t~1c"}
    assert any("'city' is a required property" in v["message"] for v in violations)
    assert any("'extra' was unexpected" in v["message"] for v in violations)
    assert any(
        v["path"] == "/days/1/t~1c" and "'warm' is not of type 'number'" in v["message"] for v in violations
    )
    assert err.details["raw"] == '{"days": [{"t/c": 1}, {"t/c": "warm"}], "extra": 1}'
    assert err.message.startswith("the model's answer does not match response_format")


def test_not_json_is_a_violation_of_the_whole_answer() -> None:
    err = contract_for(RF).violation('{"city": "Par', "length")  # type: ignore[union-attr]
    assert err is not None
    (v,) = err.details["violations"]
    assert v["path"] == "" and "not valid JSON" in v["message"] and "cut at the token limit" in v["message"]
    assert err.details["raw"] == '{"city": "Par'


@pytest.mark.parametrize(
    ("text", "ok"),
    [('{"a": 1}', True), ("{}", True), ("[1]", False), ('"x"', False), ("", False), (None, False)],
)
def test_json_object_needs_an_object(text: str | None, ok: bool) -> None:
    contract = contract_for({"type": "json_object"})
    assert contract is JSON_OBJECT
    assert (contract.violation(text, "stop") is None) is ok


def test_text_answers_have_no_contract() -> None:
    assert contract_for(None) is None and contract_for({"type": "text"}) is None


def test_schemas_compile_once_whatever_their_key_order() -> None:
    reordered = {
        "json_schema": {"schema": dict(reversed(list(SCHEMA.items()))), "name": "other"},
        "type": "json_schema",
    }
    assert contract_for(RF) is contract_for(reordered)
    assert contract_for(RF) is not contract_for(
        {"type": "json_schema", "json_schema": {"schema": {"type": "array"}}}
    )


@pytest.mark.parametrize(
    ("rf", "message"),
    [
        ({"type": "json_schema", "json_schema": {"name": "x"}}, "schema must be a JSON Schema object"),
        (
            {"type": "json_schema", "json_schema": {"schema": {"type": "objekt"}}},
            "is not a valid JSON Schema",
        ),
        (
            {"type": "json_schema", "json_schema": {"schema": {"required": "city"}}},
            "is not a valid JSON Schema",
        ),
    ],
)
def test_bad_schemas_are_refused(rf: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as err:
        contract_for(rf)
    assert err.value.param == "response_format"


def test_schema_draft_follows_dollar_schema() -> None:
    draft7 = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "array",
        "items": [{"type": "string"}],
        "additionalItems": False,
    }
    contract = contract_for({"type": "json_schema", "json_schema": {"schema": draft7}})
    assert contract is not None
    assert contract.violation('["a"]', "stop") is None
    assert contract.violation('["a", "b"]', "stop") is not None, "draft-07 tuple items apply"


def test_pointer_escapes() -> None:
    assert pointer([]) == "" and pointer(["a/b", 0, "m~n"]) == "/a~1b/0/m~0n"


# --- whole requests ---------------------------------------------------------------------------------------


class Recorder:
    """A publisher that keeps every event (acks at once)."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    async def publish(self, topic, event, *, key, partition=None, headers=None):  # type: ignore[no-untyped-def]
        self.events.append(event)
        ack = asyncio.get_running_loop().create_future()
        ack.set_result(None)
        return ack

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
async def executor() -> AsyncIterator[Executor]:
    settings = Settings()
    http = AsgiTransport(create_app())
    ex = Executor(settings, Topics.load(ROOT / "topics.yaml", ""), http=http, publisher=Recorder())  # type: ignore[arg-type]
    try:
        yield ex
    finally:  # never started: closing only releases it
        await ex.consumer._consumer.stop()
        await http.aclose()


async def run(ex: Executor, model: str, *, stream: bool, scenario: str = "", **params: Any) -> Recorder:
    config = load_config(Settings().config_path, {})
    extra = {"emulator_scenario": scenario} if scenario else {}
    req = ChatRequested(
        request_id=new_id(),
        tenant_id="demo",
        model=model,
        stream=stream,
        messages=[{"role": "user", "content": "a forecast, as json"}],
        params=ChatParams(extra=extra, **params),
    )
    await ex.handle(plan(req, config), None)  # type: ignore[arg-type]
    return ex.publisher  # type: ignore[return-value]


ALIASES = ["demo-openai", "demo-anthropic", "demo-ollama"]


@pytest.mark.parametrize("alias", ALIASES)
@pytest.mark.parametrize("stream", [False, True])
async def test_conforming_answer_is_delivered(executor: Executor, alias: str, stream: bool) -> None:
    rec = await run(executor, alias, stream=stream, response_format=RF)
    (result,) = rec.of(ResultProduced)
    assert result.status == "ok" and result.finish_reason == "stop" and result.error is None
    assert contract_for(RF).violation(result.message.content, "stop") is None  # type: ignore[union-attr]
    if stream:
        final = rec.of(ChunkEmitted)[-1]
        assert final.final and final.finish_reason == "stop" and final.error is None


@pytest.mark.parametrize("alias", ALIASES)
async def test_violation_is_validation_error_and_still_billed(executor: Executor, alias: str) -> None:
    rec = await run(executor, alias, stream=False, scenario="schema_violation=1", response_format=RF)
    (result,) = rec.of(ResultProduced)
    assert result.status == "error" and result.message is None
    err = result.error
    assert err is not None and (err.code, err.param, err.retryable) == (
        "validation_error",
        "response_format",
        False,
    )
    assert err.details["violations"] and all({"path", "message"} == set(v) for v in err.details["violations"])
    assert contract_for(RF).violation(err.details["raw"], "stop") is not None  # type: ignore[union-attr]
    assert result.usage is not None and result.usage.completion_tokens > 0
    (usage,) = rec.of(UsageRecorded)
    assert (usage.status, usage.error_code) == ("error", "validation_error")
    assert usage.completion_tokens == result.usage.completion_tokens > 0
    if alias != "demo-ollama":  # the demo prices Ollama at 0
        assert usage.cost_usd > 0
    actions = [e.action for e in rec.events if getattr(e, "type", "") == "llm.audit.v1"]
    assert actions == ["started", "failed"]


@pytest.mark.parametrize("alias", ALIASES)
async def test_stream_violation_ends_with_the_error_instead_of_stop(executor: Executor, alias: str) -> None:
    rec = await run(executor, alias, stream=True, scenario="schema_violation=1", response_format=RF)
    chunks = rec.of(ChunkEmitted)
    assert [c.seq for c in chunks] == list(range(len(chunks))) and len(chunks) >= 2
    assert not any(c.final for c in chunks[:-1])
    final = chunks[-1]
    assert (
        final.final and final.finish_reason == "error" and final.usage and final.usage.completion_tokens > 0
    )
    assert final.error is not None and final.error.code == "validation_error"
    streamed = "".join(c.delta.content or "" for c in chunks)
    assert final.error.details["raw"] == streamed, "the error carries what was streamed"
    (result,) = rec.of(ResultProduced)
    assert result.status == "error" and result.error == final.error and result.streamed
    (usage,) = rec.of(UsageRecorded)
    assert (usage.status, usage.error_code, usage.streamed) == ("error", "validation_error", True)


async def test_violation_is_not_a_reason_to_fall_back(executor: Executor) -> None:
    config = load_config(Settings().config_path, {})
    req = ChatRequested(
        request_id=new_id(),
        tenant_id="demo",
        model="demo-openai",
        fallbacks=["demo-anthropic"],
        messages=[{"role": "user", "content": "json please"}],
        params=ChatParams(response_format=RF, extra={"emulator_scenario": "schema_violation=1"}),
    )
    await executor.handle(plan(req, config), None)  # type: ignore[arg-type]
    rec = executor.publisher
    (result,) = rec.of(ResultProduced)  # type: ignore[attr-defined]
    assert result.error.code == "validation_error" and result.provider == "emulator-openai"
    assert not result.fallback_used
    assert "fallback_triggered" not in [getattr(e, "action", None) for e in rec.events]  # type: ignore[attr-defined]


async def test_json_object_answer_is_checked_too(executor: Executor) -> None:
    rec = await run(
        executor,
        "demo-openai",
        stream=False,
        scenario="schema_violation=1",
        response_format={"type": "json_object"},
    )
    (result,) = rec.of(ResultProduced)
    assert result.error.code == "validation_error"
    assert result.error.details["violations"] == [{"path": "", "message": "list is not a JSON object"}]


async def test_invalid_schema_fails_before_any_provider_call(executor: Executor) -> None:
    rec = await run(
        executor,
        "demo-openai",
        stream=False,
        response_format={"type": "json_schema", "json_schema": {"schema": {"type": "objekt"}}},
    )
    (result,) = rec.of(ResultProduced)
    assert result.error.code == "validation_error" and "not a valid JSON Schema" in result.error.message
    (usage,) = rec.of(UsageRecorded)
    assert usage.total_tokens == 0 and usage.cost_usd == 0


async def test_tool_calls_are_not_checked_as_text(executor: Executor) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    rec = await run(
        executor, "demo-openai", stream=False, scenario="tools=1", tools=tools, response_format=RF
    )
    (result,) = rec.of(ResultProduced)
    assert result.status == "ok" and result.finish_reason == "tool_calls" and result.message.tool_calls
