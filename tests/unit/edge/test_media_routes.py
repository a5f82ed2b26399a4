"""The media routes in-process, on a fake pipeline and an in-memory FileStorage, driven by the
official ``openai`` SDK where it has the call: images, speech (whole, SSE, raw audio),
transcriptions (upload, reference), files, and chat media parts passing through. Answers are
validated against OpenAI's published spec."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from services.client import GatewayClient
from services.contracts.errors import ProviderError, RateLimited
from services.contracts.events import (
    ChatRequested,
    ChunkEmitted,
    Delta,
    GeneratedImage,
    ImageGenerateRequested,
    ImagesOutput,
    Latency,
    MediaRef,
    ResultProduced,
    SpeechOutput,
    SpeechRequested,
    TranscribeRequested,
    TranscriptionOutput,
    Usage,
)
from services.edge.app import create_app
from services.edge.bodies import BodyAborted
from services.edge.pipeline import EdgeClient
from services.runtime.media.refs import file_key, tenant_prefix
from services.runtime.media.storage import MemoryFileStorage

from .conftest import AUTH, DEMO_KEY, RESTRICTED_KEY, AsgiCall, FakePipeline
from .openai_spec import check

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 100
RESTRICTED = {"authorization": f"Bearer {RESTRICTED_KEY}"}


def b64(body: bytes) -> str:
    return base64.b64encode(body).decode()


def answer(req: Any, **kw: Any) -> ResultProduced:
    return ResultProduced(
        request_id=req.request_id,
        tenant_id=req.tenant_id,
        status="ok",
        operation=req.operation,
        alias=req.model,
        provider="emulator-openai",
        model="emu",
        latency=Latency(total_ms=3.0, provider_ms=2.0),
        **kw,
    )


def speech_chunks(req: SpeechRequested, pieces: list[bytes]) -> list[ChunkEmitted]:
    ids = {"request_id": req.request_id, "tenant_id": req.tenant_id}
    out = [ChunkEmitted(**ids, seq=i, delta=Delta(audio=b64(p))) for i, p in enumerate(pieces)]
    usage = Usage(prompt_tokens=4, completion_tokens=9, total_tokens=13, units={"characters": len(req.input)})
    out.append(ChunkEmitted(**ids, seq=len(pieces), final=True, finish_reason="stop", usage=usage))
    return out


@dataclasses.dataclass
class MediaPipeline(FakePipeline):
    build_image = GatewayClient.build_image
    build_speech = GatewayClient.build_speech
    build_transcribe = GatewayClient.build_transcribe
    _common = GatewayClient._common
    _model_request = GatewayClient._model_request
    image_request = EdgeClient.image_request
    speech_request = EdgeClient.speech_request
    transcribe_request = EdgeClient.transcribe_request


@pytest.fixture
def pipeline() -> MediaPipeline:
    return MediaPipeline()


@pytest.fixture
def storage() -> MemoryFileStorage:
    return MemoryFileStorage("llmgw-media")


@pytest.fixture
async def app(edge_settings, demo_config, pipeline, storage):
    app = create_app(edge_settings, config=demo_config, pipeline=pipeline, storage=storage)
    await app.startup()
    return app


def sdk(app, key: str = DEMO_KEY) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    return openai.AsyncOpenAI(api_key=key, base_url="http://edge/v1", http_client=http, max_retries=0)


@pytest.fixture
async def oai(app) -> AsyncIterator[openai.AsyncOpenAI]:
    async with sdk(app) as client:
        yield client


# --- images -------------------------------------------------------------------------------------


async def test_images_answer_presigned_urls(oai, pipeline):
    refs = [
        MediaRef(media_id=f"med_{i}", mime_type="image/png", bytes=9, url=f"https://s3/img{i}?sig")
        for i in (0, 1)
    ]
    pipeline.answer = lambda req: answer(
        req,
        output=ImagesOutput(
            created=1700000000,
            data=[
                GeneratedImage(media=refs[0], revised_prompt="a red kafka, oil"),
                GeneratedImage(media=refs[1]),
            ],
            size="256x256",
        ),
        usage=Usage(units={"images": 2}),
    )
    raw = await oai.images.with_raw_response.generate(
        model="demo-image",
        prompt="a red kafka",
        n=2,
        size="256x256",
        user="u-7",
        extra_body={"style": "vivid"},
    )
    body = raw.http_response.json()
    check("ImagesResponse", body)
    assert body == {
        "created": 1700000000,
        "data": [
            {"url": "https://s3/img0?sig", "revised_prompt": "a red kafka, oil"},
            {"url": "https://s3/img1?sig"},
        ],
    }  # 256x256 is not a size OpenAI's answer documents: not echoed
    assert raw.headers["x-request-id"] and float(raw.headers["x-llmgw-overhead-ms"]) >= 0
    [event] = pipeline.requests
    assert isinstance(event, ImageGenerateRequested)
    assert (event.tenant_id, event.user_id, event.model, event.prompt) == (
        "demo",
        "demo-user",
        "demo-image",
        "a red kafka",
    )
    assert (event.n, event.size, event.response_format, event.stream) == (2, "256x256", "url", False)
    assert event.extra == {"user": "u-7", "style": "vivid"}


async def test_b64_json_from_inline_data_and_from_storage(oai, pipeline, storage):
    big = PNG + b"\x01" * 1000
    await storage.put("tenants/demo/media/med_big", big, "image/png")
    inline = MediaRef(
        media_id="med_small", mime_type="image/png", bytes=len(PNG), data=b64(PNG), url="https://s3/a"
    )
    by_key = MediaRef(
        media_id="med_big", mime_type="image/png", bytes=len(big), key="tenants/demo/media/med_big"
    )
    pipeline.answer = lambda req: answer(
        req,
        output=ImagesOutput(
            created=1,
            data=[GeneratedImage(media=inline), GeneratedImage(media=by_key)],
            output_format="png",
            quality="high",
        ),
        usage=Usage(prompt_tokens=5, completion_tokens=20, total_tokens=25),
    )
    raw = await oai.images.with_raw_response.generate(
        model="demo-image", prompt="p", response_format="b64_json", output_format="png", quality="high"
    )
    check("ImagesResponse", raw.http_response.json())
    images = raw.parse()
    assert [base64.b64decode(d.b64_json or "") for d in images.data] == [PNG, big]
    assert (images.output_format, images.quality) == ("png", "high")
    assert images.usage is not None and images.usage.total_tokens == 25
    event = pipeline.requests[0]
    assert (event.response_format, event.output_format, event.quality) == ("b64_json", "png", "high")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "demo-image"}, "prompt"),
        ({"prompt": "p"}, "model"),
        ({"model": "demo-image", "prompt": "p", "n": 11}, "n"),
        ({"model": "demo-image", "prompt": "p", "response_format": "png"}, "response_format"),
        ({"model": "demo-image", "prompt": "p", "output_format": "gif"}, "output_format"),
        ({"model": "demo-image", "prompt": "p", "size": "huge"}, "size"),
        ({"model": "demo-image", "prompt": "p", "stream": True}, "stream"),
    ],
)
async def test_bad_image_bodies_are_400s_naming_the_field(http, pipeline, body, param):
    r = await http.post("/v1/images/generations", json=body, headers=AUTH)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and pipeline.requests == []


# --- speech -------------------------------------------------------------------------------------


def speech_result(req: SpeechRequested, ref: MediaRef) -> ResultProduced:
    return answer(
        req, output=SpeechOutput(media=ref, format=req.response_format), usage=Usage(units={"characters": 5})
    )


async def test_speech_whole_answer_inline(oai, pipeline):
    ref = MediaRef(
        media_id="med_s", mime_type="audio/wav", bytes=len(WAV), data=b64(WAV), url="https://s3/s?sig=1"
    )
    pipeline.answer = lambda req: speech_result(req, ref)
    raw = await oai.audio.speech.with_raw_response.create(
        model="demo-tts", voice="alloy", input="hello", response_format="wav", speed=1.5, instructions="calm"
    )
    assert raw.content == WAV
    assert (
        raw.headers["content-type"] == "audio/wav"
        and raw.headers["x-llmgw-media-url"] == "https://s3/s?sig=1"
    )
    [event] = pipeline.requests
    assert isinstance(event, SpeechRequested)
    assert (event.input, event.voice, event.response_format, event.speed, event.instructions) == (
        "hello",
        "alloy",
        "wav",
        1.5,
        "calm",
    )
    assert event.stream is False and event.stream_format is None


async def test_speech_whole_answer_read_from_storage_by_key(oai, pipeline, storage):
    audio = b"\xff\xfb" + bytes(range(256)) * 1000  # mp3 frames, above the inline limit
    await storage.put("tenants/demo/media/med_s", audio, "audio/mpeg")
    ref = MediaRef(
        media_id="med_s",
        mime_type="audio/mpeg",
        bytes=len(audio),
        key="tenants/demo/media/med_s",
        url="https://s3/s",
    )
    pipeline.answer = lambda req: speech_result(req, ref)
    async with oai.audio.speech.with_streaming_response.create(
        model="demo-tts", voice="alloy", input="hello"
    ) as resp:
        assert resp.headers["content-type"] == "audio/mpeg" and resp.headers["content-length"] == str(
            len(audio)
        )
        got = b"".join([c async for c in resp.iter_bytes()])
    assert got == audio and pipeline.requests[0].response_format == "mp3"


async def test_speech_as_sse_events(oai, pipeline):
    pieces = [b"\x00\x01" * 50, b"\x02\x03" * 50, b"\x04"]
    pipeline.chunks = lambda req: speech_chunks(req, pieces)
    async with oai.audio.speech.with_streaming_response.create(
        model="demo-tts", voice="alloy", input="streamed", response_format="pcm", stream_format="sse"
    ) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [ln async for ln in resp.iter_lines()]
    events = [orjson.loads(ln[6:]) for ln in lines if ln.startswith("data: ")]
    for e in events[:-1]:
        check("SpeechAudioDeltaEvent", e)
    check("SpeechAudioDoneEvent", events[-1])
    assert b"".join(base64.b64decode(e["audio"]) for e in events[:-1]) == b"".join(pieces)
    assert events[-1] == {
        "type": "speech.audio.done",
        "usage": {"input_tokens": 4, "output_tokens": 9, "total_tokens": 13},
    }
    [event] = pipeline.requests
    assert event.stream is True and event.stream_format == "sse"


async def test_speech_as_a_raw_audio_stream(oai, pipeline):
    pieces = [b"RIFF", b"\x00" * 3000, b"\x01" * 10]
    pipeline.chunks = lambda req: speech_chunks(req, pieces)
    async with oai.audio.speech.with_streaming_response.create(
        model="demo-tts", voice="alloy", input="streamed", response_format="wav", stream_format="audio"
    ) as resp:
        assert resp.headers["content-type"] == "audio/wav" and "content-length" not in resp.headers
        assert float(resp.headers["x-llmgw-overhead-ms"]) >= 0
        got = b"".join([c async for c in resp.iter_bytes()])
    assert got == b"".join(pieces)
    [event] = pipeline.requests
    assert event.stream is True and event.stream_format == "audio"


async def test_raw_audio_stream_refused_before_its_first_chunk_is_a_json_error(http, pipeline):
    pipeline.chunks = lambda req: [RateLimited("slow down", details={"retry_after_s": 2})]
    body = {"model": "demo-tts", "voice": "alloy", "input": "x", "stream_format": "audio"}
    r = await http.post("/v1/audio/speech", json=body, headers=AUTH)
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    assert r.headers["retry-after"] == "2" and r.headers["x-request-id"]


async def test_raw_audio_stream_failing_midway_is_cut_off(http, pipeline):
    pipeline.chunks = lambda req: [speech_chunks(req, [b"abc"])[0], ProviderError("upstream dropped")]
    body = {"model": "demo-tts", "voice": "alloy", "input": "x", "stream_format": "audio"}
    with pytest.raises(BodyAborted, match="provider_error"):
        await http.post("/v1/audio/speech", json=body, headers=AUTH)


async def test_raw_audio_stream_disconnect_cancels_the_request(app, pipeline):
    pipeline.chunks = lambda req: [*speech_chunks(req, [b"abc"])[:1], 30.0]
    body = {"model": "demo-tts", "voice": "alloy", "input": "x", "stream_format": "audio"}
    c = AsgiCall(app, "POST", "/v1/audio/speech", orjson.dumps(body), {"content-type": "application/json"})
    task = c.start()
    await c.wait_for(lambda: c.data == b"abc")
    c.disconnect.set()
    await asyncio.wait_for(task, 2)
    assert pipeline.cancels == [pipeline.requests[0].request_id] and not c.complete


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"voice": "alloy", "input": "x"}, "model"),
        ({"model": "demo-tts", "voice": "alloy"}, "input"),
        ({"model": "demo-tts", "input": "x"}, "voice"),
        ({"model": "demo-tts", "voice": "alloy", "input": "x", "response_format": "ogg"}, "response_format"),
        ({"model": "demo-tts", "voice": "alloy", "input": "x", "stream_format": "chunks"}, "stream_format"),
        ({"model": "demo-tts", "voice": "alloy", "input": "x", "speed": 9}, "speed"),
    ],
)
async def test_bad_speech_bodies_are_400s_naming_the_field(http, pipeline, body, param):
    r = await http.post("/v1/audio/speech", json=body, headers=AUTH)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and pipeline.requests == []


# --- transcriptions -----------------------------------------------------------------------------


def transcription_result(req: TranscribeRequested) -> ResultProduced:
    fmt = req.response_format
    text = "the quick brown fox"
    bodies: dict[str, Any] = {
        "json": {"text": text, "usage": {"type": "duration", "seconds": 2}},
        "verbose_json": {"task": "transcribe", "language": "english", "duration": 2.0, "text": text},
        "text": text + "\n",
        "srt": f"1\n00:00:00,000 --> 00:00:02,000\n{text}\n",
        "vtt": f"WEBVTT\n\n00:00:00.000 --> 00:00:02.000\n{text}\n",
    }
    return answer(
        req,
        output=TranscriptionOutput(text=text, format=fmt, body=bodies[fmt]),
        usage=Usage(units={"audio_seconds": 2}),
    )


async def test_transcription_of_an_upload_stores_it_and_names_its_file_id(oai, pipeline, storage):
    held: dict[str, Any] = {}

    def answer_holding(req: TranscribeRequested) -> ResultProduced:
        held.update(storage.objects)  # what was stored while the request was out
        return transcription_result(req)

    pipeline.answer = answer_holding
    got = await oai.audio.transcriptions.create(
        model="demo-stt",
        file=("said.wav", WAV, "audio/wav"),
        language="en",
        prompt="foxes",
        temperature=0.2,
        timestamp_granularities=["word", "segment"],
        response_format="json",
        extra_body={"chunking_strategy": "auto"},
    )
    assert got.text == "the quick brown fox"
    [event] = pipeline.requests
    assert isinstance(event, TranscribeRequested)
    assert event.file.url.startswith("file-") and (event.file.filename, event.file.mime_type) == (
        "said.wav",
        "audio/wav",
    )
    assert (event.language, event.prompt, event.temperature) == ("en", "foxes", 0.2)
    assert event.timestamp_granularities == ["word", "segment"] and event.extra == {
        "chunking_strategy": "auto"
    }
    body, stored = held[file_key("demo", event.file.url)]
    assert body == WAV and stored.filename == "said.wav" and stored.metadata["purpose"] == "user_data"
    assert stored.mime_type == "audio/wav"
    assert storage.objects == {}  # answered: the upload is gone


async def test_an_upload_is_deleted_when_its_request_fails_too(http, pipeline, storage):
    pipeline.answer = lambda req: ProviderError("upstream down")
    r = await http.post(
        "/v1/audio/transcriptions",
        files={"file": ("a.wav", WAV, "audio/wav")},
        data={"model": "demo-stt"},
        headers=AUTH,
    )
    assert r.status_code == 502 and r.json()["error"]["code"] == "provider_error"
    assert len(pipeline.requests) == 1 and storage.objects == {}


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [
        ("text", "text/plain; charset=utf-8"),
        ("srt", "text/plain; charset=utf-8"),
        ("vtt", "text/vtt"),
        ("verbose_json", "application/json"),
    ],
)
async def test_transcription_formats(oai, pipeline, fmt, content_type):
    pipeline.answer = transcription_result
    raw = await oai.audio.transcriptions.with_raw_response.create(
        model="demo-stt", file=("said.wav", WAV, "audio/wav"), response_format=fmt
    )
    assert raw.headers["content-type"] == content_type
    if fmt == "verbose_json":
        check("CreateTranscriptionResponseVerboseJson", raw.http_response.json())
    else:
        assert raw.http_response.text == transcription_result(pipeline.requests[0]).output.body
    parsed = raw.parse()
    assert "quick brown fox" in (parsed if isinstance(parsed, str) else parsed.text)


async def test_transcription_json_answer_matches_the_spec(http, pipeline):
    pipeline.answer = transcription_result
    r = await http.post(
        "/v1/audio/transcriptions",
        files={"file": ("a.wav", WAV, "audio/wav")},
        data={"model": "demo-stt"},
        headers=AUTH,
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    check("CreateTranscriptionResponseJson", r.json())


@pytest.mark.parametrize(
    "ref", ["https://example.com/said.wav", "s3://llmgw-media/tenants/demo/files/file-1", "file-abc"]
)
async def test_transcription_of_a_reference_uploads_nothing(http, pipeline, storage, ref):
    pipeline.answer = transcription_result
    r = await http.post(
        "/v1/audio/transcriptions", json={"model": "demo-stt", "file": ref, "language": "de"}, headers=AUTH
    )
    assert r.status_code == 200, r.text
    r = await http.post("/v1/audio/transcriptions", data={"model": "demo-stt", "file": ref}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert [e.file.url for e in pipeline.requests] == [ref, ref] and pipeline.requests[0].language == "de"
    assert await storage.keys(tenant_prefix("demo")) == []


async def test_a_callers_media_ref_is_never_taken(http, pipeline):
    """Only the media-store sets ``file.media`` (from what it resolved and checked)."""
    pipeline.answer = transcription_result
    planted = {"media_id": "med_x", "mime_type": "audio/wav", "bytes": 1, "key": "tenants/other/files/file-1"}
    file = {"url": "file-abc", "filename": "a.wav", "media": planted}
    r = await http.post("/v1/audio/transcriptions", json={"model": "demo-stt", "file": file}, headers=AUTH)
    assert r.status_code == 200, r.text
    [event] = pipeline.requests
    assert (event.file.url, event.file.filename, event.file.media) == ("file-abc", "a.wav", None)


async def test_an_upload_is_streamed_into_storage_as_it_arrives(http, pipeline, storage):
    """The file's pieces reach FileStorage while the client is still sending: never held whole."""
    held: dict[str, Any] = {}
    pipeline.answer = lambda req: held.update(storage.objects) or transcription_result(req)
    order: list[str] = []
    put_stream = storage.put_stream

    async def recording_put_stream(key, chunks, mime_type, **kw):
        async def seen():
            async for c in chunks:
                order.append("stored")
                yield c

        return await put_stream(key, seen(), mime_type, **kw)

    storage.put_stream = recording_put_stream
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\ndemo-stt\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    pieces = [WAV] + [bytes([i]) * 65536 for i in range(8)]

    async def body():
        yield head
        for p in pieces:
            order.append("sent")
            yield p
        yield f"\r\n--{boundary}--\r\n".encode()

    r = await http.post(
        "/v1/audio/transcriptions",
        content=body(),
        headers=AUTH | {"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 200, r.text
    last_sent = len(order) - 1 - order[::-1].index("sent")
    assert order.index("stored") < last_sent  # stored before the last piece was sent
    assert held[file_key("demo", pipeline.requests[0].file.url)][0] == b"".join(pieces)


async def test_an_upload_over_media_max_bytes_is_413_and_not_kept(
    edge_settings, demo_config, pipeline, storage
):
    config = demo_config.model_copy(
        update={"media": demo_config.media.model_copy(update={"max_bytes": 1000})}
    )
    app = create_app(edge_settings, config=config, pipeline=pipeline, storage=storage)
    await app.startup()
    async with sdk(app) as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.audio.transcriptions.create(model="demo-stt", file=("a.wav", WAV * 20, "audio/wav"))
        assert info.value.status_code == 413 and info.value.code == "payload_too_large"
    assert pipeline.requests == [] and await storage.keys(tenant_prefix("demo")) == []


async def test_a_failed_transcription_body_leaves_no_upload_behind(http, pipeline, storage):
    r = await http.post(
        "/v1/audio/transcriptions",
        files={"file": ("a.wav", WAV, "audio/wav")},
        data={"model": "demo-stt", "temperature": "3"},
        headers=AUTH,
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "temperature"
    assert pipeline.requests == [] and await storage.keys(tenant_prefix("demo")) == []


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"data": {"model": "demo-stt"}}, "file"),
        ({"files": {"file": ("a.wav", WAV)}, "data": {}}, "model"),
        ({"files": {"file": ("a.wav", WAV)}, "data": {"model": "demo-stt", "stream": "true"}}, "stream"),
        ({"content": b"raw", "headers": {"content-type": "audio/wav"}}, "content-type"),
        ({"json": {"model": "demo-stt", "file": 7}}, "file"),
    ],
)
async def test_bad_transcription_requests_are_400s(http, pipeline, kwargs, param):
    headers = AUTH | kwargs.pop("headers", {})
    r = await http.post("/v1/audio/transcriptions", headers=headers, **kwargs)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and pipeline.requests == []


