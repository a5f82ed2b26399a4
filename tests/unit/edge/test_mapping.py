"""Pure mappings: request bodies -> request fields, result -> chat.completion, chunks ->
chat.completion.chunk, result -> native answer. Outputs are checked against OpenAI's spec."""

from __future__ import annotations

import orjson
import pytest

from services.contracts.errors import ValidationError
from services.contracts.events import (
    AssistantMessage,
    ChatRequested,
    ChunkEmitted,
    Delta,
    ResultProduced,
    ToolCall,
    ToolCallDelta,
    ToolCallFunction,
    Usage,
)
from services.edge.api.chat import ChunkEncoder, completion_json, finish_reason, parse_chat, pydantic_param
from services.edge.api.native import native_json, parse_native
from services.edge.auth import Caller

from .conftest import FakePipeline
from .openai_spec import check

MSG = [{"role": "user", "content": "hi"}]
IDS = {"request_id": "r1", "tenant_id": "demo"}


def result(**kw) -> ResultProduced:
    base = dict(
        **IDS,
        status="ok",
        message=AssistantMessage(content="hello"),
        finish_reason="stop",
        alias="demo-openai",
        provider="emulator-openai",
        model="gpt-emu",
        usage=Usage(prompt_tokens=4, completion_tokens=2, total_tokens=6, cached_tokens=1),
    )
    return ResultProduced(**(base | kw))


# --- request bodies -------------------------------------------------------------------------


def test_known_params_typed_unknown_fields_forwarded():
    call = parse_chat(
        {
            "model": "demo-openai",
            "messages": MSG,
            "temperature": 0.2,
            "stop": "END",
            "max_tokens": 5,
            "logit_bias": {"50256": -100},
            "vendor_knob": {"a": 1},
            "user": "end-user-7",
            "max_completion_tokens": 9,
            "metadata": {"conversation_id": "c1"},
            "client_id": "svc-a",
            "total_ms": 5000,
        }
    )
    assert call.fields == {
        "temperature": 0.2,
        "stop": ["END"],
        "max_tokens": 5,
        "metadata": {"conversation_id": "c1"},
        "client_id": "svc-a",
        "total_ms": 5000,
    }
    assert call.extra == {
        "logit_bias": {"50256": -100},
        "vendor_knob": {"a": 1},
        "user": "end-user-7",
        "max_completion_tokens": 9,
    }
    assert call.total_ms == 5000 and not call.stream


def test_request_event_carries_caller_identity_only():
    fake = FakePipeline()
    call = parse_chat(
        {
            "model": "demo-openai",
            "messages": MSG,
            "tenant_id": "other",
            "user_id": "mallory",
            "seed": 3,
            "foo": "bar",
        }
    )
    req = fake.request(
        Caller("demo", "demo-user"),
        call.model,
        call.messages,
        stream=False,
        request_id="rq",
        extra=call.extra,
        **call.fields,
    )
    assert (req.tenant_id, req.user_id, req.request_id) == ("demo", "demo-user", "rq")
    assert req.params.seed == 3 and req.params.extra == {"foo": "bar"}
    assert "tenant_id" not in req.params.extra and "user_id" not in req.params.extra


def test_stream_options():
    call = parse_chat(
        {"model": "m", "messages": MSG, "stream": True, "stream_options": {"include_usage": True}}
    )
    assert call.stream and call.include_usage and "stream_options" not in call.extra


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": MSG}, "model"),
        ({"model": "", "messages": MSG}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({"model": "m", "messages": MSG, "stream": "yes"}, "stream"),
        ({"model": "m", "messages": MSG, "stream_options": 1}, "stream_options"),
        ({"model": "m", "messages": MSG, "n": 2}, "n"),
        ({"model": "m", "messages": MSG, "ttft_ms": 0}, "ttft_ms"),
        ({"model": "m", "messages": MSG, "max_completion_tokens": -1}, "max_completion_tokens"),
        ({"model": "m", "messages": MSG, "fallbacks": "x"}, "fallbacks"),
        ({"model": "m", "messages": MSG, "metadata": []}, "metadata"),
    ],
)
def test_bad_request_names_the_field(body, param):
    with pytest.raises(ValidationError) as exc:
        parse_chat(body)
    assert exc.value.param == param and param in exc.value.message


def test_pydantic_locations_become_params():
    assert pydantic_param(("messages", 0, "role")) == "messages[0].role"
    assert pydantic_param(("temperature",)) == "temperature"


def test_native_request_id_from_metadata():
    call, rid = parse_native(
        {"client_id": "c", "model": "m", "messages": MSG, "metadata": {"request_id": "abc-1"}}
    )
    assert (
        rid == "abc-1"
        and call.fields["client_id"] == "c"
        and call.fields["metadata"] == {"request_id": "abc-1"}
    )
    with pytest.raises(ValidationError) as exc:
        parse_native({"model": "m", "messages": MSG, "metadata": {"request_id": "bad id with spaces"}})
    assert exc.value.param == "metadata.request_id"


# --- answers ----------------------------------------------------------------------------------


def test_result_to_chat_completion():
    body = completion_json(result(), "demo-openai", 1700000000)
    check("CreateChatCompletionResponse", body)
    assert (
        body["id"] == "chatcmpl-r1" and body["object"] == "chat.completion" and body["model"] == "demo-openai"
    )
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "hello", "refusal": None}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {
        "prompt_tokens": 4,
        "completion_tokens": 2,
        "total_tokens": 6,
        "prompt_tokens_details": {"cached_tokens": 1},
    }


