"""The official ``anthropic`` SDK against the edge's Messages API, over the whole stack, for each
chat wire format: ``messages.create``, ``messages.stream`` (its accumulator), tool use and tool
results, media blocks, ``count_tokens``, and errors as the SDK's exception classes; the raw SSE
checked frame by frame."""

from __future__ import annotations

import base64
from typing import Any

import anthropic
import httpx
import jsonschema
import orjson
import pytest

from services.contracts.events import new_id

from .test_edge_openai import DEMO_KEY
from .test_media import pdf, png

ALIASES = ["demo-openai", "demo-anthropic", "demo-ollama", "demo-gemini"]
ASK = [{"role": "user", "content": "tell me about kafka partitions"}]
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city"],
}
WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": WEATHER_SCHEMA,
}
#: The emulator calls a tool when its scenario asks (Ollama has no tool_choice) or tool_choice forces one
TOOL = {"emulator_scenario": "tool=1"}


def forced_tool(alias: str) -> dict[str, Any]:
    """Arguments that make ``alias`` call the weather tool: ``tool_choice: any`` and, but for
    Gemini (whose emulator refuses the unknown ``emulator_scenario`` field), the scenario."""
    return {"tool_choice": {"type": "any"}, **({} if alias == "demo-gemini" else {"extra_body": TOOL})}


@pytest.fixture(scope="module")
def client(edge_url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=DEMO_KEY, base_url=edge_url, max_retries=0, timeout=30)


@pytest.fixture
def aclient(edge_url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key=DEMO_KEY, base_url=edge_url, max_retries=0, timeout=30)