# --- files --------------------------------------------------------------------------------------


async def test_files_round_trip_through_the_sdk(app, oai, storage):
    created = await oai.files.create(
        file=("report.pdf", b"%PDF-1.7 report", "application/pdf"), purpose="user_data"
    )
    check("OpenAIFile", created.model_dump(exclude_none=True))
    assert (created.bytes, created.filename, created.purpose, created.status) == (
        15,
        "report.pdf",
        "user_data",
        "processed",
    )
    assert (
        created.id.startswith("file-")
        and await storage.get(file_key("demo", created.id)) == b"%PDF-1.7 report"
    )
    second = await oai.files.create(file=("a.png", PNG, "image/png"), purpose="vision")

    got = await oai.files.retrieve(created.id)
    assert got.model_dump() == created.model_dump()
    content = await oai.files.content(created.id)
    assert content.read() == b"%PDF-1.7 report"

    raw = await oai.files.with_raw_response.list()
    check("ListFilesResponse", raw.http_response.json())
    assert {f.id async for f in raw.parse()} == {created.id, second.id}
    assert [f.id async for f in oai.files.list(purpose="vision")] == [second.id]
    page = await oai.files.list(limit=1, order="asc")
    assert len(page.data) == 1 and page.has_more is True

    deleted = await oai.files.with_raw_response.delete(created.id)
    check("DeleteFileResponse", deleted.http_response.json())
    assert deleted.parse().deleted is True
    with pytest.raises(openai.NotFoundError) as info:
        await oai.files.retrieve(created.id)
    assert info.value.code == "media_not_found"
    assert [f.id async for f in oai.files.list()] == [second.id]


