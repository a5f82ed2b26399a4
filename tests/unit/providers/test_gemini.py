"""Gemini adapter: request translation (turns, parts, media, tools, config), answers and the SSE
stream read back, uploads through the Files API, and the adapter against the in-process
emulator's Gemini API."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import jsonschema
import orjson
import pytest

from services.contracts.errors import CapabilityNotSupported, ProviderError, ValidationError
from services.contracts.events import Usage
from services.emulator import create_app
from services.executor.providers import gemini
from services.executor.providers._gemini_files import UploadedFile
from services.executor.providers.gemini import GeminiAdapter, GeminiStreamParser, to_upload
from services.executor.providers.transport import StreamingReply

from .support import AsgiTransport, answer, chat, collect, deployment, feed_all, joined, streamed

ADAPTER = GeminiAdapter()
DEP = deployment(
    "gemini", "https://generativelanguage.test/", "models/gemini-2.5-flash", provider="gemini-main"
)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}
ASK = {"role": "user", "content": "weather and time in Paris?"}


def b64(body: bytes) -> str:
    return base64.b64encode(body).decode()


def ref(mime: str, body: bytes, media_id: str = "med_" + "0" * 32, **extra: Any) -> dict[str, Any]:
    """A MediaRef dict with its bytes, as the executor's materialiser leaves it."""
    return {"media_id": media_id, "mime_type": mime, "bytes": len(body), "data": b64(body), **extra}


def image(body: bytes, mime: str = "image/png", **media: Any) -> dict[str, Any]:
    return {
        "type": "image_url",
        "image_url": {"url": "https://img.test/cat.png"},
        "media": ref(mime, body, **media),
    }


def file(body: bytes, mime: str = "application/pdf", name: str | None = None, **media: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"file_id": "file-" + "1" * 32}
    if name:
        spec["filename"] = name
    return {"type": "file", "file": spec, "media": ref(mime, body, **media)}


def video(body: bytes, **media: Any) -> dict[str, Any]:
    return {"type": "video_url", "video_url": {"url": "file-abc"}, "media": ref("video/mp4", body, **media)}


def audio(body: bytes) -> dict[str, Any]:
    return {"type": "input_audio", "input_audio": {"format": "wav"}, "media": ref("audio/wav", body)}


def said(*parts: dict[str, Any], text: str = "what is this?") -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text}, *parts]}


def wire(*messages: dict[str, Any], **params: Any) -> dict[str, Any]:
    return ADAPTER.to_wire(chat(*messages, **params), DEP, stream=False)


# --- request: turns, config --------------------------------------------------------------------------


def test_to_wire_system_turns_and_config() -> None:
    body = wire(
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Bonjour"},
        {"role": "user", "content": "Ça va?"},
        temperature=0.2,
        top_p=0.9,
        max_tokens=50,
        stop=["END"],
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
    )
    assert body == {
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Answer in French."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Bonjour"}]},
            {"role": "user", "parts": [{"text": "Ça va?"}]},
        ],
        "generationConfig": {
            "temperature": 0.2,
            "topP": 0.9,
            "maxOutputTokens": 50,
            "stopSequences": ["END"],
            "seed": 7,
            "presencePenalty": 0.5,
            "frequencyPenalty": -0.5,
        },
    }
    assert ADAPTER.to_wire(chat(), DEP, stream=True) == ADAPTER.to_wire(chat(), DEP, stream=False), (
        "the URL says"
    )


def test_extra_fields() -> None:
    body = wire(
        max_tokens=None,
        extra={
            "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
            "generationConfig": {"topK": 3, "temperature": 1.0},
            "max_completion_tokens": 99,
            "parallel_tool_calls": False,
            "user": "u-1",
            "stream_options": {"include_usage": True},
        },
        temperature=0.1,
    )
    assert body["safetySettings"][0]["threshold"] == "BLOCK_NONE"
    assert body["generationConfig"] == {"topK": 3, "temperature": 0.1, "maxOutputTokens": 99}
    assert not {"parallel_tool_calls", "user", "stream_options", "max_completion_tokens"} & set(body)
    with pytest.raises(ValidationError, match="generationConfig"):
        wire(extra={"generationConfig": "hot"})