def sse_frames(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) of every frame; a frame without its ``event:`` line fails the test."""
    out = []
    for raw in body.split(b"\n\n"):
        lines = [ln for ln in raw.split(b"\n") if ln and not ln.startswith(b":")]
        if lines:
            event, data = lines
            assert event.startswith(b"event: ") and data.startswith(b"data: "), raw
            out.append((event[7:].decode(), orjson.loads(data[6:])))
    return out


# --- each wire format -------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ALIASES)
def test_create_each_wire_format(client: anthropic.Anthropic, alias: str) -> None:
    raw = client.messages.with_raw_response.create(model=alias, max_tokens=100, messages=ASK)
    msg = raw.parse()
    assert msg.type == "message" and msg.role == "assistant" and msg.model == alias
    assert (
        msg.id == f"msg_{raw.headers['request-id']}"
        and raw.headers["request-id"] == raw.headers["x-request-id"]
    )
    [block] = msg.content
    assert block.type == "text" and block.text
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert msg.usage.output_tokens == 8 and msg.usage.input_tokens > 0


@pytest.mark.parametrize("alias", ALIASES)
async def test_stream_each_wire_format(aclient: anthropic.AsyncAnthropic, alias: str) -> None:
    whole = await aclient.messages.create(model=alias, max_tokens=100, messages=ASK)
    async with aclient.messages.stream(model=alias, max_tokens=100, messages=ASK) as stream:
        texts = [t async for t in stream.text_stream]
        final = await stream.get_final_message()
    assert texts and final.content[0].type == "text" and final.content[0].text == "".join(texts)
    assert final.stop_reason == "end_turn" and final.model == alias
    # the accumulator ends with the upstream's counts (message_delta), the same as a whole answer's
    assert (final.usage.input_tokens, final.usage.output_tokens) == (whole.usage.input_tokens, 8)


@pytest.mark.parametrize("alias", ALIASES)
async def test_raw_stream_grammar(edge_url: str, alias: str) -> None:
    async with httpx.AsyncClient(base_url=edge_url, timeout=30) as http:
        r = await http.post(
            "/v1/messages",
            json={
                "model": alias,
                "max_tokens": 100,
                "messages": ASK,
                "stream": True,
                "tools": [WEATHER],
                "tool_choice": {"type": "any"},
                **forced_tool(alias).get("extra_body", {}),
            },
            headers={"x-api-key": DEMO_KEY, "anthropic-version": "2023-06-01"},
        )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.text
    frames = sse_frames(r.content)
    names = [e for e, _ in frames]
    assert names[0] == "message_start" and names.count("message_start") == 1
    assert names[-2:] == ["message_delta", "message_stop"]
    started: list[int] = []
    open_index = None
    for name, data in frames:
        assert data["type"] == name
        if name == "content_block_start":
            assert open_index is None and data["index"] == len(started)
            started.append(data["index"])
            open_index = data["index"]
        elif name == "content_block_delta":
            assert data["index"] == open_index
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
    assert frames[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert frames[-2][1]["usage"]["output_tokens"] > 0 and frames[-2][1]["usage"]["input_tokens"] > 0


# --- tools ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ALIASES)
def test_tool_use_and_results_each_wire_format(client: anthropic.Anthropic, alias: str) -> None:
    first = client.messages.create(
        model=alias,
        max_tokens=200,
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[WEATHER],
        **forced_tool(alias),
    )
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].id
    jsonschema.validate(uses[0].input, WEATHER_SCHEMA)
    answer = client.messages.create(
        model=alias,
        max_tokens=200,
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny, 21 C"}],
            },
        ],
    )
    assert answer.stop_reason == "end_turn" and answer.content[0].type == "text" and answer.content[0].text


@pytest.mark.parametrize("alias", ALIASES)
async def test_streamed_tool_use_each_wire_format(aclient: anthropic.AsyncAnthropic, alias: str) -> None:
    async with aclient.messages.stream(
        model=alias,
        max_tokens=200,
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[WEATHER],
        **{**forced_tool(alias), "tool_choice": {"type": "tool", "name": "get_weather"}},
    ) as stream:
        final = await stream.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and [u.name for u in uses] == ["get_weather"]
    jsonschema.validate(uses[0].input, WEATHER_SCHEMA)


def test_tool_choice_none_answers_text(client: anthropic.Anthropic) -> None:
    msg = client.messages.create(
        model="demo-anthropic",
        max_tokens=100,
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[WEATHER],
        tool_choice={"type": "none"},
        extra_body=TOOL,
    )
    assert [b.type for b in msg.content] == ["text"] and msg.stop_reason == "end_turn"


# --- media blocks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ALIASES)
async def test_image_blocks_reach_each_wire_format(aclient: anthropic.AsyncAnthropic, alias: str) -> None:
    img = png(64, 48)
    msg = await aclient.messages.create(
        model=alias,
        max_tokens=200,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/png",
                            "data": base64.b64encode(img).decode(),
                        },
                    },
                    {"type": "text", "text": "what is this?"},
                ],
            }
        ],
    )
    assert f"image/png {len(img)} bytes" in msg.content[0].text


@pytest.mark.parametrize("alias", ["demo-openai", "demo-anthropic", "demo-gemini"])
async def test_a_pdf_document_block(aclient: anthropic.AsyncAnthropic, alias: str) -> None:
    body = pdf("The launch code is tangerine")
    msg = await aclient.messages.create(
        model=alias,
        max_tokens=200,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "document",
                        "title": "memo.pdf",
                        "source": {
                            "type": "base64",
                            "media_type": "application/pdf",
                            "data": base64.b64encode(body).decode(),
                        },
                    },
                    {"type": "text", "text": "summarise"},
                ],
            }
        ],
    )
    assert f"application/pdf {len(body)} bytes" in msg.content[0].text


# --- count_tokens, keys, errors ------------------------------------------------------------------------------


def test_count_tokens(client: anthropic.Anthropic) -> None:
    short = client.messages.count_tokens(model="demo-gemini", messages=[{"role": "user", "content": "hi"}])
    longer = client.messages.count_tokens(model="demo-gemini", messages=ASK, tools=[WEATHER])
    assert 0 < short.input_tokens < longer.input_tokens
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="no-such-model", messages=ASK)


async def test_x_api_key_and_anthropic_version(edge_url: str) -> None:
    async with httpx.AsyncClient(base_url=edge_url, timeout=30) as http:
        ok = await http.post(
            "/v1/messages",
            json={"model": "demo-ollama", "max_tokens": 50, "messages": ASK},
            headers={
                "x-api-key": DEMO_KEY,
                "anthropic-version": "2023-06-01",
                "x-request-id": f"anth-{new_id()}",
            },
        )
        bad = await http.post(
            "/v1/messages",
            json={"model": "demo-ollama", "max_tokens": 50, "messages": ASK},
            headers={"x-api-key": "sk-nope"},
        )
    assert ok.status_code == 200 and ok.json()["id"] == f"msg_{ok.headers['x-request-id']}"
    assert bad.status_code == 401 and bad.json()["error"]["type"] == "authentication_error"


def test_unknown_model_is_not_found(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as whole:
        client.messages.create(model="no-such-model", max_tokens=10, messages=ASK)
    assert whole.value.body["error"]["type"] == "not_found_error"
    assert whole.value.response.headers["x-should-retry"] == "false"
    with pytest.raises(anthropic.NotFoundError):
        with client.messages.stream(model="no-such-model", max_tokens=10, messages=ASK) as stream:
            stream.get_final_message()


def test_bad_key_is_an_authentication_error(edge_url: str) -> None:
    bad = anthropic.Anthropic(api_key="sk-not-a-key", base_url=edge_url, max_retries=0, timeout=30)
    with pytest.raises(anthropic.AuthenticationError) as exc:
        bad.messages.create(model="demo-openai", max_tokens=10, messages=ASK)
    assert exc.value.body["type"] == "error" and exc.value.body["error"]["type"] == "authentication_error"


def test_validation_error_is_invalid_request(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.messages.create(
            model="demo-openai", max_tokens=10, messages=ASK, extra_body={"temperature": 1.7}
        )
    assert exc.value.body["error"]["type"] == "invalid_request_error"
    assert "temperature" in exc.value.body["error"]["message"]


def test_provider_unavailable_is_overloaded_529(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.OverloadedError) as exc:
        client.messages.create(
            model="demo-openai", max_tokens=10, messages=ASK, extra_body={"emulator_scenario": "status=503"}
        )
    assert exc.value.status_code == 529 and exc.value.response.headers["x-should-retry"] == "true"
    assert exc.value.body["error"]["type"] == "overloaded_error"


def test_an_error_mid_stream_is_an_error_event(client: anthropic.Anthropic) -> None:
    texts: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as exc:
        with client.messages.stream(
            model="demo-openai",
            max_tokens=100,
            messages=ASK,
            extra_body={"emulator_scenario": "tokens=20,disconnect_after=3,chunk_delay_ms=30"},
        ) as stream:
            texts.extend(stream.text_stream)
    assert "".join(texts).strip()  # the text before the failure arrived
    assert exc.value.body["error"]["type"] == "overloaded_error"