async def test_another_tenants_file_is_not_found(app, oai):
    created = await oai.files.create(file=("a.png", PNG, "image/png"), purpose="vision")
    async with sdk(app, RESTRICTED_KEY) as other:
        for call in (other.files.retrieve, other.files.content, other.files.delete):
            with pytest.raises(openai.NotFoundError) as info:
                await call(created.id)
            assert info.value.code == "media_not_found"
        assert [f.id async for f in other.files.list()] == []
    assert (await oai.files.retrieve(created.id)).id == created.id  # still there


@pytest.mark.parametrize("file_id", ["file-nope", "med_123", "file-a/b", "file-%2E%2E"])
async def test_unknown_or_malformed_ids_are_404(http, file_id):
    for method in ("GET", "DELETE"):
        r = await http.request(method, f"/v1/files/{file_id}", headers=AUTH)
        assert r.status_code == 404 and r.json()["error"]["code"] == "media_not_found", (method, r.text)
    r = await http.get(f"/v1/files/{file_id}/content", headers=AUTH)
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("form", "param"),
    [
        (
            [("file", ("a.txt", b"x", "text/plain")), ("purpose", (None, "user_data"))],
            "purpose",
        ),  # after the file
        ([("purpose", (None, "nonsense")), ("file", ("a.txt", b"x", "text/plain"))], "purpose"),
        ([("purpose", (None, "user_data"))], "file"),
        ([("purpose", (None, "user_data")), ("file", (None, "not an upload"))], "file"),
    ],
)
async def test_bad_uploads_are_400s_and_keep_nothing(http, storage, form, param):
    r = await http.post("/v1/files", files=form, headers=AUTH)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and await storage.keys(tenant_prefix("demo")) == []


