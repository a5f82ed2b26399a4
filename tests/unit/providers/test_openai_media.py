"""OpenAI's media adapters: the pure mappings, then against the provider emulator, in process
(``AsgiTransport``, as the other provider suites) and over real HTTP (uvicorn) through aiohttp
for what needs a real connection: dropped streams, downloads, chunked bodies."""

from __future__ import annotations

import base64
import contextlib
import io
import math
import wave
from collections.abc import AsyncIterator, Iterator, Mapping

import aiohttp
import orjson
import pytest
from PIL import Image

from services.contracts.errors import ProviderError
from services.contracts.events import (
    ImageGenerateRequested,
    MediaRef,
    MediaSource,
    SpeechRequested,
    TranscribeRequested,
)
from services.emulator import create_app
from services.emulator import media_synth as synth
from services.executor.providers.media_base import ChunkedReply, Downloads
from services.executor.providers.openai_media import (
    OpenAIImagesAdapter,
    OpenAISpeechAdapter,
    OpenAITranscribeAdapter,
    SpeechEvents,
    image_mime,
    multipart,
    subtitles_text,
    upload_name,
)
from services.executor.providers.registry import adapter_for
from services.executor.providers.transport import AiohttpTransport, split_lines
from services.executor.targets import Target
from tests.unit.emulator.conftest import serve

from .support import AsgiTransport

IMAGES, SPEECH, TRANSCRIBE = OpenAIImagesAdapter(), OpenAISpeechAdapter(), OpenAITranscribeAdapter()
SPOKEN = "Hello there, world. This is the emulator speaking."


def target(model: str, base_url: str = "http://emulator/v1") -> Target:
    return Target(
        alias="alias", provider="openai-emu", kind="openai", base_url=base_url, upstream_model=model
    )


def image_request(**fields) -> ImageGenerateRequested:
    return ImageGenerateRequested(
        request_id="req-1", tenant_id="t1", model="alias", prompt="a red cat", **fields
    )


def speech_request(**fields) -> SpeechRequested:
    fields.setdefault("input", SPOKEN)
    return SpeechRequested(request_id="req-1", tenant_id="t1", model="alias", voice="alloy", **fields)


def transcribe_request(audio: bytes, mime: str = "audio/wav", *, duration_s=None, filename=None, **fields):
    media = MediaRef(
        media_id="med_1",
        mime_type=mime,
        bytes=len(audio),
        data=base64.b64encode(audio).decode(),
        duration_s=duration_s,
        filename=filename,
    )
    return TranscribeRequested(
        request_id="req-1",
        tenant_id="t1",
        model="alias",
        file=MediaSource(url="med_1", media=media),
        **fields,
    )


@pytest.fixture
async def emulator() -> AsyncIterator[AsgiTransport]:
    async with AsgiTransport(create_app()) as http:
        yield http


@pytest.fixture(scope="module")
def live_url() -> Iterator[str]:
    with serve() as url:
        yield url + "/v1"