def test_result_with_tool_calls():
    msg = AssistantMessage(
        content=None,
        tool_calls=[
            ToolCall(id="call_1", function=ToolCallFunction(name="get_weather", arguments='{"city":"Paris"}'))
        ],
    )
    body = completion_json(result(message=msg, finish_reason="tool_calls"), "demo-openai", 1)
    check("CreateChatCompletionResponse", body)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        }
    ]


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("tool_calls", "tool_calls"),
        ("content_filter", "content_filter"),
        ("error", "stop"),
        ("cancelled", "stop"),
        (None, "stop"),
    ],
)
def test_finish_reasons_stay_in_openai_enum(ours, theirs):
    assert finish_reason(ours) == theirs


def _sse_objects(data: bytes) -> list[dict]:
    out = []
    for event in data.split(b"\n\n"):
        if event:
            assert event.startswith(b"data: ")
            out.append(orjson.loads(event[6:]))
    return out


def stream_of(include_usage: bool) -> list[dict]:
    enc = ChunkEncoder("r1", "demo-openai", 1700000000, include_usage)
    chunks = [
        ChunkEmitted(
            **IDS, seq=0, delta=Delta(role="assistant", content="Hel"), model="gpt-emu", provider="p"
        ),
        ChunkEmitted(**IDS, seq=1, delta=Delta(content="lo")),
        ChunkEmitted(
            **IDS,
            seq=2,
            delta=Delta(content="!"),
            final=True,
            finish_reason="length",
            usage=Usage(prompt_tokens=4, completion_tokens=3, total_tokens=7),
        ),
    ]
    return [o for c in chunks for o in _sse_objects(enc.encode(c))]


def test_chunks_to_openai_stream_with_usage():
    objs = stream_of(include_usage=True)
    for o in objs:
        check("CreateChatCompletionStreamResponse", o)
        assert (o["id"], o["object"], o["created"], o["model"]) == (
            "chatcmpl-r1",
            "chat.completion.chunk",
            1700000000,
            "demo-openai",
        )
    deltas = [o["choices"][0]["delta"] for o in objs if o["choices"]]
    assert deltas == [{"role": "assistant", "content": "Hel"}, {"content": "lo"}, {"content": "!"}, {}]
    assert [o["choices"][0]["finish_reason"] for o in objs if o["choices"]] == [None, None, None, "length"]
    assert all(o["usage"] is None for o in objs[:-1])
    assert objs[-1]["choices"] == [] and objs[-1]["usage"]["total_tokens"] == 7


def test_chunks_without_usage_have_no_usage_field():
    objs = stream_of(include_usage=False)
    assert len(objs) == 4 and all("usage" not in o for o in objs)
    assert objs[-1]["choices"][0]["finish_reason"] == "length"


def test_tool_call_chunks():
    enc = ChunkEncoder("r1", "m", 1, True)
    first = ChunkEmitted(
        **IDS,
        seq=0,
        delta=Delta(
            role="assistant", tool_calls=[ToolCallDelta(index=0, id="call_1", name="f", arguments='{"a"')]
        ),
    )
    more = ChunkEmitted(**IDS, seq=1, delta=Delta(tool_calls=[ToolCallDelta(index=0, arguments=":1}")]))
    objs = _sse_objects(enc.encode(first)) + _sse_objects(enc.encode(more))
    for o in objs:
        check("CreateChatCompletionStreamResponse", o)
    assert objs[0]["choices"][0]["delta"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a"'}}
        ],
    }
    assert objs[1]["choices"][0]["delta"] == {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}


def test_empty_answer_still_starts_with_the_role():
    enc = ChunkEncoder("r1", "m", 1, False)
    only = ChunkEmitted(
        **IDS, seq=0, delta=Delta(role="assistant"), final=True, finish_reason="stop", usage=Usage()
    )
    objs = _sse_objects(enc.encode(only))
    assert [o["choices"][0]["delta"] for o in objs] == [{"role": "assistant", "content": ""}, {}]


def test_stream_end_and_error_events():
    from services.contracts.errors import ProviderError

    enc = ChunkEncoder("r1", "m", 1, False)
    assert enc.end() == b"data: [DONE]\n\n"
    err = _sse_objects(enc.error(ProviderError("upstream went away")))[0]
    check("ErrorResponse", err)
    assert err["error"] == {
        "message": "upstream went away",
        "type": "api_error",
        "param": None,
        "code": "provider_error",
    }


def test_overhead_header_subtracts_provider_ttft_when_reported():
    enc = ChunkEncoder("r1", "m", 1, False)
    chunk = ChunkEmitted(**IDS, seq=0, delta=Delta(role="assistant", content="x"))
    [(name, value)] = enc.first_headers(chunk, 12.5)
    assert name == b"x-llmgw-overhead-ms" and float(value) == 12.5
    object.__setattr__(chunk, "ttft_ms", 10.0)  # once chunk events report the provider's TTFT
    assert float(enc.first_headers(chunk, 12.5)[0][1]) == 2.5


def test_result_to_native_answer():
    body = native_json(result(request_id="abc-1"), "demo-openai")
    assert body == {
        "id": "abc-1",
        "model": "demo-openai",
        "provider": "emulator-openai",
        "fallback_used": False,
        "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
        "message": {"role": "assistant", "content": "hello"},
    }


def test_chat_requested_unchanged_by_mapping():
    # the event the edge publishes is the contract model itself
    fake = FakePipeline()
    req = fake.request(Caller("demo", "u"), "demo-openai", MSG, stream=True, request_id="x")
    assert isinstance(req, ChatRequested) and req.stream and req.reply_to is None
