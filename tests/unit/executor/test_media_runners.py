"""The media runners (images, speech, transcriptions) over the provider emulator in process, with
a recording publisher: their outcomes and outputs, the speech stream's chunk events, deadlines,
and what a failure after audio went out means (no other attempt)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import wave
from collections.abc import AsyncIterator, Mapping

import aiohttp
import orjson
import pytest
from PIL import Image

from services.contracts.errors import CapabilityNotSupported, ProviderError, ProviderTimeout
from services.contracts.events import (
    ChunkEmitted,
    Deployment,
    ExecutionPlanned,
    ImageGenerateRequested,
    ImagesOutput,
    MediaRef,
    MediaSource,
    ReplyTo,
    SpeechOutput,
    SpeechRequested,
    TranscribeRequested,
    TranscriptionOutput,
    Usage,
)
from services.emulator import create_app
from services.emulator import media_synth as synth
from services.executor.attempts import Final, Until
from services.executor.images import ImagesRunner
from services.executor.speech import AudioChunkEmitter, SpeechRunner
from services.executor.targets import Target
from services.executor.transcribe import TranscribeRunner
from services.runtime.settings import ROOT
from services.runtime.topics import Topics
from tests.unit.providers.support import AsgiTransport

SPOKEN = "Hello there, world. This is the emulator speaking."
TOPICS = Topics.load(ROOT / "topics.yaml", "")
NO_LIMIT = Until(None, True)


class Recorder:
    """A publisher that keeps what it was given; every ack is already done."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, ChunkEmitted, str | None, int | None]] = []

    async def publish(self, topic, event, *, key, partition=None, headers=None):
        self.sent.append((topic, event, key, partition))
        ack = asyncio.get_running_loop().create_future()
        ack.set_result(None)
        return ack

    @property
    def chunks(self) -> list[ChunkEmitted]:
        return [event for _, event, _, _ in self.sent]


class Counting(AsgiTransport):
    """The emulator in process, counting the calls made through it."""

    def __init__(self) -> None:
        super().__init__(create_app())
        self.calls = 0

    async def post_json(self, url, headers, body, timeout_s):
        self.calls += 1
        return await super().post_json(url, headers, body, timeout_s)

    def stream_lines(self, url, headers, body, timeout_s):
        self.calls += 1
        return super().stream_lines(url, headers, body, timeout_s)


@pytest.fixture
async def http() -> AsyncIterator[Counting]:
    async with Counting() as transport:
        yield transport


def target(model: str, kind: str = "openai", provider: str = "openai-emu") -> Target:
    return Target(
        alias="alias", provider=provider, kind=kind, base_url="http://emulator/v1", upstream_model=model
    )


def plan_of(req, **fields) -> ExecutionPlanned:
    dep = Deployment(alias="alias", provider="openai-emu", upstream_model="m")
    return ExecutionPlanned(
        request_id=req.request_id, tenant_id=req.tenant_id, request=req, deployments=[dep], **fields
    )


def secret(name: str | None) -> str | None:
    return "sk-test"


def speech(**fields) -> SpeechRequested:
    return SpeechRequested(
        request_id="req-s", tenant_id="t1", model="alias", input=SPOKEN, voice="alloy", **fields
    )


# --- images ---------------------------------------------------------------------------------------


async def test_images_outcome_holds_each_image_inline(http):
    req = ImageGenerateRequested(
        request_id="req-i", tenant_id="t1", model="alias", prompt="a red cat", n=2, size="64x32"
    )
    call = ImagesRunner(http=http, secret=secret).start(plan_of(req))
    assert call.acks == []
    outcome = await call(target("gpt-image-1"), None, NO_LIMIT)
    out = outcome.output
    assert isinstance(out, ImagesOutput) and len(out.data) == 2
    first = out.data[0].media
    assert first.media_id.startswith("med_") and first.media_id != out.data[1].media.media_id
    body = base64.b64decode(first.data)
    assert (first.mime_type, first.bytes, first.filename, first.key) == (
        "image/png",
        len(body),
        "image-0.png",
        None,
    )
    assert Image.open(io.BytesIO(body)).size == (64, 32)
    assert (out.size, out.output_format, out.quality) == ("64x32", "png", "medium")
    assert outcome.usage.units == {"images": 2.0} and outcome.usage.prompt_tokens == 3
    assert (
        outcome.model == "gpt-image-1" and outcome.provider_ms > 0 and outcome.ttft_ms == outcome.provider_ms
    )
    assert outcome.message is None and outcome.error is None