def test_multi_part_messages_and_unresolved_urls() -> None:
    body = wire(
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Compare"},
                {"type": "text", "text": ""},
                {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGRiIAAABXRUJQ"}},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://img.test/cat.jpg?size=2", "detail": "high"},
                },
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "mp3"}},
                {"type": "video_url", "video_url": {"url": "https://www.youtube.com/watch?v=abc"}},
            ],
        },
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "and?"},
    )
    assert body["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "Compare"},
                {"inlineData": {"mimeType": "image/webp", "data": "UklGRiIAAABXRUJQ"}},
                {"fileData": {"fileUri": "https://img.test/cat.jpg?size=2", "mimeType": "image/jpeg"}},
                {"inlineData": {"mimeType": "audio/mp3", "data": "UklGRg=="}},
                {"fileData": {"fileUri": "https://www.youtube.com/watch?v=abc"}},
            ],
        },
        {"role": "user", "parts": [{"text": "and?"}]},
    ], "empty texts and an empty turn are not sent"


def test_unknown_parts_are_refused() -> None:
    with pytest.raises(CapabilityNotSupported, match="'refusal' content parts"):
        wire({"role": "user", "content": [{"type": "refusal", "refusal": "no"}]})
    with pytest.raises(CapabilityNotSupported, match="wav or mp3"):
        wire(
            {
                "role": "user",
                "content": [{"type": "input_audio", "input_audio": {"data": "AA==", "format": "flac"}}],
            }
        )


def test_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    assert wire(response_format=rf)["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }
    assert wire(response_format={"type": "json_object"})["generationConfig"] == {
        "responseMimeType": "application/json"
    }
    assert "generationConfig" not in wire(response_format={"type": "text"})


# --- request: tools -----------------------------------------------------------------------------------


def test_tools_and_tool_choice() -> None:
    body = wire(ASK, tools=[WEATHER, TIME, {"googleSearch": {}}], tool_choice="auto")
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parametersJsonSchema": WEATHER["function"]["parameters"],
                },
                {"name": "get_time", "parametersJsonSchema": {"type": "object", "properties": {}}},
            ]
        },
        {"googleSearch": {}},
    ]
    choices: list[tuple[Any, dict[str, Any]]] = [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "get_time"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_time"]},
        ),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "auto",
                    "tools": [{"type": "function", "function": {"name": "get_time"}}],
                },
            },
            {"mode": "VALIDATED", "allowedFunctionNames": ["get_time"]},
        ),
    ]
    for choice, expected in choices:
        assert wire(ASK, tools=[WEATHER], tool_choice=choice)["toolConfig"] == {
            "functionCallingConfig": expected
        }
    assert "toolConfig" not in wire(ASK, tool_choice="auto"), "no tools, no tool config"
    with pytest.raises(CapabilityNotSupported, match="'web_search' tools"):
        wire(ASK, tools=[{"type": "web_search"}])
    with pytest.raises(ValidationError, match="tool_choice"):
        wire(ASK, tools=[WEATHER], tool_choice="sometimes")


CALLS = [
    {
        "id": "call_0",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    },
    {"id": "fc-given~c2lnbmF0dXJl", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
]


def test_tool_round_trip_to_wire() -> None:
    body = wire(
        ASK,
        {"role": "assistant", "content": "Checking.", "tool_calls": CALLS},
        {"role": "tool", "tool_call_id": "call_0", "content": '{"temp_c": 18}'},
        {"role": "tool", "tool_call_id": "fc-given~c2lnbmF0dXJl", "content": "14:05"},
        {"role": "user", "content": "thanks"},
        tools=[WEATHER, TIME],
    )
    assert body["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {"text": "Checking."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {
                    "functionCall": {"name": "get_time", "args": {}, "id": "fc-given"},
                    "thoughtSignature": "c2lnbmF0dXJl",
                },
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temp_c": 18}}},
                {"functionResponse": {"name": "get_time", "response": {"output": "14:05"}, "id": "fc-given"}},
            ],
        },
        {"role": "user", "parts": [{"text": "thanks"}]},
    ]


def test_a_result_naming_no_call_is_refused() -> None:
    with pytest.raises(ValidationError, match="answers no tool call"):
        wire(ASK, {"role": "tool", "tool_call_id": "call_9", "content": "x"})
    named = wire(ASK, {"role": "tool", "tool_call_id": "call_9", "name": "get_time", "content": "x"})
    assert named["contents"][1]["parts"][0]["functionResponse"]["name"] == "get_time"


# --- request: resolved media --------------------------------------------------------------------------


PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 40
PDF = b"%PDF-1.7\n" + b"x" * 30


def test_resolved_media_parts() -> None:
    body = wire(
        said(
            image(PNG),
            file(PDF),
            file(b"hello notes", "text/plain", name="notes.txt"),
            audio(b"RIFF0000WAVE"),
            video(b"\0\0\0\x18ftypmp42"),
        )
    )
    parts = body["contents"][0]["parts"]
    assert parts == [
        {"text": "what is this?"},
        {"inlineData": {"mimeType": "image/png", "data": b64(PNG)}},
        {"inlineData": {"mimeType": "application/pdf", "data": b64(PDF)}},
        {"text": "notes.txt\nhello notes"},
        {"inlineData": {"mimeType": "audio/wav", "data": b64(b"RIFF0000WAVE")}},
        {"inlineData": {"mimeType": "video/mp4", "data": b64(b"\0\0\0\x18ftypmp42")}},
    ]
    assert b'"media"' not in orjson.dumps(body), "the media key never leaves the gateway"


def test_a_passed_url_and_an_upload_go_as_file_data() -> None:
    passed = image(PNG, source="https://img.test/cat.png", pass_url=True)
    big = video(b"v" * 10, media_id="med_" + "9" * 32)
    files = {
        "med_" + "9" * 32: UploadedFile(
            "files/v1", "https://generativelanguage.test/v1beta/files/v1", "video/mp4"
        )
    }
    body = ADAPTER.to_wire(chat(said(passed, big)), DEP, stream=False, files=files)
    assert body["contents"][0]["parts"][1:] == [
        {"fileData": {"mimeType": "image/png", "fileUri": "https://img.test/cat.png"}},
        {"fileData": {"mimeType": "video/mp4", "fileUri": "https://generativelanguage.test/v1beta/files/v1"}},
    ]


def test_types_gemini_does_not_read_are_refused() -> None:
    with pytest.raises(CapabilityNotSupported, match="image/gif images") as err:
        wire(said(image(b"GIF89a", "image/gif")))
    assert err.value.param == "messages"
    with pytest.raises(CapabilityNotSupported, match="application/zip files"):
        wire(said(file(b"PK\3\4", "application/zip")))


def test_what_goes_inline_and_what_is_uploaded() -> None:
    a, b, c = (b"a" * 30, "med_a"), (b"b" * 60, "med_b"), (b"c" * 30, "med_c")  # base64: 40, 80, 40 chars
    req = chat(
        said(
            image(a[0], media_id=a[1]),
            video(b[0], media_id=b[1]),
            file(c[0], media_id=c[1]),
            video(b[0], media_id=b[1]),
        )
    )
    assert [r.media_id for r in to_upload(req, inline_max=100)] == ["med_b"], (
        "b does not fit after a; c still does"
    )
    assert [r.media_id for r in to_upload(req, inline_max=80)] == ["med_b"]
    assert [r.media_id for r in to_upload(req, inline_max=39)] == ["med_a", "med_b", "med_c"]
    assert to_upload(req) == [], "INLINE_MAX is 18 MiB"
    text_and_url = chat(
        said(file(b"x" * 100, "text/plain"), image(PNG, source="https://img.test/a.png", pass_url=True))
    )
    assert to_upload(text_and_url, inline_max=1) == [], "text files and passed URLs carry no bytes"


# --- answers ------------------------------------------------------------------------------------------


def answer_body(
    parts: list[dict[str, Any]] | None, finish: str | None = "STOP", **extra: Any
) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "content": {"role": "model", **({"parts": parts} if parts is not None else {})},
        "index": 0,
    }
    if finish:
        candidate["finishReason"] = finish
    return {
        "candidates": [candidate],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 4, "totalTokenCount": 14},
        "modelVersion": "gemini-2.5-flash",
        "responseId": "r1",
        **extra,
    }


def test_from_wire_text() -> None:
    done = ADAPTER.from_wire(
        answer_body([{"text": "thinking...", "thought": True}, {"text": "Hello"}, {"text": " there"}])
    )
    assert done.message.content == "Hello there" and done.message.tool_calls is None
    assert (done.finish_reason, done.model) == ("stop", "gemini-2.5-flash")
    assert done.usage == Usage(prompt_tokens=10, completion_tokens=4, total_tokens=14)


