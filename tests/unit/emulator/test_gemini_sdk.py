"""The official ``google-genai`` SDK against the emulator's Gemini API: generateContent, the SSE
stream, function calling, structured output, inline media and the Files API; raw answers are
checked against the SDK's own types (which forbid unknown fields)."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import jsonschema
import orjson
import pytest
from google import genai
from google.genai import errors, types

from services.emulator.gemini_api import MAX_REQUEST_BYTES
from services.emulator.text import completion_text, count_prompt_tokens

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="Weather for a city",
    parameters=types.Schema(
        type=types.Type.OBJECT,
        properties={
            "city": types.Schema(type=types.Type.STRING),
            "days": types.Schema(type=types.Type.INTEGER),
        },
        required=["city"],
    ),
)
TIME = types.FunctionDeclaration(
    name="get_time",
    parameters_json_schema={"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
)
REPORT = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temperature_c": {"type": "number"}},
    "required": ["city", "temperature_c"],
    "additionalProperties": False,
}


def make_client(url: str, api_version: str | None = "v1beta") -> genai.Client:
    options = types.HttpOptions(
        base_url=url, api_version=api_version, retry_options=types.HttpRetryOptions(attempts=1)
    )
    return genai.Client(api_key="test-key", http_options=options)


@pytest.fixture
def client(emulator_url: str) -> genai.Client:
    return make_client(emulator_url)


def last_call(url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/_emulator/calls", params={"kind": "chat"}).json()[-1])


def raw_generate(url: str, model: str, body: dict[str, Any], **params: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1beta/models/{model}:generateContent",
        json=body,
        params=params,
        headers={"x-goog-api-key": "k"},
    )


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


# --- text ---------------------------------------------------------------------------------------


def test_generate_content(client: genai.Client) -> None:
    r = client.models.generate_content(
        model="gemini-emu@tokens=5,cached=3",
        contents="say five words please",
        config=types.GenerateContentConfig(system_instruction="You are terse."),
    )
    assert r.text == completion_text(5)
    assert r.candidates and r.candidates[0].finish_reason == types.FinishReason.STOP
    assert r.candidates[0].content and r.candidates[0].content.role == "model"
    prompt = count_prompt_tokens([{"content": "say five words please"}], "You are terse.")
    assert r.usage_metadata is not None
    assert r.usage_metadata.prompt_token_count == prompt == 13
    assert r.usage_metadata.candidates_token_count == 5
    assert r.usage_metadata.total_token_count == prompt + 5
    assert r.usage_metadata.cached_content_token_count == 3
    assert r.model_version == "gemini-emu"
    assert r.response_id


def test_the_raw_answer_is_a_generate_content_response(emulator_url: str) -> None:
    reply = raw_generate(emulator_url, "gemini-emu@tokens=2", {"contents": [user("hi")]})
    assert reply.status_code == 200
    parsed = types.GenerateContentResponse.model_validate(reply.json())
    assert parsed.text == "tok0 tok1"


def test_max_output_tokens_cut_the_answer(client: genai.Client) -> None:
    r = client.models.generate_content(
        model="gemini-emu@tokens=10",
        contents="hi",
        config=types.GenerateContentConfig(max_output_tokens=3),
    )
    assert r.text == completion_text(3)
    assert r.candidates and r.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert r.usage_metadata and r.usage_metadata.candidates_token_count == 3


def test_echo_and_the_header_scenario(client: genai.Client) -> None:
    r = client.models.generate_content(model="gemini-emu@echo=1", contents="repeat  after me")
    assert r.text == "repeat  after me"
    r = client.models.generate_content(
        model="gemini-emu@tokens=9",
        contents="hi",
        config=types.GenerateContentConfig(
            http_options=types.HttpOptions(headers={"x-emulator-scenario": "tokens=2"})
        ),
    )
    assert r.text == completion_text(2)


def test_stream(client: genai.Client) -> None:
    chunks = list(client.models.generate_content_stream(model="gemini-emu@tokens=4", contents="hi"))
    assert [c.text for c in chunks] == ["tok0", " tok1", " tok2", " tok3"]
    finishes = [c.candidates[0].finish_reason if c.candidates else None for c in chunks]
    assert finishes == [None, None, None, types.FinishReason.STOP]
    usage = chunks[-1].usage_metadata
    assert usage is not None and usage.prompt_token_count is not None
    assert (usage.candidates_token_count, usage.total_token_count) == (4, 4 + usage.prompt_token_count)


def test_sse_events_are_generate_content_responses(emulator_url: str) -> None:
    reply = httpx.post(
        f"{emulator_url}/v1beta/models/gemini-emu@tokens=3:streamGenerateContent",
        params={"alt": "sse"},
        json={"contents": [user("hi")]},
    )
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in reply.text.split("\r\n") if line.startswith("data: ")]
    parsed = [types.GenerateContentResponse.model_validate_json(e) for e in events]
    assert "".join(p.text or "" for p in parsed) == completion_text(3)
    assert [p.usage_metadata.candidates_token_count for p in parsed if p.usage_metadata] == [1, 2, 3]


def test_a_stream_without_alt_sse_is_one_json_array(emulator_url: str) -> None:
    reply = httpx.post(
        f"{emulator_url}/v1beta/models/gemini-emu@tokens=2:streamGenerateContent",
        json={"contents": [user("hi")]},
    )
    answers = [types.GenerateContentResponse.model_validate(a) for a in reply.json()]
    assert [a.text for a in answers] == ["tok0", " tok1"]


def test_the_sdks_default_api_version_is_served_too(emulator_url: str) -> None:
    client = make_client(emulator_url, api_version=None)
    r = client.models.generate_content(model="gemini-emu@tokens=1", contents="hi")
    assert r.text == "tok0"
    assert last_call(emulator_url)["path"] == "/v1/models/gemini-emu@tokens=1:generateContent"


def test_how_the_key_came_is_logged(client: genai.Client, emulator_url: str) -> None:
    client.models.generate_content(model="gemini-emu@tokens=1", contents="hi")
    assert last_call(emulator_url)["auth"] == "header"
    body = {"contents": [user("hi")]}
    httpx.post(f"{emulator_url}/v1beta/models/gemini-emu:generateContent", params={"key": "k"}, json=body)
    assert last_call(emulator_url)["auth"] == "query"
    httpx.post(f"{emulator_url}/v1beta/models/gemini-emu:generateContent", json=body)
    assert last_call(emulator_url)["auth"] is None


# --- errors -------------------------------------------------------------------------------------


def test_scenario_failures_in_googles_error_shape(client: genai.Client, emulator_url: str) -> None:
    with pytest.raises(errors.ClientError) as err:
        client.models.generate_content(model="gemini-emu@status=429,retry_after_ms=1500", contents="hi")
    assert (err.value.code, err.value.status) == (429, "RESOURCE_EXHAUSTED")
    reply = raw_generate(
        emulator_url, "gemini-emu@status=429,retry_after_ms=1500", {"contents": [user("hi")]}
    )
    assert reply.headers["retry-after"] == "2"
    assert reply.json()["error"]["details"][0]["retryDelay"] == "1.5s"
    with pytest.raises(errors.ServerError) as server:
        client.models.generate_content(model="gemini-emu@status=503", contents="hi")
    assert (server.value.code, server.value.status) == (503, "UNAVAILABLE")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"contents": [user("hi")], "messages": []}, 'Unknown name "messages"'),
        ({"contents": []}, "contents is not specified"),
        ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "valid role"),
        ({"contents": [{"role": "user", "parts": []}]}, "must not be empty"),
        (
            {"contents": [{"parts": [{"text": "a", "inlineData": {"mimeType": "a/b", "data": ""}}]}]},
            "exactly one",
        ),
        (
            {"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "!!"}}]}]},
            "Base64 decoding failed",
        ),
        (
            {"contents": [{"parts": [{"text": "x", "media": {"media_id": "med_1"}}]}]},
            'Unknown name "media"',
        ),
        (
            {"contents": [user("hi")], "generationConfig": {"responseSchema": {"type": "OBJECT"}}},
            "application/json",
        ),
        (
            {
                "contents": [
                    user("hi"),
                    {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]},
                ]
            },
            "immediately after a function call turn",
        ),
    ],
)
def test_malformed_requests_are_400(emulator_url: str, body: dict[str, Any], message: str) -> None:
    reply = raw_generate(emulator_url, "gemini-emu", body)
    assert reply.status_code == 400
    err = reply.json()["error"]
    assert (err["code"], err["status"]) == (400, "INVALID_ARGUMENT")
    assert message in err["message"]


def test_a_request_over_20_mib_is_refused(emulator_url: str) -> None:
    data = base64.b64encode(b"\0" * (MAX_REQUEST_BYTES * 3 // 4 + 1024)).decode()
    body = {"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": data}}]}]}
    reply = raw_generate(emulator_url, "gemini-emu", body)
    assert reply.status_code == 400
    assert "Request payload size exceeds the limit: 20971520 bytes" in reply.json()["error"]["message"]


# --- media --------------------------------------------------------------------------------------


def test_inline_media_is_said_back(client: genai.Client, emulator_url: str) -> None:
    r = client.models.generate_content(
        model="gemini-emu@tokens=2",
        contents=[
            "what are these?",
            types.Part.from_bytes(data=PNG, mime_type="image/png"),
            types.Part.from_bytes(data=b"RIFF....WAVE", mime_type="audio/wav"),
        ],
    )
    notes = f"saw image/png {len(PNG)} bytes; saw audio/wav 12 bytes"
    assert r.text == f"{notes}\ntok0 tok1"
    assert last_call(emulator_url)["media"] == [f"saw image/png {len(PNG)} bytes", "saw audio/wav 12 bytes"]


def test_files_upload_get_list_and_generate_with_the_file(client: genai.Client, emulator_url: str) -> None:
    video = b"\0\0\0\x18ftypmp42" + b"\1" * 5000
    uploaded = client.files.upload(
        file=io.BytesIO(video), config=types.UploadFileConfig(mime_type="video/mp4", display_name="clip")
    )
    assert uploaded.name and uploaded.name.startswith("files/")
    assert (uploaded.mime_type, uploaded.size_bytes, uploaded.display_name) == (
        "video/mp4",
        len(video),
        "clip",
    )
    assert uploaded.state == types.FileState.ACTIVE and uploaded.source == types.FileSource.UPLOADED
    assert uploaded.uri == f"{emulator_url}/v1beta/{uploaded.name}"
    assert (
        uploaded.expiration_time and uploaded.create_time and uploaded.expiration_time > uploaded.create_time
    )

    got = client.files.get(name=uploaded.name)
    assert got == uploaded
    assert uploaded.name in [f.name for f in client.files.list()]

    r = client.models.generate_content(model="gemini-emu@tokens=1", contents=[uploaded, "describe"])
    assert r.text == f"saw video/mp4 {len(video)} bytes\ntok0"

    raw = httpx.get(f"{emulator_url}/v1beta/{uploaded.name}").json()
    types.File.model_validate(raw)
    assert raw["sizeBytes"] == str(len(video)), "int64 travels as a string"

    client.files.delete(name=uploaded.name)
    with pytest.raises(errors.ClientError) as err:
        client.files.get(name=uploaded.name)
    assert err.value.code == 403


def test_an_upload_bigger_than_one_sdk_chunk(client: genai.Client) -> None:
    """The SDK sends 8 MiB per call: ``upload`` calls, then ``upload, finalize``."""
    body = b"%PDF-1.7\n" + b"x" * (8 * 1024 * 1024 + 10)
    uploaded = client.files.upload(
        file=io.BytesIO(body), config=types.UploadFileConfig(mime_type="application/pdf")
    )
    assert uploaded.size_bytes == len(body)


def test_resumable_protocol_checks(emulator_url: str) -> None:
    start = httpx.post(
        f"{emulator_url}/upload/v1beta/files",
        headers={
            "x-goog-upload-protocol": "resumable",
            "x-goog-upload-command": "start",
            "x-goog-upload-header-content-length": "4",
            "x-goog-upload-header-content-type": "text/plain",
        },
        json={"file": {"displayName": "four"}},
    )
    assert start.status_code == 200 and start.headers["x-goog-upload-status"] == "active"
    url = start.headers["x-goog-upload-url"]
    wrong = httpx.post(
        url, headers={"x-goog-upload-command": "upload", "x-goog-upload-offset": "2"}, content=b"ab"
    )
    assert wrong.status_code == 400 and "Offset" in wrong.json()["error"]["message"]
    part = httpx.post(
        url, headers={"x-goog-upload-command": "upload", "x-goog-upload-offset": "0"}, content=b"ab"
    )
    assert part.headers["x-goog-upload-status"] == "active"
    assert part.headers["x-goog-upload-size-received"] == "2"
    short = httpx.post(
        url, headers={"x-goog-upload-command": "upload, finalize", "x-goog-upload-offset": "2"}, content=b"c"
    )
    assert short.status_code == 400 and "declared 4 bytes" in short.json()["error"]["message"]


def test_a_file_the_emulator_does_not_have_is_403(client: genai.Client, emulator_url: str) -> None:
    part = types.Part.from_uri(file_uri=f"{emulator_url}/v1beta/files/nosuchfile", mime_type="image/png")
    with pytest.raises(errors.ClientError) as err:
        client.models.generate_content(model="gemini-emu", contents=[part, "hi"])
    assert (err.value.code, err.value.status) == (403, "PERMISSION_DENIED")
    assert "files/nosuchfile" not in (err.value.message or "") and "nosuchfile" in (err.value.message or "")


def test_a_url_file_is_noted_by_host(client: genai.Client) -> None:
    part = types.Part.from_uri(file_uri="https://cdn.example.test/cat.jpg", mime_type="image/jpeg")
    r = client.models.generate_content(model="gemini-emu@tokens=0", contents=[part, "hi"])
    assert r.text == "saw image url cdn.example.test\n"


# --- tools and structured output ------------------------------------------------------------------


def tool_config(mode: types.FunctionCallingConfigMode, names: list[str] | None = None) -> types.ToolConfig:
    return types.ToolConfig(
        function_calling_config=types.FunctionCallingConfig(mode=mode, allowed_function_names=names)
    )


def test_function_calls(client: genai.Client) -> None:
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[WEATHER, TIME])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    r = client.models.generate_content(
        model="gemini-emu@tools=3", contents="weather and time?", config=config
    )
    calls = r.function_calls or []
    assert [c.name for c in calls] == ["get_weather", "get_time", "get_weather"]
    assert calls[0].args == {"city": "tok0", "days": 1}
    jsonschema.validate(calls[1].args, TIME.parameters_json_schema)
    assert r.candidates and r.candidates[0].finish_reason == types.FinishReason.STOP
    assert r.usage_metadata and r.usage_metadata.candidates_token_count == sum(
        -(-len(orjson.dumps(c.args)) // 8) for c in calls
    )
    streamed = list(
        client.models.generate_content_stream(model="gemini-emu@tools=3", contents="w?", config=config)
    )
    assert [c.name for chunk in streamed for c in chunk.function_calls or []] == [c.name for c in calls]


def test_function_calling_modes(client: genai.Client) -> None:
    tools = [types.Tool(function_declarations=[WEATHER, TIME])]
    off = types.AutomaticFunctionCallingConfig(disable=True)

    def names(scenario: str, config: types.ToolConfig) -> list[str | None]:
        r = client.models.generate_content(
            model=f"gemini-emu@{scenario}",
            contents="w?",
            config=types.GenerateContentConfig(
                tools=tools, tool_config=config, automatic_function_calling=off
            ),
        )
        return [c.name for c in r.function_calls or []]

    assert names("tools=2", tool_config(types.FunctionCallingConfigMode.NONE)) == []
    assert names("tokens=1", tool_config(types.FunctionCallingConfigMode.ANY)) == ["get_weather"]
    assert (
        names("tools=2", tool_config(types.FunctionCallingConfigMode.ANY, ["get_time"])) == ["get_time"] * 2
    )
    with pytest.raises(errors.ClientError, match="allowed_function_names"):
        names("tools=1", tool_config(types.FunctionCallingConfigMode.AUTO, ["get_time"]))


def test_function_responses_round_trip(client: genai.Client) -> None:
    tools = [types.Tool(function_declarations=[WEATHER, TIME])]
    config = types.GenerateContentConfig(tools=tools)
    first = client.models.generate_content(model="gemini-emu@tools=2", contents="w?", config=config)
    assert first.candidates and first.candidates[0].content
    call_turn = first.candidates[0].content
    results = [
        types.Part.from_function_response(name=c.name or "", response={"output": f"result of {c.name}"})
        for c in first.function_calls or []
    ]
    ask = types.Content(role="user", parts=[types.Part(text="w?")])
    follow = client.models.generate_content(
        model="gemini-emu@tools=2",
        contents=[ask, call_turn, types.Content(role="user", parts=results)],
        config=config,
    )
    assert follow.function_calls is None and follow.text == completion_text(8)
    with pytest.raises(errors.ClientError, match="number of function response parts"):
        client.models.generate_content(
            model="gemini-emu@tools=2",
            contents=[ask, call_turn, types.Content(role="user", parts=results[:1])],
            config=config,
        )


def test_structured_output(client: genai.Client) -> None:
    by_json_schema = client.models.generate_content(
        model="gemini-emu",
        contents="weather in Paris",
        config=types.GenerateContentConfig(
            response_mime_type="application/json", response_json_schema=REPORT
        ),
    )
    jsonschema.validate(orjson.loads(by_json_schema.text or ""), REPORT)
    by_schema = client.models.generate_content(
        model="gemini-emu",
        contents="weather in Paris",
        config=types.GenerateContentConfig(
            response_mime_type="application/json",
            response_schema=types.Schema(
                type=types.Type.OBJECT,
                properties={"city": types.Schema(type=types.Type.STRING, nullable=True)},
                required=["city"],
            ),
        ),
    )
    assert orjson.loads(by_schema.text or "") == {"city": "tok0"}
    broken = client.models.generate_content(
        model="gemini-emu@schema_violation=1",
        contents="weather in Paris",
        config=types.GenerateContentConfig(
            response_mime_type="application/json", response_json_schema=REPORT
        ),
    )
    assert not jsonschema.Draft202012Validator(REPORT).is_valid(orjson.loads(broken.text or ""))
    schemaless = client.models.generate_content(
        model="gemini-emu@tokens=2",
        contents="hi",
        config=types.GenerateContentConfig(response_mime_type="application/json"),
    )
    assert orjson.loads(schemaless.text or "") == {"answer": "tok0 tok1"}


def test_models_list(client: genai.Client) -> None:
    assert "models/gemini-emu" in [m.name for m in client.models.list()]