async def test_a_kind_without_images_is_refused_before_any_http(http):
    req = ImageGenerateRequested(request_id="req-i", tenant_id="t1", model="alias", prompt="x")
    call = ImagesRunner(http=http, secret=secret).start(plan_of(req))
    with pytest.raises(CapabilityNotSupported):
        await call(target("claude", kind="anthropic"), None, NO_LIMIT)
    assert http.calls == 0


async def test_a_refusal_carries_the_wait_it_asked_for(http):
    req = ImageGenerateRequested(request_id="req-i", tenant_id="t1", model="alias", prompt="x", size="16x16")
    call = ImagesRunner(http=http, secret=secret).start(plan_of(req))
    with pytest.raises(ProviderError) as err:
        await call(target("gpt-image-1@status=429,retry_after_ms=1500"), None, NO_LIMIT)
    assert err.value.details["upstream_status"] == 429 and err.value.details["retry_after_ms"] == 1500


async def test_a_slow_head_is_a_ttft_timeout_and_a_slow_answer_the_deadline(http):
    req = ImageGenerateRequested(request_id="req-i", tenant_id="t1", model="alias", prompt="x", size="16x16")
    call = ImagesRunner(http=http, secret=secret).start(plan_of(req, ttft_ms=20))
    with pytest.raises(ProviderTimeout, match="no response head within ttft_ms=20"):
        await call(target("gpt-image-1@ttfb_ms=2000"), None, NO_LIMIT)
    call = ImagesRunner(http=http, secret=secret).start(plan_of(req, total_ms=30))
    until = Until(asyncio.get_running_loop().time() + 0.03, True)
    with pytest.raises(ProviderTimeout, match="request exceeded total_ms=30"):
        await call(target("gpt-image-1@ttfb_ms=2000"), None, until)


# --- speech: whole --------------------------------------------------------------------------------


async def test_whole_speech_is_one_inline_media(http):
    publisher = Recorder()
    call = SpeechRunner(publisher=publisher, topics=TOPICS, http=http, secret=secret).start(
        plan_of(speech(response_format="wav"))
    )
    outcome = await call(target("gpt-4o-mini-tts"), None, NO_LIMIT)
    out = outcome.output
    assert isinstance(out, SpeechOutput) and out.format == "wav"
    assert (out.media.mime_type, out.media.filename) == ("audio/wav", "speech.wav")
    with wave.open(io.BytesIO(base64.b64decode(out.media.data))) as w:
        assert w.getframerate() == 24_000
    assert outcome.usage.units == {"characters": float(len(SPOKEN))}
    assert publisher.sent == [] and call.acks == [] and outcome.chunks == 0


# --- speech: streamed -----------------------------------------------------------------------------


def audio_of(chunks: list[ChunkEmitted]) -> bytes:
    return b"".join(base64.b64decode(c.delta.audio) for c in chunks if c.delta.audio)