def test_usage_counts_thoughts_tool_prompts_and_cache() -> None:
    usage = gemini.usage_from(
        {
            "promptTokenCount": 100,
            "cachedContentTokenCount": 60,
            "toolUsePromptTokenCount": 5,
            "candidatesTokenCount": 20,
            "thoughtsTokenCount": 30,
            "totalTokenCount": 155,
        }
    )
    assert usage == Usage(prompt_tokens=105, completion_tokens=50, total_tokens=155, cached_tokens=60)


def test_from_wire_function_calls() -> None:
    body = answer_body(
        [
            {"text": "Let me check."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"},
            {"functionCall": {"name": "get_time", "args": {}, "id": "fc-7"}},
        ]
    )
    done = ADAPTER.from_wire(body)
    assert done.finish_reason == "tool_calls" and done.message.content == "Let me check."
    calls = done.message.tool_calls or []
    assert [(c.id, c.function.name, orjson.loads(c.function.arguments)) for c in calls] == [
        ("call_0~c2ln", "get_weather", {"city": "Paris"}),
        ("fc-7", "get_time", {}),
    ]
    again = ADAPTER.to_wire(
        chat(ASK, {"role": "assistant", "content": None, "tool_calls": [c.model_dump() for c in calls]}),
        DEP,
        stream=False,
    )
    assert again["contents"][1]["parts"] == [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"},
        {"functionCall": {"name": "get_time", "args": {}, "id": "fc-7"}},
    ], "what came back goes back as it was"


@pytest.mark.parametrize(
    ("finish", "expected"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        *(
            (f, "content_filter")
            for f in ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY")
        ),
        ("OTHER", "stop"),
        ("FINISH_REASON_UNSPECIFIED", "stop"),
        (None, "stop"),
    ],
)
def test_finish_reasons(finish: str | None, expected: str) -> None:
    assert ADAPTER.from_wire(answer_body([{"text": "x"}], finish)).finish_reason == expected


def test_an_empty_candidate_and_a_safety_block() -> None:
    empty = ADAPTER.from_wire(answer_body(None, "MAX_TOKENS"))
    assert (empty.message.content, empty.message.tool_calls, empty.finish_reason) == (None, None, "length")
    blocked = ADAPTER.from_wire(answer_body(None, "SAFETY", promptFeedback=None))
    assert (blocked.message.content, blocked.finish_reason) == (None, "content_filter")
    prompt_blocked = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
    }
    done = ADAPTER.from_wire(prompt_blocked)
    assert (done.message.content, done.finish_reason, done.usage.prompt_tokens) == (None, "content_filter", 9)
    with pytest.raises(ValueError, match="no candidates"):
        ADAPTER.from_wire({"usageMetadata": {}})


async def test_an_answer_with_no_candidates_is_a_provider_error(mock_http: Any) -> None:
    http, _ = mock_http(answer(200, b'{"usageMetadata": {"promptTokenCount": 3}}'))
    with pytest.raises(ProviderError, match="unexpected response shape"):
        await ADAPTER.complete(http, chat(), DEP, "k")


# --- the stream ---------------------------------------------------------------------------------------


def sse(*events: dict[str, Any]) -> str:
    return "".join(f"data: {orjson.dumps(e).decode()}\r\n\r\n" for e in events)


def chunk(parts: list[dict[str, Any]], finish: str | None = None, completion: int = 1) -> dict[str, Any]:
    body = answer_body(parts, finish)
    body["usageMetadata"] = {
        "promptTokenCount": 10,
        "candidatesTokenCount": completion,
        "totalTokenCount": 10 + completion,
    }
    return body


def test_stream_text() -> None:
    stream = sse(
        chunk([{"text": "Hello"}], completion=1),
        chunk([{"text": " there"}, {"text": "!"}], completion=3),
        chunk([], "STOP", 3),
    )
    deltas = feed_all(GeminiStreamParser(), stream)
    assert joined(deltas) == "Hello there!"
    assert [d.finish_reason for d in deltas] == [None, None, None, "stop"]
    assert deltas[-1].usage == Usage(prompt_tokens=10, completion_tokens=3, total_tokens=13), (
        "the latest, not a sum"
    )
    assert deltas[-1].model == "gemini-2.5-flash"


