"""Ollama adapter: /api/chat request mapping, response reading, NDJSON stream, HTTP wiring."""

from __future__ import annotations

import orjson
import pytest

from services.contracts.errors import CapabilityNotSupported, ProviderError
from services.contracts.events import Usage
from services.executor.providers.ollama import OllamaAdapter, OllamaStreamParser

from .fixtures import wire
from .support import answer, chat, collect, deployment, feed_all, streamed

ADAPTER = OllamaAdapter()
DEP = deployment("ollama", "http://ollama.test:11434", "llama3.2")


@pytest.mark.parametrize("stream", [True, False])
def test_to_wire_sets_stream_explicitly(stream: bool) -> None:
    assert ADAPTER.to_wire(chat(), DEP, stream=stream)["stream"] is stream


def test_to_wire_options_and_extra() -> None:
    req = chat(
        temperature=0.1,
        top_p=0.8,
        seed=3,
        stop=["###"],
        max_tokens=200,
        extra={"keep_alive": "5m", "think": False, "options": {"num_ctx": 8192, "temperature": 1.5}},
    )
    body = ADAPTER.to_wire(req, DEP, stream=False)
    assert body == {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": False,
        "keep_alive": "5m",
        "think": False,
        "options": {
            "num_ctx": 8192,
            "temperature": 0.1,
            "top_p": 0.8,
            "seed": 3,
            "stop": ["###"],
            "num_predict": 200,
        },
    }


def test_to_wire_no_params_no_options() -> None:
    assert "options" not in ADAPTER.to_wire(chat(), DEP, stream=True)


def test_to_wire_messages_images_and_tool_calls() -> None:
    req = chat(
        {"role": "developer", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is it?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "18°C"},
    )
    assert ADAPTER.to_wire(req, DEP, stream=False)["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is it?", "images": ["iVBORw0KGgo="]},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"location": "Paris"}}}],
        },
        {"role": "tool", "content": "18°C", "tool_name": "get_weather"},
    ]


def test_to_wire_refuses_remote_images() -> None:
    req = chat(
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}
    )
    with pytest.raises(CapabilityNotSupported):
        ADAPTER.to_wire(req, DEP, stream=False)


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        ({"type": "json_object"}, "json"),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            {"type": "object"},
        ),
    ],
)
def test_to_wire_response_format(response_format, expected) -> None:
    assert ADAPTER.to_wire(chat(response_format=response_format), DEP, stream=False)["format"] == expected


def test_from_wire_tool_calls_get_ids() -> None:
    done = ADAPTER.from_wire(orjson.loads(wire("ollama_tools.json")))
    assert done.finish_reason == "tool_calls"
    assert done.message.content is None
    (call,) = done.message.tool_calls or []
    assert call.id.startswith("call_")
    assert (call.function.name, orjson.loads(call.function.arguments)) == (
        "get_weather",
        {"location": "Paris"},
    )
    assert done.usage == Usage(prompt_tokens=173, completion_tokens=18, total_tokens=191)


def test_from_wire_length_and_cached_prompt() -> None:
    body = {
        "model": "m",
        "message": {"role": "assistant", "content": "abc"},
        "done": True,
        "done_reason": "length",
        "eval_count": 4,
    }
    done = ADAPTER.from_wire(body)
    assert (done.finish_reason, done.usage.prompt_tokens, done.usage.completion_tokens) == ("length", 0, 4)


def test_stream_tool_calls() -> None:
    deltas = feed_all(OllamaStreamParser(), wire("ollama_tools.ndjson"))
    (call,) = [tc for d in deltas for tc in d.tool_calls or []]
    assert (call.index, call.name, orjson.loads(call.arguments)) == (0, "get_weather", {"location": "Paris"})
    assert call.id
    assert deltas[-1].finish_reason == "tool_calls"
    assert deltas[-1].usage == Usage(prompt_tokens=173, completion_tokens=18, total_tokens=191)


def test_stream_error_line_is_a_provider_error() -> None:
    parser = OllamaStreamParser("ollama-local")
    parser.feed('{"model":"llama3.2","message":{"role":"assistant","content":"Hel"},"done":false}')
    with pytest.raises(
        ProviderError, match="ollama-local: stream error: an error was encountered while running"
    ):
        parser.feed('{"error":"an error was encountered while running the model: unexpected EOF"}')


def test_stream_without_done_line_is_truncated() -> None:
    parser = OllamaStreamParser()
    parser.feed('{"model":"llama3.2","message":{"role":"assistant","content":"Hel"},"done":false}')
    parser.feed("")
    with pytest.raises(ProviderError, match="stream ended before the done line"):
        parser.close()


async def test_complete_posts_to_api_chat(mock_http) -> None:
    http, rec = mock_http(answer(200, wire("ollama_text.json")))
    done = await ADAPTER.complete(http, chat(max_tokens=50), DEP, None)
    assert done.usage.total_tokens == 36
    assert str(rec.request.url) == "http://ollama.test:11434/api/chat"
    assert rec.body == {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": False,
        "options": {"num_predict": 50},
    }


async def test_model_not_found(mock_http) -> None:
    http, _ = mock_http(answer(404, b'{"error":"model \\"llama9\\" not found, try pulling it first"}'))
    with pytest.raises(ProviderError, match='HTTP 404: model "llama9" not found') as err:
        await collect(ADAPTER.stream(http, chat(), DEP, None))
    assert err.value.details["upstream_status"] == 404


async def test_stream_over_http(mock_http) -> None:
    http, rec = mock_http(streamed(wire("ollama_tools.ndjson"), "application/x-ndjson", piece=50))
    deltas = await collect(ADAPTER.stream(http, chat(), DEP, None))
    assert deltas[-1].finish_reason == "tool_calls"
    assert rec.body["stream"] is True
