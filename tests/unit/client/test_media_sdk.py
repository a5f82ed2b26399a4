"""The SDK's media calls on a fake transport (no broker): the request events they build, what they
return, files as references / data URLs / uploads, reading media back (inline, presigned URL,
storage), and speech streams through the stream check (a restart replays audio bytes)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.client import GatewayClient
from services.client.streams import StreamCheck
from services.contracts.errors import MediaNotFound, StreamInterrupted, ValidationError
from services.contracts.events import (
    ChunkEmitted,
    Delta,
    GeneratedImage,
    ImageGenerateRequested,
    ImagesOutput,
    MediaRef,
    RequestBase,
    ResultProduced,
    SpeechOutput,
    SpeechRequested,
    TranscribeRequested,
    TranscriptionOutput,
    Usage,
)
from services.runtime.media.refs import file_key
from services.runtime.media.storage import MemoryFileStorage

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 100


def b64(body: bytes) -> str:
    return base64.b64encode(body).decode()


def ok(req: RequestBase, **kw: Any) -> ResultProduced:
    return ResultProduced(
        request_id=req.request_id, tenant_id=req.tenant_id, status="ok", operation=req.operation, **kw
    )


class FakeGateway(GatewayClient):
    """Publishes nothing: ``respond`` gives each request's reply events."""

    def __init__(self, respond, **kw: Any):
        super().__init__("127.0.0.1:1", "acme", "u1", **kw)
        self.respond = respond
        self.sent: list[RequestBase] = []
        self.cancelled: list[str] = []

    async def send(self, req: RequestBase) -> asyncio.Queue[Any]:
        self.sent.append(req)
        q: asyncio.Queue[Any] = asyncio.Queue()
        for event in self.respond(req):
            q.put_nowait(event)
        return q

    async def cancel(self, request_id: str, reason: str = "client_cancelled") -> None:
        self.cancelled.append(request_id)


def transcribed(req: TranscribeRequested) -> list[ResultProduced]:
    return [ok(req, output=TranscriptionOutput(text="hi", format=req.response_format, body={"text": "hi"}))]


# --- images and speech --------------------------------------------------------------------------


async def test_generate_image_builds_the_request_and_returns_the_result():
    ref = MediaRef(media_id="med_1", mime_type="image/png", bytes=4, data=b64(b"\x89PNG"), url="https://s3/x")
    gw = FakeGateway(lambda req: [ok(req, output=ImagesOutput(created=1, data=[GeneratedImage(media=ref)]))])
    result = await gw.generate_image(
        "demo-image",
        "a red kafka",
        n=2,
        size="512x512",
        response_format="b64_json",
        output_format="webp",
        style="vivid",
        fallbacks=["demo-image-2"],
        total_ms=9000,
        client_id="svc",
    )
    assert result.output is not None and result.output.kind == "images"
    assert await gw.media_bytes(result.output.data[0].media) == b"\x89PNG"
    [req] = gw.sent
    assert isinstance(req, ImageGenerateRequested)
    assert (req.tenant_id, req.user_id, req.client_id, req.model, req.prompt) == (
        "acme",
        "u1",
        "svc",
        "demo-image",
        "a red kafka",
    )
    assert (req.n, req.size, req.response_format, req.output_format) == (2, "512x512", "b64_json", "webp")
    assert (
        req.extra == {"style": "vivid"}
        and req.fallbacks == ["demo-image-2"]
        and req.timeouts.total_ms == 9000
    )


async def test_speech_whole_answer():
    ref = MediaRef(media_id="med_2", mime_type="audio/wav", bytes=len(WAV), data=b64(WAV))
    gw = FakeGateway(lambda req: [ok(req, output=SpeechOutput(media=ref, format="wav"))])
    result = await gw.speech(
        "demo-tts", "hello", "alloy", response_format="wav", speed=1.25, instructions="calm"
    )
    assert result.output is not None and result.output.kind == "speech"
    assert await gw.media_bytes(result.output.media) == WAV
    [req] = gw.sent
    assert isinstance(req, SpeechRequested)
    assert (req.input, req.voice, req.response_format, req.speed, req.instructions) == (
        "hello",
        "alloy",
        "wav",
        1.25,
        "calm",
    )
    assert req.stream is False


def audio_chunks(
    req: RequestBase, pieces: list[bytes], run: str | None = None, final: bool = True
) -> list[ChunkEmitted]:
    ids = {"request_id": req.request_id, "tenant_id": req.tenant_id, "run_id": run}
    out = [ChunkEmitted(**ids, seq=i, delta=Delta(audio=b64(p))) for i, p in enumerate(pieces)]
    if final:
        out.append(
            ChunkEmitted(
                **ids, seq=len(pieces), final=True, finish_reason="stop", usage=Usage(units={"characters": 5})
            )
        )
    return out


async def test_stream_speech_yields_the_audio_bytes():
    gw = FakeGateway(lambda req: audio_chunks(req, [b"abc", b"", b"defg"]))
    got = [piece async for piece in gw.stream_speech("demo-tts", "hello", "alloy", response_format="pcm")]
    assert got == [b"abc", b"defg"]
    [req] = gw.sent
    assert isinstance(req, SpeechRequested) and req.stream is True and req.stream_format == "audio"
    assert gw.cancelled == []


async def test_stopping_a_speech_stream_early_cancels_it():
    gw = FakeGateway(lambda req: audio_chunks(req, [b"abc", b"def"], final=False))
    stream = gw.stream_speech("demo-tts", "hello", "alloy")
    assert await anext(stream) == b"abc"
    await stream.aclose()
    assert gw.cancelled == [gw.sent[0].request_id]


# --- reading media back -------------------------------------------------------------------------