def test_stream_function_calls() -> None:
    stream = sse(
        chunk([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]),
        chunk(
            [
                {"functionCall": {"name": "get_time", "args": {}}},
                {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},
            ],
            "STOP",
        ),
    )
    deltas = feed_all(GeminiStreamParser(), stream)
    calls = [tc for d in deltas for tc in d.tool_calls or ()]
    assert [(c.index, c.id, c.name, c.arguments) for c in calls] == [
        (0, "call_0", "get_weather", '{"city":"Paris"}'),
        (1, "call_1", "get_time", "{}"),
        (2, "call_2", "get_weather", '{"city":"Oslo"}'),
    ]
    assert deltas[-1].finish_reason == "tool_calls"


def test_a_stream_ending_without_finish_reason_is_a_provider_error() -> None:
    parser = GeminiStreamParser("gemini-main")
    for line in sse(chunk([{"text": "Hel"}]), chunk([{"text": "lo"}])).splitlines():
        parser.feed(line)
    with pytest.raises(ProviderError, match="gemini-main: stream ended before a finishReason"):
        parser.close()


def test_stream_errors_blocks_and_noise() -> None:
    parser = GeminiStreamParser()
    with pytest.raises(ProviderError, match="overloaded") as err:
        parser.feed(
            'data: {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}'
        )
    assert err.value.details == {"upstream_status": 503, "upstream_type": "UNAVAILABLE"}
    blocked = feed_all(GeminiStreamParser(), sse({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}))
    assert [d.finish_reason for d in blocked] == ["content_filter"]
    parser = GeminiStreamParser()
    assert parser.feed(": keep-alive") == [] and parser.feed("") == [] and parser.feed("event: x") == []
    assert (
        parser.feed(sse(chunk([{"text": "a"}], "SAFETY")).splitlines()[0])[-1].finish_reason
        == "content_filter"
    )
    assert parser.feed(sse(chunk([{"text": "late"}])).splitlines()[0]) == [], "nothing after the finish"
    with pytest.raises(ProviderError, match="malformed stream line"):
        GeminiStreamParser().feed("data: [1, 2]")


# --- endpoint and HTTP --------------------------------------------------------------------------------