async def test_a_storage_failure_before_the_first_byte_is_a_500_answer(oai, storage, monkeypatch):
    created = await oai.files.create(file=("a.png", PNG, "image/png"), purpose="vision")

    def broken(key):
        raise RuntimeError("S3 is down")

    monkeypatch.setattr(storage, "open", broken)
    with pytest.raises(openai.InternalServerError) as info:
        await oai.files.content(created.id)
    assert info.value.code == "internal_error" and "RuntimeError" in info.value.message


async def test_files_need_a_key(http):
    assert (await http.get("/v1/files")).status_code == 401
    assert (await http.post("/v1/files", files={"file": ("a", b"x")})).status_code == 401


# --- chat media parts -----------------------------------------------------------------------------


async def test_chat_media_parts_reach_the_request_unchanged(oai, pipeline):
    parts: list[dict[str, Any]] = [
        {"type": "text", "text": "what is in these?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(PNG), "detail": "low"}},
        {
            "type": "file",
            "file": {"filename": "memo.pdf", "file_data": "data:application/pdf;base64,JVBERi0="},
        },
        {"type": "file", "file": {"file_id": "file-0123456789abcdef0123456789abcdef"}},
        {"type": "input_audio", "input_audio": {"data": b64(WAV), "format": "wav"}},
    ]
    done = await oai.chat.completions.create(
        model="demo-openai", messages=[{"role": "user", "content": parts}]
    )
    assert done.choices[0].message.content == "hello there"
    [event] = pipeline.requests
    assert isinstance(event, ChatRequested) and event.messages[0].content == parts