async def test_streamed_speech_publishes_audio_chunks_then_usage(http):
    publisher = Recorder()
    req = speech(
        response_format="wav",
        stream=True,
        stream_format="sse",
        reply_to=ReplyTo(topic="replies-x", partition=3),
    )
    plan = plan_of(req, chunk_window_ms=0)
    call = SpeechRunner(publisher=publisher, topics=TOPICS, http=http, secret=secret).start(plan)
    outcome = await call(target("gpt-4o-mini-tts"), None, NO_LIMIT)
    chunks = publisher.chunks
    assert {(topic, key, partition) for topic, _, key, partition in publisher.sent} == {
        ("replies-x", "req-s", 3)
    }
    assert [c.seq for c in chunks] == list(range(len(chunks))) and len(chunks) > 2
    assert audio_of(chunks) == synth.wav_bytes(synth.speech_pcm(SPOKEN), SPOKEN)
    first, last = chunks[0], chunks[-1]
    assert (first.provider, first.model) == ("openai-emu", "gpt-4o-mini-tts") and first.ttft_ms is not None
    assert all(c.provider is None and c.ttft_ms is None for c in chunks[1:])
    assert len({c.run_id for c in chunks}) == 1 and first.run_id
    assert [c.final for c in chunks].count(True) == 1 and last.final and last.finish_reason == "stop"
    assert last.usage is not None and last.usage.units == {"characters": float(len(SPOKEN))}
    assert last.usage.prompt_tokens == len(SPOKEN.split())
    assert outcome.output is None and outcome.chunks == len(chunks) and outcome.finish_reason == "stop"
    assert outcome.usage == last.usage and outcome.ttft_ms == first.ttft_ms
    assert len(call.acks) == len(chunks)


async def test_a_long_window_merges_the_audio_and_a_small_cap_splits_it(http):
    publisher = Recorder()
    req = speech(response_format="pcm", stream=True, stream_format="sse")
    call = SpeechRunner(publisher=publisher, topics=TOPICS, http=http, secret=secret).start(
        plan_of(req, chunk_window_ms=60_000)
    )
    await call(target("gpt-4o-mini-tts"), None, NO_LIMIT)
    pcm = synth.speech_pcm(SPOKEN)
    # the first piece at once, the rest together with the terminal chunk
    assert len(publisher.chunks) == 2 and audio_of(publisher.chunks) == pcm
    assert len(base64.b64decode(publisher.chunks[0].delta.audio)) == 4800  # the emulator's first piece
    sent: list[ChunkEmitted] = []

    async def send(chunk):
        sent.append(chunk)
        return asyncio.get_running_loop().create_future()

    emitter = AudioChunkEmitter(
        send, ChunkEmitted(request_id="r", tenant_id="t", seq=0), 60_000, max_bytes=1000
    )
    await emitter.add(bytes(10))
    await emitter.add(bytes(2500))
    await emitter.finish(Usage(units={"characters": 1.0}))
    assert [len(base64.b64decode(c.delta.audio or "")) for c in sent] == [10, 1000, 1000, 500]
    assert [c.final for c in sent] == [False, False, False, True] and sent[-1].usage is not None


async def test_audio_waiting_for_its_window_is_sent_when_the_window_ends():
    sent: list[ChunkEmitted] = []
    two = asyncio.Event()

    async def send(chunk):
        sent.append(chunk)
        if len(sent) == 2:
            two.set()
        return asyncio.get_running_loop().create_future()

    emitter = AudioChunkEmitter(send, ChunkEmitted(request_id="r", tenant_id="t", seq=0), 200)
    await emitter.add(b"first")
    await emitter.add(b"second")
    await emitter.add(b"third")
    assert len(sent) == 1
    await asyncio.wait_for(two.wait(), 5)  # the window's timer, not another add
    assert base64.b64decode(sent[1].delta.audio) == b"secondthird" and not sent[1].final
    await emitter.finish(Usage())
    assert sent[-1].final and sent[-1].delta.audio is None and [c.seq for c in sent] == [0, 1, 2]


class Cut:
    """A transport whose speech stream sends ``events`` SSE events, then loses the connection."""

    def __init__(self, events: int) -> None:
        self.events = events

    @contextlib.asynccontextmanager
    async def stream_lines(self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float | None):
        yield _CutReply(self.events)

    async def aclose(self) -> None:
        pass