def test_endpoint() -> None:
    assert ADAPTER.endpoint(DEP, "k") == (
        "https://generativelanguage.test/v1beta/models/gemini-2.5-flash:generateContent",
        {"content-type": "application/json", "x-goog-api-key": "k"},
    )
    url, hdrs = ADAPTER.endpoint(DEP, None, stream=True)
    assert (
        url == "https://generativelanguage.test/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    )
    assert hdrs == {"content-type": "application/json"}


async def test_what_reaches_the_wire(mock_http: Any) -> None:
    http, rec = mock_http(answer(200, orjson.dumps(answer_body([{"text": "Hi"}]))))
    done = await ADAPTER.complete(http, chat(), DEP, "secret")
    assert done.message.content == "Hi"
    sent = rec.request
    assert str(sent.url) == "https://generativelanguage.test/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent.headers["x-goog-api-key"] == "secret" and "authorization" not in sent.headers
    assert rec.body == {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}


async def test_a_stream_cut_before_its_finish_is_a_provider_error(mock_http: Any) -> None:
    body = sse(chunk([{"text": "Hel"}]), chunk([{"text": "lo"}])).encode()
    http, rec = mock_http(streamed(body, "text/event-stream", piece=7))
    seen: list[str] = []
    with pytest.raises(ProviderError, match="gemini-main: stream ended before a finishReason"):
        async for delta in ADAPTER.stream(http, chat(), DEP, "k"):
            seen.append(delta.content or "")
    assert "".join(seen) == "Hello", "what came before was delivered"
    assert str(rec.request.url).endswith(":streamGenerateContent?alt=sse")


async def test_provider_errors_keep_status_and_message(mock_http: Any) -> None:
    body = orjson.dumps(
        {"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}}
    )
    http, _ = mock_http(answer(429, body))
    for call in (ADAPTER.complete(http, chat(), DEP, "k"), collect(ADAPTER.stream(http, chat(), DEP, "k"))):
        with pytest.raises(ProviderError) as err:
            await call
        assert err.value.details["upstream_status"] == 429
        assert err.value.message == "gemini-main returned HTTP 429: Resource has been exhausted"


# --- uploads ------------------------------------------------------------------------------------------


class Reply:
    def __init__(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.status, self._body = status, body
        self.headers: Mapping[str, str] = httpx.Headers(headers or {})

    async def read(self) -> bytes:
        return self._body

    async def lines(self) -> AsyncIterator[str]:
        for line in self._body.decode().splitlines():
            yield line


class Scripted:
    """An ``HttpTransport`` (with ``get`` when ``gets``) answering from a script of replies, in
    order, and recording every call as ``(method, url, headers, body)``."""

    def __init__(self, *replies: Reply, gets: bool = True) -> None:
        self.replies = list(replies)
        self.calls: list[tuple[str, str, dict[str, str], bytes]] = []
        if gets:
            self.get = self._get

    def _next(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> Reply:
        self.calls.append((method, url, dict(headers), body))
        return self.replies.pop(0)

    async def post_json(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float | None
    ) -> tuple[int, bytes]:
        reply = self._next("POST", url, headers, body)
        return reply.status, reply._body

    @contextlib.asynccontextmanager
    async def stream_lines(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float | None
    ) -> AsyncIterator[StreamingReply]:
        yield self._next("POST", url, headers, body)

    async def _get(self, url: str, headers: Mapping[str, str], timeout_s: float | None) -> tuple[int, bytes]:
        reply = self._next("GET", url, headers, b"")
        return reply.status, reply._body

    async def aclose(self) -> None:
        pass


def file_resource(state: str, name: str = "files/abc") -> dict[str, Any]:
    return {
        "name": name,
        "uri": f"https://generativelanguage.test/v1beta/{name}",
        "mimeType": "video/mp4",
        "state": state,
    }


UPLOAD_URL = "https://uploads.elsewhere.test/upload/v1beta/files?upload_id=u1&upload_protocol=resumable"
CLIP = b"\0\0\0\x18ftypmp42" + b"\1" * 100
SMALL = GeminiAdapter(inline_max=50, poll_interval_s=0)


async def test_a_processing_upload_is_polled_until_active() -> None:
    http = Scripted(
        Reply(200, b"", {"X-Goog-Upload-URL": UPLOAD_URL, "X-Goog-Upload-Status": "active"}),
        Reply(200, orjson.dumps({"file": file_resource("PROCESSING")}), {"x-goog-upload-status": "final"}),
        Reply(200, orjson.dumps(file_resource("PROCESSING"))),
        Reply(200, orjson.dumps(file_resource("ACTIVE"))),
        Reply(200, orjson.dumps(answer_body([{"text": "a clip"}]))),
    )
    done = await SMALL.complete(http, chat(said(video(CLIP))), DEP, "k")
    assert done.message.content == "a clip"
    (m1, start, h1, meta), (m2, put, h2, sent), (m3, poll, _, _), _, (_, generate, _, body) = http.calls
    assert (m1, start) == ("POST", "https://generativelanguage.test/upload/v1beta/files")
    assert h1["x-goog-upload-protocol"] == "resumable" and h1["x-goog-upload-command"] == "start"
    assert (h1["x-goog-upload-header-content-length"], h1["x-goog-upload-header-content-type"]) == (
        str(len(CLIP)),
        "video/mp4",
    )
    assert orjson.loads(meta)["file"]["mimeType"] == "video/mp4"
    assert (
        put == "https://generativelanguage.test/upload/v1beta/files?upload_id=u1&upload_protocol=resumable"
    ), "the key stays with the provider's host"
    assert (h2["x-goog-upload-command"], h2["x-goog-upload-offset"], h2["x-goog-api-key"]) == (
        "upload, finalize",
        "0",
        "k",
    )
    assert sent == CLIP
    assert (m3, poll) == ("GET", "https://generativelanguage.test/v1beta/files/abc")
    assert generate.endswith(":generateContent")
    assert orjson.loads(body)["contents"][0]["parts"][1] == {
        "fileData": {"mimeType": "video/mp4", "fileUri": "https://generativelanguage.test/v1beta/files/abc"}
    }


async def test_a_processing_upload_without_a_way_to_poll_is_a_provider_error() -> None:
    http = Scripted(
        Reply(200, b"", {"x-goog-upload-url": UPLOAD_URL}),
        Reply(200, orjson.dumps({"file": file_resource("PROCESSING")})),
        gets=False,
    )
    with pytest.raises(
        ProviderError, match="files/abc is still PROCESSING and this transport cannot poll it"
    ):
        await SMALL.complete(http, chat(said(video(CLIP))), DEP, "k")


@pytest.mark.parametrize(
    ("replies", "message"),
    [
        (
            [Reply(403, b'{"error": {"code": 403, "message": "API key not valid"}}')],
            "HTTP 403: API key not valid",
        ),
        ([Reply(200, b"")], "upload start answered without X-Goog-Upload-URL"),
        (
            [
                Reply(200, b"", {"x-goog-upload-url": UPLOAD_URL}),
                Reply(400, b'{"error": {"message": "bad offset"}}'),
            ],
            "HTTP 400: bad offset",
        ),
        (
            [Reply(200, b"", {"x-goog-upload-url": UPLOAD_URL}), Reply(200, b'{"file": {}}')],
            "file answer has no file name and uri",
        ),
        (
            [
                Reply(200, b"", {"x-goog-upload-url": UPLOAD_URL}),
                Reply(
                    200, orjson.dumps({"file": {**file_resource("FAILED"), "error": {"message": "corrupt"}}})
                ),
            ],
            "could not process files/abc: corrupt",
        ),
    ],
)
async def test_upload_failures_are_provider_errors(replies: list[Reply], message: str) -> None:
    with pytest.raises(ProviderError, match=message):
        await SMALL.complete(Scripted(*replies), chat(said(video(CLIP))), DEP, "k")


async def test_nothing_is_uploaded_until_the_stream_is_iterated() -> None:
    http = Scripted()
    stream = SMALL.stream(http, chat(said(video(CLIP))), DEP, "k")
    assert http.calls == []
    await stream.aclose()


# --- against the emulator -----------------------------------------------------------------------------


@pytest.fixture
def app() -> Any:
    return create_app()


@pytest.fixture
async def emulator(app: Any) -> AsyncIterator[AsgiTransport]:
    async with AsgiTransport(app) as http:
        yield http


def emu(scenario: str = "") -> Any:
    return deployment(
        "gemini",
        "http://emulator",
        f"gemini-emu@{scenario}" if scenario else "gemini-emu",
        provider="gemini-emu",
    )


@pytest.mark.parametrize("stream", [False, True])
async def test_text_against_the_emulator(emulator: AsgiTransport, stream: bool) -> None:
    req = chat({"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"})
    if stream:
        deltas = await collect(ADAPTER.stream(emulator, req, emu("tokens=3,cached=2"), "k"))
        text, finish, usage = joined(deltas), deltas[-1].finish_reason, deltas[-1].usage
        assert [d for d in deltas if d.finish_reason] == [deltas[-1]]
    else:
        done = await ADAPTER.complete(emulator, req, emu("tokens=3,cached=2"), "k")
        text, finish, usage = done.message.content, done.finish_reason, done.usage
        assert done.model == "gemini-emu"
    assert (text, finish) == ("tok0 tok1 tok2", "stop")
    assert usage == Usage(prompt_tokens=10, completion_tokens=3, total_tokens=13, cached_tokens=2)


async def test_max_tokens_against_the_emulator(emulator: AsgiTransport) -> None:
    done = await ADAPTER.complete(emulator, chat(max_tokens=2), emu("tokens=5"), None)
    assert (done.message.content, done.finish_reason) == ("tok0 tok1", "length")


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_round_trip_against_the_emulator(emulator: AsgiTransport, stream: bool) -> None:
    dep = emu("tools=2")
    first = await ADAPTER.complete(emulator, chat(ASK, tools=[WEATHER, TIME]), dep, None)
    calls = first.message.tool_calls or []
    assert first.finish_reason == "tool_calls" and [(c.id, c.function.name) for c in calls] == [
        ("call_0", "get_weather"),
        ("call_1", "get_time"),
    ]
    jsonschema.validate(orjson.loads(calls[0].function.arguments), WEATHER["function"]["parameters"])
    follow = chat(
        ASK,
        {"role": "assistant", "content": None, "tool_calls": [c.model_dump() for c in calls]},
        *({"role": "tool", "tool_call_id": c.id, "content": f"result of {c.function.name}"} for c in calls),
        tools=[WEATHER, TIME],
    )
    if stream:
        deltas = await collect(ADAPTER.stream(emulator, follow, dep, None))
        text, finish = joined(deltas), deltas[-1].finish_reason
    else:
        done = await ADAPTER.complete(emulator, follow, dep, None)
        text, finish = done.message.content, done.finish_reason
    assert text and finish == "stop", "the emulator accepted the results as answering the calls"
    half = chat(*follow.messages[:3], tools=[WEATHER, TIME])  # one result of two
    with pytest.raises(
        ProviderError, match="HTTP 400: Please ensure that the number of function response parts"
    ):
        await ADAPTER.complete(emulator, half, dep, None)


async def test_streamed_calls_match_the_whole_answer(emulator: AsgiTransport) -> None:
    req, dep = chat(ASK, tools=[WEATHER, TIME]), emu("tools=3")
    whole = (await ADAPTER.complete(emulator, req, dep, None)).message.tool_calls or []
    deltas = await collect(ADAPTER.stream(emulator, req, dep, None))
    streamed = [tc for d in deltas for tc in d.tool_calls or ()]
    assert [(c.id, c.name, c.arguments) for c in streamed] == [
        (w.id, w.function.name, w.function.arguments) for w in whole
    ]
    assert deltas[-1].finish_reason == "tool_calls"


async def test_tool_choice_against_the_emulator(emulator: AsgiTransport) -> None:
    named = {"type": "function", "function": {"name": "get_time"}}
    none = await ADAPTER.complete(
        emulator, chat(ASK, tools=[WEATHER, TIME], tool_choice="none"), emu("tools=2"), None
    )
    assert none.message.tool_calls is None and none.message.content
    forced = await ADAPTER.complete(
        emulator, chat(ASK, tools=[WEATHER, TIME], tool_choice=named), emu("tools=2"), None
    )
    assert {c.function.name for c in forced.message.tool_calls or []} == {"get_time"}
    required = await ADAPTER.complete(
        emulator, chat(ASK, tools=[WEATHER], tool_choice="required"), emu(), None
    )
    assert [c.function.name for c in required.message.tool_calls or []] == ["get_weather"]


@pytest.mark.parametrize("stream", [False, True])
async def test_structured_output_against_the_emulator(emulator: AsgiTransport, stream: bool) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "temp": {"type": "number", "minimum": -90}},
        "required": ["city", "temp"],
        "additionalProperties": False,
    }
    req = chat(ASK, response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema}})
    if stream:
        text = joined(await collect(ADAPTER.stream(emulator, req, emu(), None)))
    else:
        text = (await ADAPTER.complete(emulator, req, emu(), None)).message.content or ""
    jsonschema.validate(orjson.loads(text), schema)


