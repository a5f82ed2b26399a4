"""The request union: one contract for every operation, discriminated by ``operation``."""

from __future__ import annotations

import orjson
import pydantic
import pytest
from pydantic import TypeAdapter

from services.contracts.errors import CapabilityNotSupported, ValidationError
from services.contracts.events import (
    AnyRequest,
    ChatRequested,
    EmbeddingsOutput,
    EmbedRequested,
    ExecutableRequest,
    ExecutionPlanned,
    ModelsListRequested,
    ResultProduced,
)
from services.runtime.codec import decode_any, encode
from services.runtime.replies import invalid_error

REQUEST = TypeAdapter(AnyRequest)
BASE = {"type": "llm.request.v1", "request_id": "r1", "tenant_id": "t1"}


def test_each_operation_decodes_to_its_member():
    chat = REQUEST.validate_python(
        {**BASE, "operation": "chat", "model": "m", "messages": [{"role": "user", "content": "x"}]}
    )
    embed = REQUEST.validate_python({**BASE, "operation": "embed", "model": "e", "input": ["a", "b"]})
    models = REQUEST.validate_python(
        {**BASE, "operation": "models.list", "filter": {"capability": "embeddings"}}
    )
    assert (type(chat), type(embed), type(models)) == (ChatRequested, EmbedRequested, ModelsListRequested)
    assert embed.input == ["a", "b"] and embed.encoding_format == "float"
    assert models.filter.capability == "embeddings"


def test_a_request_naming_no_operation_is_chat():
    """The v1 request before other operations existed had ``operation`` optional (default chat)."""
    req = REQUEST.validate_python({**BASE, "model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert isinstance(req, ChatRequested)


def test_events_round_trip_through_the_any_event_decoder():
    for event in (
        EmbedRequested(request_id="r", tenant_id="t", model="e", input=["a"], dimensions=8),
        ModelsListRequested(request_id="r", tenant_id="t"),
        ResultProduced(
            request_id="r",
            tenant_id="t",
            status="ok",
            operation="embed",
            output=EmbeddingsOutput(data=[{"index": 0, "embedding": [0.5, 1.0]}]),
        ),
    ):
        back = decode_any(encode(event))
        assert type(back) is type(event) and back == event


def test_an_unknown_operation_is_capability_not_supported_naming_it():
    with pytest.raises(pydantic.ValidationError) as info:
        REQUEST.validate_json(orjson.dumps({**BASE, "operation": "teleport.now", "model": "m"}))
    err = invalid_error(info.value, "teleport.now")
    assert isinstance(err, CapabilityNotSupported)
    assert "'teleport.now'" in err.message
    assert (
        "chat, embed, image.generate, audio.speech, audio.transcribe, video.generate, realtime.turn, models.list"
        in err.message
    )


def test_a_malformed_known_operation_is_a_validation_error():
    with pytest.raises(pydantic.ValidationError) as info:
        REQUEST.validate_python({**BASE, "operation": "embed", "model": "e", "input": []})
    err = invalid_error(info.value, "embed")
    assert isinstance(err, ValidationError) and "input" in err.message


def test_plans_carry_only_executable_operations():
    TypeAdapter(ExecutableRequest).validate_python(
        {**BASE, "operation": "embed", "model": "e", "input": ["a"]}
    )
    with pytest.raises(pydantic.ValidationError):
        ExecutionPlanned.model_validate(
            {
                "request_id": "r",
                "tenant_id": "t",
                "request": {**BASE, "operation": "models.list"},
                "deployments": [{"alias": "a", "provider": "p", "upstream_model": "m"}],
            }
        )


def test_plan_deployments_ignore_url_and_secret_fields():
    """Old-style plans carried ``base_url`` / ``api_key_env``: they are not part of the contract
    any more, so nothing in a plan can say where a request (or a secret) goes."""
    plan = ExecutionPlanned.model_validate(
        {
            "request_id": "r",
            "tenant_id": "t",
            "request": {
                **BASE,
                "operation": "chat",
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
            },
            "deployments": [
                {
                    "alias": "a",
                    "provider": "p",
                    "upstream_model": "m",
                    "base_url": "http://evil.example",
                    "api_key_env": "AWS_SECRET_ACCESS_KEY",
                }
            ],
        }
    )
    assert plan.deployments[0].model_dump() == {"alias": "a", "provider": "p", "upstream_model": "m"}