class _CutReply:
    status, headers = 200, {"content-type": "text/event-stream"}

    def __init__(self, events: int) -> None:
        self.events = events

    async def read(self) -> bytes:
        return b""

    async def lines(self):
        for _ in range(self.events):
            event = {"type": "speech.audio.delta", "audio": base64.b64encode(b"\x00\x01").decode()}
            yield "data: " + orjson.dumps(event).decode()
            yield ""
        raise aiohttp.ClientPayloadError("connection lost")


async def test_a_stream_lost_after_audio_went_out_ends_the_request():
    publisher = Recorder()
    req = speech(stream=True, stream_format="sse")
    call = SpeechRunner(publisher=publisher, topics=TOPICS, http=Cut(2), secret=secret).start(plan_of(req))
    with pytest.raises(Final) as stop:
        await call(target("gpt-4o-mini-tts"), None, NO_LIMIT)
    assert isinstance(stop.value.error, ProviderError) and "connection failed" in stop.value.error.message
    assert publisher.chunks and not any(c.final for c in publisher.chunks)


async def test_a_stream_lost_before_any_audio_may_fall_back(http):
    publisher = Recorder()
    req = speech(response_format="pcm", stream=True, stream_format="sse")
    runner = SpeechRunner(publisher=publisher, topics=TOPICS, http=Cut(0), secret=secret)
    call = runner.start(plan_of(req, chunk_window_ms=0))
    with pytest.raises(ProviderError):  # not Final: the caller has nothing yet
        await call(target("gpt-4o-mini-tts"), None, NO_LIMIT)
    assert publisher.sent == []
    runner.http = http
    first, second = target("gpt-4o-mini-tts"), target("gpt-4o-mini-tts", provider="openai-backup")
    outcome = await call(second, first, NO_LIMIT)
    chunks = publisher.chunks
    assert chunks[0].seq == 0 and chunks[0].fallback == "alias/openai-emu -> alias/openai-backup"
    assert chunks[0].provider == "openai-backup" and outcome.deployment == second
    assert audio_of(chunks) == synth.speech_pcm(SPOKEN)


async def test_no_audio_within_ttft_is_a_timeout(http):
    req = speech(response_format="pcm", stream=True)
    call = SpeechRunner(publisher=Recorder(), topics=TOPICS, http=http, secret=secret).start(
        plan_of(req, ttft_ms=20)
    )
    with pytest.raises(ProviderTimeout, match="no audio within ttft_ms=20"):
        await call(target("tts-1@ttfb_ms=2000"), None, NO_LIMIT)


# --- transcriptions -------------------------------------------------------------------------------


async def test_transcription_reads_the_request_as_materialised_at_call_time(http):
    wav = synth.wav_bytes(synth.speech_pcm(SPOKEN), SPOKEN)
    ref = MediaRef(media_id="med_1", mime_type="audio/wav", bytes=len(wav), key="tenants/t1/media/med_1")
    req = TranscribeRequested(
        request_id="req-t",
        tenant_id="t1",
        model="alias",
        file=MediaSource(url="med_1", media=ref),
        response_format="verbose_json",
    )
    plan = plan_of(req)
    call = TranscribeRunner(http=http, secret=secret).start(plan)
    filled = ref.model_copy(update={"data": base64.b64encode(wav).decode()})  # as the executor does
    plan.request = req.model_copy(update={"file": req.file.model_copy(update={"media": filled})})
    outcome = await call(target("whisper-1"), None, NO_LIMIT)
    out = outcome.output
    assert isinstance(out, TranscriptionOutput)
    assert (out.text, out.format, out.language) == (SPOKEN, "verbose_json", "english")
    assert out.duration_s == pytest.approx(len(SPOKEN) / 15, abs=0.01)
    assert isinstance(out.body, dict) and out.body["segments"]
    assert outcome.usage.units == {"audio_seconds": 4.0} and outcome.model == "whisper-1"