def last_call(app: Any) -> dict[str, Any]:
    return dict(app.state.calls[-1])


async def test_media_reaches_the_emulator_inline(emulator: AsgiTransport, app: Any) -> None:
    wav, clip = b"RIFF\0\0\0\0WAVEfmt ", CLIP
    req = chat(
        said(image(PNG), file(PDF, name="memo.pdf"), audio(wav), video(clip), file(b"plain", "text/plain"))
    )
    done = await ADAPTER.complete(emulator, req, emu("tokens=1"), "k")
    notes = [
        f"saw image/png {len(PNG)} bytes",
        f"saw application/pdf {len(PDF)} bytes",
        f"saw audio/wav {len(wav)} bytes",
        f"saw video/mp4 {len(clip)} bytes",
    ]
    assert done.message.content == "; ".join(notes) + "\ntok0"
    assert last_call(app)["media"] == notes and last_call(app)["auth"] == "header"


@pytest.mark.parametrize("stream", [False, True])
async def test_media_past_the_inline_limit_is_uploaded_to_the_emulator(
    emulator: AsgiTransport, app: Any, stream: bool
) -> None:
    small = PNG  # 48 bytes: 64 base64 characters
    adapter = GeminiAdapter(inline_max=100)
    req = chat(said(image(small, media_id="med_small"), video(CLIP, media_id="med_clip")))
    if stream:
        text = joined(await collect(adapter.stream(emulator, req, emu("tokens=1"), "k")))
    else:
        text = (await adapter.complete(emulator, req, emu("tokens=1"), "k")).message.content
    assert text == f"saw image/png {len(small)} bytes; saw video/mp4 {len(CLIP)} bytes\ntok0"
    (stored,) = app.state.gemini_files.files.values()
    assert (stored.mime_type, stored.size, stored.display_name) == ("video/mp4", len(CLIP), "med_clip")


async def test_scenario_failures_against_the_emulator(emulator: AsgiTransport) -> None:
    with pytest.raises(ProviderError) as err:
        await ADAPTER.complete(emulator, chat(), emu("status=429"), None)
    assert err.value.details["upstream_status"] == 429
    assert "gemini-emu returned HTTP 429: Resource has been exhausted" in err.value.message