async def test_media_bytes_from_a_presigned_url_and_from_storage():
    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=WAV) if request.path == "/a" else web.Response(status=403)

    app = web.Application()
    app.router.add_get("/{name}", serve)
    storage = MemoryFileStorage("llmgw-media")
    await storage.put("tenants/acme/media/med_3", b"stored bytes", "audio/wav")
    gw = FakeGateway(lambda req: [], storage=storage)
    async with TestServer(app) as server:
        url = str(server.make_url("/a"))
        assert (
            await gw.media_bytes(MediaRef(media_id="m", mime_type="audio/wav", bytes=len(WAV), url=url))
            == WAV
        )
        with pytest.raises(MediaNotFound):
            await gw.media_bytes(
                MediaRef(media_id="m", mime_type="audio/wav", bytes=1, url=str(server.make_url("/gone")))
            )
    by_key = MediaRef(media_id="med_3", mime_type="audio/wav", bytes=12, key="tenants/acme/media/med_3")
    assert await gw.media_bytes(by_key) == b"stored bytes"
    with pytest.raises(ValidationError, match="neither data nor a URL"):
        await FakeGateway(lambda req: []).media_bytes(by_key)


# --- transcription ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref",
    [
        "https://example.com/a.wav",
        "s3://llmgw-media/tenants/acme/files/file-1",
        "file-abc",
        "data:audio/wav;base64,UklGRg==",
    ],
)
async def test_transcribe_a_reference_passes_it_on(ref):
    gw = FakeGateway(transcribed)
    result = await gw.transcribe(
        "demo-stt", ref, language="en", response_format="verbose_json", vendor_knob=1
    )
    assert result.output is not None and result.output.kind == "transcription"
    [req] = gw.sent
    assert isinstance(req, TranscribeRequested) and req.file.url == ref
    assert (req.language, req.response_format, req.extra) == ("en", "verbose_json", {"vendor_knob": 1})


async def test_transcribe_small_bytes_travel_as_a_data_url():
    gw = FakeGateway(transcribed)
    await gw.transcribe("demo-stt", WAV, filename="said.wav", timestamp_granularities=["word"])
    [req] = gw.sent
    assert req.file.url == "data:audio/x-wav;base64," + b64(WAV) and req.file.filename == "said.wav"
    assert req.timestamp_granularities == ["word"]
    await gw.transcribe("demo-stt", WAV, mime_type="audio/wav")
    assert (
        gw.sent[1].file.url.startswith("data:audio/wav;base64,") and gw.sent[1].file.mime_type == "audio/wav"
    )


async def test_transcribe_large_bytes_need_storage():
    big = WAV + b"\x00" * (300 * 1024)
    with pytest.raises(ValidationError, match="storage=FileStorage"):
        await FakeGateway(transcribed).transcribe("demo-stt", big)
    storage = MemoryFileStorage("llmgw-media")
    held: dict[str, Any] = {}

    def answer_holding(req: TranscribeRequested) -> list[ResultProduced]:
        held.update(storage.objects)  # what was stored while the request was out
        return transcribed(req)

    gw = FakeGateway(answer_holding, storage=storage)
    await gw.transcribe("demo-stt", big, filename="big.wav", tenant_id="other")
    [req] = gw.sent
    assert req.file.url.startswith("file-") and req.tenant_id == "other"
    body, stored = held[file_key("other", req.file.url)]
    assert body == big and stored.filename == "big.wav" and stored.metadata["purpose"] == "user_data"
    assert storage.objects == {}  # answered: the upload is gone


async def test_the_inline_limit_is_the_clients():
    gw = FakeGateway(transcribed, inline_max_bytes=10)
    with pytest.raises(ValidationError, match="above the inline limit of 10 bytes"):
        await gw.transcribe("demo-stt", WAV)


# --- the stream check on audio --------------------------------------------------------------------


def audio(run: str, seq: int, body: bytes | None, final: bool = False) -> ChunkEmitted:
    return ChunkEmitted(
        request_id="r",
        tenant_id="t",
        run_id=run,
        seq=seq,
        delta=Delta(audio=b64(body) if body else None),
        final=final,
    )


def delivered(check: StreamCheck, chunks: list[ChunkEmitted]) -> bytes:
    out = [c for c in (check.accept(x) for x in chunks) if c is not None]
    return b"".join(base64.b64decode(c.delta.audio or "") for c in out)


def test_a_restarted_speech_stream_delivers_only_the_audio_the_caller_lacks():
    check = StreamCheck("r")
    first = delivered(check, [audio("a", 0, b"0123"), audio("a", 1, b"4567")])
    # the new run splits the same audio differently: 3 bytes, then 7 (5 already held + 2 new), ...
    rest = delivered(
        check,
        [audio("b", 0, b"012"), audio("b", 1, b"3456789"), audio("b", 2, b"AB"), audio("b", 3, None, True)],
    )
    assert (first, rest) == (b"01234567", b"89AB") and check.restarts == 1


def test_a_restarted_speech_stream_with_other_audio_is_an_explicit_error():
    check = StreamCheck("r")
    delivered(check, [audio("a", 0, b"0123"), audio("a", 1, b"4567")])
    with pytest.raises(StreamInterrupted) as info:
        delivered(check, [audio("b", 0, b"0123"), audio("b", 1, b"4X67tail")])
    assert info.value.details["reason"] == "restart" and info.value.details["delivered_audio_bytes"] == 8


def test_a_restarted_speech_stream_that_ends_short_is_an_explicit_error():
    check = StreamCheck("r")
    delivered(check, [audio("a", 0, b"0123"), audio("a", 1, b"4567")])
    with pytest.raises(StreamInterrupted, match="is shorter"):
        delivered(check, [audio("b", 0, b"0123"), audio("b", 1, None, True)])