class Reply:
    """An aiohttp reply as the transport patch would make it: lines, and raw chunks."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response, self.status, self.headers = response, response.status, response.headers

    async def read(self) -> bytes:
        return await self._response.read()

    def lines(self) -> AsyncIterator[str]:
        return split_lines(self._response.content.iter_any())

    def chunks(self) -> AsyncIterator[bytes]:
        return self._response.content.iter_any()


class Patched:
    """``AiohttpTransport`` with the abilities the media adapters use when offered: ``get``
    (``Downloads``) and replies that are ``ChunkedReply``s."""

    def __init__(self) -> None:
        self.session = aiohttp.ClientSession()
        self.gets: list[str] = []

    async def post_json(self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float | None):
        async with self.session.post(url, data=body, headers=headers) as r:
            return r.status, await r.read()

    @contextlib.asynccontextmanager
    async def stream_lines(self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float | None):
        async with self.session.post(url, data=body, headers=headers) as r:
            yield Reply(r)

    async def get(self, url: str, headers: Mapping[str, str], timeout_s: float | None):
        self.gets.append(url)
        async with self.session.get(url, headers=headers) as r:
            return r.status, await r.read()

    async def aclose(self) -> None:
        await self.session.close()


@pytest.fixture
async def patched() -> AsyncIterator[Patched]:
    http = Patched()
    yield http
    await http.aclose()


def test_the_registry_offers_the_three_media_operations():
    assert isinstance(adapter_for("openai", "image.generate"), OpenAIImagesAdapter)
    assert isinstance(adapter_for("openai", "audio.speech"), OpenAISpeechAdapter)
    assert isinstance(adapter_for("openai", "audio.transcribe"), OpenAITranscribeAdapter)


def test_the_test_transport_has_what_the_adapters_look_for():
    assert issubclass(Patched, Downloads) and issubclass(Reply, ChunkedReply)
    assert not isinstance(object(), Downloads) and not isinstance(object(), ChunkedReply)


# --- images: mapping ------------------------------------------------------------------------------


def test_images_ask_for_base64_except_gpt_image_models():
    wire = IMAGES.to_wire(
        image_request(n=2, size="512x512", extra={"style": "vivid", "n": 9}), target("dall-e-3")
    )
    assert wire == {
        "style": "vivid",
        "model": "dall-e-3",
        "prompt": "a red cat",
        "n": 2,
        "size": "512x512",
        "response_format": "b64_json",
    }
    wire = IMAGES.to_wire(image_request(quality="high", output_format="webp"), target("gpt-image-1"))
    assert "response_format" not in wire and (wire["quality"], wire["output_format"]) == ("high", "webp")
    wire = IMAGES.to_wire(image_request(extra={"response_format": "url"}), target("dall-e-2"))
    assert wire["response_format"] == "url"


def test_images_from_wire_sniffs_types_and_counts_images():
    png = synth.image_bytes("x", 0, 16, 16)
    jpeg = synth.image_bytes("x", 0, 16, 16, "jpeg")
    body = {
        "created": 7,
        "data": [
            {"b64_json": base64.b64encode(png).decode()},
            {"b64_json": base64.b64encode(jpeg).decode(), "revised_prompt": "r"},
            {"url": "https://provider.example/img.png"},
        ],
        "usage": {"input_tokens": 3, "output_tokens": 100, "total_tokens": 103},
        "output_format": "webp",
    }
    done = IMAGES.from_wire(body, image_request())
    assert [(p.data, p.mime_type, p.revised_prompt, p.url) for p in done.images] == [
        (png, "image/png", None, None),
        (jpeg, "image/jpeg", "r", None),
        (b"", "image/webp", None, "https://provider.example/img.png"),
    ]
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (3, 100, 103)
    assert done.usage.units == {"images": 3.0}
    assert (done.created, done.output_format) == (7, "webp")
    for bad in ({"data": []}, {"data": [{}]}, {"data": [{"b64_json": "!!"}]}, {}):
        with pytest.raises((KeyError, ValueError)):
            IMAGES.from_wire(bad, image_request())


def test_image_mime_knows_the_common_magic():
    assert image_mime(synth.image_bytes("x", 0, 16, 16, "webp")) == "image/webp"
    assert image_mime(b"GIF89a...") == "image/gif"
    assert image_mime(b"<svg") is None


# --- images: against the emulator -----------------------------------------------------------------


async def test_gpt_image_generates_pngs_with_token_usage(emulator):
    done = await IMAGES.generate(emulator, image_request(n=2, size="256x128"), target("gpt-image-1"), "sk")
    assert len(done.images) == 2
    assert [Image.open(io.BytesIO(p.data)).size for p in done.images] == [(256, 128)] * 2
    assert {p.mime_type for p in done.images} == {"image/png"}
    assert done.images[0].data == synth.image_bytes("a red cat", 0, 256, 128)
    assert done.usage.units == {"images": 2.0}
    assert done.usage.prompt_tokens == 3 and done.usage.completion_tokens > 0
    assert (done.model, done.size, done.quality, done.output_format) == (
        "gpt-image-1",
        "256x128",
        "medium",
        "png",
    )


async def test_dalle_images_come_back_as_bytes_with_revised_prompts(emulator):
    done = await IMAGES.generate(
        emulator, image_request(size="64x64", output_format="jpeg"), target("dall-e-3"), None
    )
    (picture,) = done.images
    assert picture.mime_type == "image/jpeg" and picture.revised_prompt == "a red cat"
    assert done.usage.units == {"images": 1.0} and done.usage.total_tokens == 0


async def test_url_answers_need_a_transport_that_downloads(emulator):
    with pytest.raises(ProviderError, match="cannot download"):
        await IMAGES.generate(
            emulator, image_request(size="16x16", extra={"response_format": "url"}), target("dall-e-2"), None
        )


async def test_url_answers_are_downloaded_through_the_transport(patched, live_url):
    req = image_request(size="32x32", n=2, extra={"response_format": "url"})
    done = await IMAGES.generate(patched, req, target("dall-e-2", live_url), None)
    assert [p.data for p in done.images] == [synth.image_bytes("a red cat", i, 32, 32) for i in range(2)]
    assert all(p.url is None and p.mime_type == "image/png" for p in done.images)
    assert len(patched.gets) == 2 and all("/_emulator/files/" in u for u in patched.gets)


async def test_image_errors_keep_the_providers_status_and_message(emulator):
    with pytest.raises(ProviderError) as err:
        await IMAGES.generate(emulator, image_request(), target("gpt-image-1@status=429"), None)
    assert err.value.details["upstream_status"] == 429 and err.value.retryable
    with pytest.raises(ProviderError) as err:
        await IMAGES.generate(emulator, image_request(size="10x10"), target("gpt-image-1"), None)
    assert err.value.details["upstream_status"] == 400 and not err.value.retryable
    assert "sides of 16 to 4096" in err.value.message


async def test_a_dropped_connection_is_a_provider_error(live_url):
    async with AiohttpTransport() as http:
        with pytest.raises(ProviderError) as err:
            await IMAGES.generate(
                http, image_request(), target("gpt-image-1@disconnect_after=0", live_url), None
            )
    assert err.value.details["upstream_status"] is None


async def test_an_unreachable_provider_is_a_provider_error():
    async with AiohttpTransport(connect_timeout_s=2) as http:
        with pytest.raises(ProviderError, match="connection failed"):
            await IMAGES.generate(http, image_request(), target("gpt-image-1", "http://127.0.0.1:9/v1"), None)


# --- speech ---------------------------------------------------------------------------------------


def test_speech_to_wire_streams_only_when_asked():
    req = speech_request(
        response_format="wav", speed=1.5, instructions="calm", extra={"stream_format": "sse"}
    )
    whole = SPEECH.to_wire(req, target("gpt-4o-mini-tts"), stream=False)
    assert whole == {
        "model": "gpt-4o-mini-tts",
        "input": SPOKEN,
        "voice": "alloy",
        "response_format": "wav",
        "speed": 1.5,
        "instructions": "calm",
    }
    assert SPEECH.to_wire(speech_request(), target("tts-1"), stream=True)["stream_format"] == "audio"
    sse = speech_request(stream_format="sse", stream=True)
    assert SPEECH.to_wire(sse, target("gpt-4o-mini-tts"), stream=True)["stream_format"] == "sse"


def test_speech_events_decode_deltas_and_usage():
    events = SpeechEvents("p", speech_request(input="abc"))
    delta = orjson.dumps({"type": "speech.audio.delta", "audio": base64.b64encode(b"\x01\x02").decode()})
    done = orjson.dumps({"type": "speech.audio.done", "usage": {"input_tokens": 1, "output_tokens": 4}})
    (piece,) = events.feed("data: " + delta.decode())
    assert (piece.audio, piece.usage) == (b"\x01\x02", None)
    (last,) = events.feed("data: " + done.decode())
    assert last.audio == b"" and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (1, 4, 5)
    assert last.usage.units == {"characters": 3.0}
    assert events.feed("") == [] and events.feed(": keep-alive") == [] and events.close() == []
    with pytest.raises(ProviderError, match="ended before"):
        SpeechEvents("p", speech_request()).close()
    with pytest.raises(ProviderError, match="not base64"):
        SpeechEvents("p", speech_request()).feed('data: {"type":"speech.audio.delta","audio":"%%"}')
    with pytest.raises(ProviderError, match="speech stream failed: nope"):
        SpeechEvents("p", speech_request()).feed('data: {"type":"error","error":{"message":"nope"}}')


async def test_whole_speech_is_the_audio_with_its_type(emulator):
    done = await SPEECH.speak(
        emulator, speech_request(response_format="wav"), target("gpt-4o-mini-tts"), None
    )
    assert (done.mime_type, done.format, done.model) == ("audio/wav", "wav", "gpt-4o-mini-tts")
    with wave.open(io.BytesIO(done.audio)) as w:
        assert w.getnframes() / w.getframerate() == pytest.approx(len(SPOKEN) / 15, abs=0.01)
    assert done.usage.units == {"characters": float(len(SPOKEN))}
    mp3 = await SPEECH.speak(emulator, speech_request(), target("tts-1"), None)
    assert mp3.mime_type == "audio/mpeg" and mp3.audio[:2] == b"\xff\xfb"


async def test_speech_formats_the_provider_refuses_are_its_400(emulator):
    with pytest.raises(ProviderError) as err:
        await SPEECH.speak(emulator, speech_request(response_format="opus"), target("tts-1"), None)
    assert err.value.details["upstream_status"] == 400 and "does not produce 'opus'" in err.value.message


async def collect(pieces):
    return [p async for p in pieces]


async def test_sse_speech_streams_the_same_audio_then_usage(emulator):
    req = speech_request(response_format="wav", stream=True, stream_format="sse")
    *audio, last = await collect(SPEECH.stream(emulator, req, target("gpt-4o-mini-tts"), None))
    whole = await SPEECH.speak(
        emulator, speech_request(response_format="wav"), target("gpt-4o-mini-tts"), None
    )
    assert len(audio) > 1 and b"".join(p.audio for p in audio) == whole.audio
    assert last.usage is not None and last.usage.units == {"characters": float(len(SPOKEN))}
    assert last.usage.prompt_tokens == len(SPOKEN.split()) and last.usage.completion_tokens > 0


async def test_raw_audio_streams_whole_without_chunks_and_in_chunks_with_them(emulator, patched, live_url):
    req = speech_request(response_format="pcm", stream=True)
    *read, last = await collect(SPEECH.stream(emulator, req, target("tts-1"), None))
    assert b"".join(p.audio for p in read) == synth.speech_pcm(SPOKEN)
    assert last.usage is not None and last.usage.units == {"characters": float(len(SPOKEN))}
    chunked = await collect(SPEECH.stream(patched, req, target("tts-1@chunk_delay_ms=2", live_url), None))
    assert len(chunked) > 2 and b"".join(p.audio for p in chunked) == synth.speech_pcm(SPOKEN)
    assert chunked[-1].usage is not None


async def test_a_speech_stream_cut_short_is_a_provider_error(patched, live_url):
    req = speech_request(response_format="pcm", stream=True)
    got = []
    with pytest.raises(ProviderError) as err:
        async for piece in SPEECH.stream(
            patched, req, target("tts-1@disconnect_after=2,chunk_delay_ms=2", live_url), None
        ):
            got.append(piece)
    assert err.value.details["upstream_status"] is None
    assert 0 < sum(len(p.audio) for p in got) < len(synth.speech_pcm(SPOKEN))


async def test_a_refused_speech_stream_raises_before_any_piece(emulator):
    req = speech_request(stream=True, stream_format="sse")
    with pytest.raises(ProviderError) as err:
        await collect(SPEECH.stream(emulator, req, target("tts-1"), None))  # sse is not for tts-1
    assert err.value.details["upstream_status"] == 400


# --- transcriptions: mapping ----------------------------------------------------------------------


def test_upload_names_keep_audio_extensions_and_are_header_safe():
    src = MediaSource(url="x", filename='my "talk"\r\n.WAV')
    assert upload_name(src, "audio/wav") == "my_talk_.wav"
    assert upload_name(MediaSource(url="x", filename="notes.txt"), "audio/mpeg") == "audio.mp3"
    assert upload_name(MediaSource(url="x"), "audio/x-m4a") == "audio.m4a"
    assert upload_name(MediaSource(url="x"), "application/octet-stream") == "audio.wav"
    media = MediaRef(media_id="m", mime_type="audio/ogg", bytes=1, filename="voice.ogg")
    assert upload_name(MediaSource(url="x", filename="other.mp3", media=media), "audio/ogg") == "voice.ogg"


def test_multipart_body_is_exact():
    assert multipart([("model", "whisper-1")], ("a.wav", "audio/wav", b"RIFF"), "B") == (
        b'--B\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\nRIFF\r\n--B--\r\n"
    )


def test_transcribe_to_wire_sends_the_typed_fields_over_extra():
    req = transcribe_request(
        b"RIFF",
        language="en",
        temperature=0.2,
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
        extra={
            "language": "fr",
            "include": ["logprobs"],
            "chunking_strategy": {"type": "auto"},
            "flag": True,
        },
    )
    content_type, body = TRANSCRIBE.to_wire(req, target("whisper-1"), boundary="XYZ")
    assert content_type == "multipart/form-data; boundary=XYZ"
    text = body.decode()
    assert 'name="include"\r\n\r\n["logprobs"]' in text and 'name="flag"\r\n\r\ntrue' in text
    assert 'name="chunking_strategy"\r\n\r\n{"type":"auto"}' in text
    assert text.count('name="language"') == 1 and 'name="language"\r\n\r\nen' in text
    assert text.count('name="timestamp_granularities[]"') == 2 and 'name="prompt"' not in text
    assert body.endswith(b'filename="audio.wav"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n--XYZ--\r\n')
    unresolved = TranscribeRequested(request_id="r", tenant_id="t", model="a", file=MediaSource(url="med_1"))
    with pytest.raises(RuntimeError, match="unresolved"):
        TRANSCRIBE.to_wire(unresolved, target("whisper-1"))


def test_subtitles_text_reads_srt_and_vtt():
    srt = "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n00:00:01,500 --> 00:01:02,250\nBye now.\n\n"
    assert subtitles_text(srt) == ("Hello there. Bye now.", 62.25)
    vtt = "WEBVTT\n\nNOTE made up\n\n00:01.000 --> 00:02.500\nOne\ntwo\n"
    assert subtitles_text(vtt) == ("One two", 2.5)


def test_transcription_from_wire_prefers_the_providers_duration():
    req = transcribe_request(b"x", duration_s=4.2)
    done = TRANSCRIBE.from_wire(b'{"text":"hi","usage":{"type":"duration","seconds":5}}', req)
    assert (done.text, done.duration_s, done.usage.units) == ("hi", 4.2, {"audio_seconds": 5.0})
    verbose = transcribe_request(b"x", duration_s=4.2, response_format="verbose_json")
    done = TRANSCRIBE.from_wire(b'{"text":"hi","duration":4.25,"language":"english"}', verbose)
    assert (done.duration_s, done.language, done.usage.units) == (4.25, "english", {"audio_seconds": 4.25})
    tokens = b'{"text":"hi","usage":{"type":"tokens","input_tokens":7,"output_tokens":1,"total_tokens":8}}'
    done = TRANSCRIBE.from_wire(tokens, transcribe_request(b"x"))
    assert (done.usage.prompt_tokens, done.usage.total_tokens, done.usage.units) == (7, 8, {})
    text = TRANSCRIBE.from_wire(
        b"hi there\n", transcribe_request(b"x", duration_s=2.0, response_format="text")
    )
    assert (text.text, text.body, text.usage.units) == ("hi there", "hi there\n", {"audio_seconds": 2.0})
    for bad in (b"[]", b'{"txt": 1}', b"not json"):
        with pytest.raises(ValueError):
            TRANSCRIBE.from_wire(bad, transcribe_request(b"x"))


# --- transcriptions: against the emulator ---------------------------------------------------------


async def test_the_emulators_speech_transcribes_back(emulator):
    wav = synth.wav_bytes(synth.speech_pcm(SPOKEN), SPOKEN)
    done = await TRANSCRIBE.transcribe(emulator, transcribe_request(wav), target("whisper-1"), "sk")
    assert (done.text, done.format, done.model) == (SPOKEN, "json", "whisper-1")
    assert done.body == {
        "text": SPOKEN,
        "usage": {"type": "duration", "seconds": math.ceil(len(SPOKEN) / 15)},
    }
    assert done.usage.units == {"audio_seconds": float(math.ceil(len(SPOKEN) / 15))}


async def test_verbose_transcriptions_carry_duration_language_and_words(emulator):
    wav = synth.wav_bytes(synth.speech_pcm(SPOKEN), SPOKEN)
    req = transcribe_request(
        wav, response_format="verbose_json", timestamp_granularities=["word"], language="de"
    )
    done = await TRANSCRIBE.transcribe(emulator, req, target("whisper-1"), None)
    assert done.duration_s == pytest.approx(len(SPOKEN) / 15, abs=0.01) and done.language == "german"
    assert isinstance(done.body, dict) and [w["word"] for w in done.body["words"]][:2] == ["Hello", "there"]


@pytest.mark.parametrize("fmt", ["srt", "vtt", "text"])
async def test_text_transcriptions_keep_the_body_and_find_the_text(emulator, fmt):
    wav = synth.wav_bytes(synth.speech_pcm(SPOKEN), SPOKEN)
    done = await TRANSCRIBE.transcribe(
        emulator, transcribe_request(wav, response_format=fmt), target("whisper-1"), None
    )
    assert done.text == SPOKEN and isinstance(done.body, str) and done.body != SPOKEN
    assert (
        done.duration_s == pytest.approx(len(SPOKEN) / 15, abs=0.01)
        if fmt != "text"
        else done.duration_s is None
    )


async def test_token_billed_transcriptions_use_the_medias_duration(emulator):
    mp3 = synth.mp3_silence(2.0)
    req = transcribe_request(mp3, "audio/mpeg", duration_s=2.016, filename="clip.mp3")
    done = await TRANSCRIBE.transcribe(emulator, req, target("gpt-4o-mini-transcribe"), None)
    assert done.text == "The emulator heard 2.0 seconds of audio."
    assert done.usage.prompt_tokens > 0 and done.usage.completion_tokens == 7
    assert done.usage.units == {"audio_seconds": 2.016}


async def test_transcription_errors_are_the_providers(emulator):
    with pytest.raises(ProviderError) as err:
        await TRANSCRIBE.transcribe(
            emulator, transcribe_request(b"RIFF", response_format="srt"), target("gpt-4o-transcribe"), None
        )
    assert err.value.details["upstream_status"] == 400 and "not compatible" in err.value.message
    with pytest.raises(ProviderError) as err:
        await TRANSCRIBE.transcribe(
            emulator, transcribe_request(b"RIFF"), target("whisper-1@status=503"), None
        )
    assert err.value.details["upstream_status"] == 503 and err.value.retryable


async def test_a_reply_the_adapter_cannot_read_is_malformed():
    class Garbage:
        async def post_json(self, url, headers, body, timeout_s):
            return 200, b"<html>oops</html>"

    with pytest.raises(ProviderError, match="unexpected transcription response"):
        await TRANSCRIBE.transcribe(Garbage(), transcribe_request(b"RIFF"), target("whisper-1"), None)  # type: ignore[arg-type]
    with pytest.raises(ProviderError, match="unexpected images response"):
        await IMAGES.generate(Garbage(), image_request(), target("gpt-image-1"), None)  # type: ignore[arg-type]
