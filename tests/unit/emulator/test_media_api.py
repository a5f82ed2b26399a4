"""The emulated media APIs (images, speech, transcriptions) through the official ``openai`` SDK,
read back with its own response types, and the media they make."""

from __future__ import annotations

import base64
import io
import math
import struct
import uuid
import wave

import httpx
import openai
import orjson
import pytest
from openai.types import ImagesResponse
from openai.types.audio import Transcription, TranscriptionVerbose
from PIL import Image

from services.emulator import media_synth as synth
from services.emulator.common import CALL_KINDS

from .conftest import serve

SPOKEN = "Hello there, world. This is the emulator speaking."


@pytest.fixture
def oai(emulator_url):
    with openai.OpenAI(base_url=f"{emulator_url}/v1", api_key="x", max_retries=0) as c:
        yield c


def picture(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def wav_of(text: str, oai: openai.OpenAI, **kw) -> bytes:
    return oai.audio.speech.create(
        model="gpt-4o-mini-tts", input=text, voice="alloy", response_format="wav", **kw
    ).content


def calls(url: str, kind: str) -> list[dict]:
    return [c for c in httpx.get(f"{url}/_emulator/calls").json() if c["kind"] == kind]


# --- images ---------------------------------------------------------------------------------------


def test_gpt_image_answers_base64_pngs_of_the_asked_size_with_usage(oai):
    r = oai.images.generate(model="gpt-image-1", prompt="a red cat on a mat", n=2, size="1536x1024")
    assert isinstance(r, ImagesResponse)
    assert len(r.data) == 2 and all(d.url is None and d.revised_prompt is None for d in r.data)
    first, second = (picture(d.b64_json) for d in r.data)
    assert (first.format, first.size) == ("PNG", (1536, 1024))
    assert first.tobytes() != second.tobytes()  # each image of a request differs
    assert len(base64.b64decode(r.data[0].b64_json)) < 64_000  # flat colours: small files
    assert (r.output_format, r.size, r.quality, r.background) == ("png", "1536x1024", "medium", "opaque")
    assert r.usage.input_tokens == 6 == r.usage.input_tokens_details.text_tokens
    assert r.usage.output_tokens == 2 * math.ceil(1056 * 1.5)
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens


def test_images_are_deterministic_per_prompt(oai):
    one = oai.images.generate(model="gpt-image-1", prompt="a lighthouse", size="256x256")
    again = oai.images.generate(model="gpt-image-1", prompt="a lighthouse", size="256x256")
    other = oai.images.generate(model="gpt-image-1", prompt="a lantern", size="256x256")
    assert one.data[0].b64_json == again.data[0].b64_json != other.data[0].b64_json


def test_gpt_image_answers_base64_even_when_asked_for_urls(oai):
    r = oai.images.generate(model="gpt-image-1", prompt="x", size="64x64", response_format="url")
    assert r.data[0].url is None and picture(r.data[0].b64_json).size == (64, 64)


@pytest.mark.parametrize(("fmt", "pillow"), [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_output_formats(oai, fmt, pillow):
    r = oai.images.generate(model="gpt-image-1", prompt="a boat", size="128x64", output_format=fmt)
    assert (picture(r.data[0].b64_json).format, r.output_format) == (pillow, fmt)


def test_dalle_answers_urls_the_emulator_serves(oai, emulator_url):
    r = oai.images.generate(model="dall-e-3", prompt="a blue dog", size="256x256")
    (item,) = r.data
    assert item.b64_json is None and item.revised_prompt == "a blue dog"
    assert r.usage is None
    assert item.url.startswith(f"{emulator_url}/_emulator/files/file-")
    got = httpx.get(item.url)
    assert got.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(got.content)).size == (256, 256)
    assert got.content == synth.image_bytes("a blue dog", 0, 256, 256)
    b64 = oai.images.generate(
        model="dall-e-3", prompt="a blue dog", size="256x256", response_format="b64_json"
    )
    assert base64.b64decode(b64.data[0].b64_json) == got.content


def test_an_unknown_file_is_a_404(emulator_url):
    r = httpx.get(f"{emulator_url}/_emulator/files/file-nope")
    assert r.status_code == 404 and "error" in r.json()


def test_the_oldest_files_are_forgotten(monkeypatch):
    from services.emulator import media_api

    monkeypatch.setattr(media_api, "FILES_KEPT", 2)
    with serve() as url, openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as c:
        urls = [c.images.generate(prompt=f"p{i}", size="16x16").data[0].url for i in range(3)]
        assert [httpx.get(u).status_code for u in urls] == [404, 200, 200]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"size": "10x10"}, "size"),
        ({"size": "big"}, "size"),
        ({"n": 11}, "n"),
        ({"quality": "ultra"}, "quality"),
        ({"output_format": "gif"}, "output_format"),
        ({"response_format": "png"}, "response_format"),
    ],
)
def test_image_requests_it_refuses(oai, params, param):
    with pytest.raises(openai.BadRequestError) as err:
        oai.images.generate(model="gpt-image-1", prompt="x", **params)
    assert err.value.body["param"] == param
    assert err.value.body["type"] == "invalid_request_error"


def test_an_image_request_without_prompt_is_a_400(emulator_url):
    r = httpx.post(f"{emulator_url}/v1/images/generations", json={"model": "gpt-image-1"})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "Missing required parameter: 'prompt'."


def test_image_scenarios_fail_first_and_status(oai, unique_key):
    model = f"gpt-image-1@fail_first=1,status=503,key={unique_key}"
    with pytest.raises(openai.InternalServerError) as err:
        oai.images.generate(model=model, prompt="x", size="16x16")
    assert err.value.status_code == 503
    assert oai.images.generate(model=model, prompt="x", size="16x16").data
    with pytest.raises(openai.RateLimitError):
        oai.images.generate(model="gpt-image-1@status=429", prompt="x", size="16x16")


def test_an_image_request_may_hang(emulator_url):
    with openai.OpenAI(base_url=f"{emulator_url}/v1", api_key="x", max_retries=0, timeout=0.3) as c:
        with pytest.raises(openai.APITimeoutError):
            c.images.generate(model="gpt-image-1@hang=1", prompt="hang here", size="16x16")


# --- speech ---------------------------------------------------------------------------------------


def test_wav_speech_is_24khz_mono_16bit_as_long_as_the_text(oai):
    audio = wav_of(SPOKEN, oai)
    with wave.open(io.BytesIO(audio)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24_000, 1, 2)
        seconds = w.getnframes() / w.getframerate()
        frames = w.readframes(w.getnframes())
    assert seconds == pytest.approx(len(SPOKEN) / synth.CHARS_PER_SECOND, abs=0.01)
    assert any(frames) and frames != bytes(len(frames))  # a tone, not silence
    assert synth.audio_info(audio).comment == SPOKEN  # the text rides along in LIST/INFO/ICMT
    faster = wav_of(SPOKEN, oai, speed=2.0)
    assert synth.audio_info(faster).duration_s == pytest.approx(seconds / 2, abs=0.01)


def test_pcm_speech_is_the_wav_samples_without_a_header(oai):
    r = oai.audio.speech.with_raw_response.create(
        model="gpt-4o-mini-tts", input=SPOKEN, voice="alloy", response_format="pcm"
    )
    assert r.headers["content-type"] == "audio/pcm"
    with wave.open(io.BytesIO(wav_of(SPOKEN, oai))) as w:
        assert r.content == w.readframes(w.getnframes())


def test_mp3_speech_is_mpeg1_layer3_frames(oai):
    r = oai.audio.speech.with_raw_response.create(model="tts-1", input=SPOKEN, voice={"id": "voice_1"})
    assert r.headers["content-type"] == "audio/mpeg"
    audio = r.content
    assert len(audio) % 96 == 0 and len(audio) > 96
    for at in range(0, len(audio), 96):  # every frame opens with a frame sync
        head = audio[at : at + 4]
        assert head[0] == 0xFF and head[1] & 0xE0 == 0xE0
        assert (head[1] >> 3) & 3 == 3 and (head[1] >> 1) & 3 == 1  # MPEG-1, Layer III
    assert synth.audio_info(audio).duration_s == pytest.approx(len(SPOKEN) / 15, abs=0.03)


@pytest.mark.parametrize("fmt", ["opus", "flac", "aac"])
def test_formats_the_emulator_does_not_make_are_a_400(oai, fmt):
    with pytest.raises(openai.BadRequestError) as err:
        oai.audio.speech.create(model="tts-1", input="hi", voice="alloy", response_format=fmt)
    assert err.value.body["param"] == "response_format"
    assert f"does not produce '{fmt}'" in err.value.body["message"]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": "x" * 4097}, "input"),
        ({"speed": 5.0}, "speed"),
        ({"voice": 3}, "voice"),
    ],
)
def test_speech_requests_it_refuses(emulator_url, params, param):
    body = {"model": "tts-1", "input": "hi", "voice": "alloy", **params}
    r = httpx.post(f"{emulator_url}/v1/audio/speech", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == param


def test_sse_speech_sends_audio_deltas_then_usage(oai):
    with oai.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", input=SPOKEN, voice="alloy", response_format="wav", stream_format="sse"
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [orjson.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    *deltas, done = events
    assert len(deltas) > 1 and {d["type"] for d in deltas} == {"speech.audio.delta"}
    assert b"".join(base64.b64decode(d["audio"]) for d in deltas) == wav_of(SPOKEN, oai)
    assert done["type"] == "speech.audio.done"
    usage = done["usage"]
    assert usage["input_tokens"] == len(SPOKEN.split())
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > usage["input_tokens"]


def test_sse_is_refused_for_tts_1(oai):
    with pytest.raises(openai.BadRequestError) as err:
        oai.audio.speech.create(model="tts-1-hd", input="hi", voice="alloy", stream_format="sse")
    assert err.value.body["param"] == "stream_format"


def test_audio_streams_in_chunks_and_can_drop(oai):
    with oai.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts@chunk_delay_ms=1", input=SPOKEN, voice="alloy", response_format="pcm"
    ) as r:
        pieces = list(r.iter_bytes())
    assert b"".join(pieces) == synth.speech_pcm(SPOKEN)
    with pytest.raises(Exception, match="incomplete chunked read"):  # the SDK's httpx names it
        with oai.audio.speech.with_streaming_response.create(
            model="gpt-4o-mini-tts@disconnect_after=2", input=SPOKEN, voice="alloy", response_format="pcm"
        ) as r:
            b"".join(r.iter_bytes())


def test_speech_scenario_status(oai):
    with pytest.raises(openai.AuthenticationError):
        oai.audio.speech.create(model="tts-1@status=401", input="hi", voice="alloy")


# --- transcriptions -------------------------------------------------------------------------------


def test_the_emulators_speech_transcribes_back_to_its_text(oai):
    audio = wav_of(SPOKEN, oai)
    t = oai.audio.transcriptions.create(model="whisper-1", file=("speech.wav", audio, "audio/wav"))
    assert isinstance(t, Transcription)
    assert t.text == SPOKEN
    assert (t.usage.type, t.usage.seconds) == ("duration", math.ceil(len(SPOKEN) / 15))


def test_gpt_transcribe_models_report_tokens(oai):
    audio = wav_of(SPOKEN, oai)
    t = oai.audio.transcriptions.create(model="gpt-4o-transcribe", file=("a.wav", audio), prompt="two words")
    u = t.usage
    assert u.type == "tokens"
    assert u.output_tokens == len(SPOKEN.split())
    assert u.input_token_details.text_tokens == 2
    assert u.input_tokens == u.input_token_details.audio_tokens + 2
    assert u.total_tokens == u.input_tokens + u.output_tokens
    with pytest.raises(openai.BadRequestError) as err:
        oai.audio.transcriptions.create(
            model="gpt-4o-transcribe", file=("a.wav", audio), response_format="srt"
        )
    assert err.value.body["param"] == "response_format"


def test_verbose_json_has_segments_and_asked_for_words(oai):
    audio = wav_of(SPOKEN, oai)
    t = oai.audio.transcriptions.create(
        model="whisper-1",
        file=("a.wav", audio),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
        language="fr",
    )
    assert isinstance(t, TranscriptionVerbose)
    assert (t.task, t.language, t.text) == ("transcribe", "french", SPOKEN)
    assert t.duration == pytest.approx(len(SPOKEN) / 15, abs=0.01)
    assert [s.text.strip() for s in t.segments] == ["Hello there, world.", "This is the emulator speaking."]
    assert t.segments[0].start == 0 and t.segments[-1].end == pytest.approx(t.duration, abs=0.01)
    assert [w.word for w in t.words] == [
        "Hello",
        "there",
        "world",
        "This",
        "is",
        "the",
        "emulator",
        "speaking",
    ]
    assert all(a.end == b.start for a, b in zip(t.words, t.words[1:], strict=False))
    plain = oai.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", audio), response_format="verbose_json"
    )
    assert plain.words is None and plain.segments and plain.language == "english"


@pytest.mark.parametrize(
    ("fmt", "content_type", "first_line"),
    [("text", "text/plain", SPOKEN), ("srt", "application/x-subrip", "1"), ("vtt", "text/vtt", "WEBVTT")],
)
def test_text_formats_are_plain_bodies(oai, fmt, content_type, first_line):
    audio = wav_of(SPOKEN, oai)
    raw = oai.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=("a.wav", audio), response_format=fmt
    )
    assert raw.headers["content-type"] == f"{content_type}; charset=utf-8"
    body = raw.parse()
    assert isinstance(body, str) and body.splitlines()[0] == first_line
    if fmt == "srt":
        assert body.splitlines()[1] == "00:00:00,000 --> 00:00:01,293"
    if fmt == "vtt":
        assert "00:00:01.293 --> 00:00:03.333\nThis is the emulator speaking." in body


def test_audio_without_text_gets_a_sentence_naming_its_duration(oai):
    plain = io.BytesIO()
    with wave.open(plain, "wb") as w:  # a WAV with no ICMT: 2.5 s at 16 kHz
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16_000)
        w.writeframes(bytes(2 * 40_000))
    t = oai.audio.transcriptions.create(model="whisper-1", file=("a.wav", plain.getvalue()))
    assert (t.text, t.usage.seconds) == ("The emulator heard 2.5 seconds of audio.", 3)
    mp3 = oai.audio.speech.create(model="tts-1", input=SPOKEN, voice="alloy").content
    t = oai.audio.transcriptions.create(model="whisper-1", file=("a.mp3", mp3))
    assert t.text == "The emulator heard 3.3 seconds of audio."
    t = oai.audio.transcriptions.create(model="whisper-1", file=("a.ogg", bytes(48_000)))
    assert t.text == "The emulator heard 3.0 seconds of audio."  # 16 000 bytes a second


@pytest.mark.parametrize(
    ("files", "data", "param"),
    [
        ({"file": ("notes.txt", b"hello")}, {"model": "whisper-1"}, "file"),
        ({"file": ("a.wav", b"")}, {"model": "whisper-1"}, "file"),
        ({}, {"model": "whisper-1"}, "file"),
        ({"file": ("a.wav", b"RIFF")}, {}, "model"),
        ({"file": ("a.wav", b"RIFF")}, {"model": "whisper-1", "response_format": "xml"}, "response_format"),
        ({"file": ("a.wav", b"RIFF")}, {"model": "whisper-1", "temperature": "2"}, "temperature"),
        ({"file": ("a.wav", b"RIFF")}, {"model": "whisper-1", "stream": "true"}, "stream"),
        (
            {"file": ("a.wav", b"RIFF")},
            {"model": "whisper-1", "timestamp_granularities[]": "char"},
            "timestamp_granularities",
        ),
    ],
)
def test_transcriptions_it_refuses(emulator_url, files, data, param):
    r = httpx.post(f"{emulator_url}/v1/audio/transcriptions", files=files or {"x": ("x", b"")}, data=data)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_a_json_body_is_not_a_transcription(emulator_url):
    r = httpx.post(f"{emulator_url}/v1/audio/transcriptions", json={"model": "whisper-1"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"


def test_transcription_scenarios(oai, unique_key):
    model = f"whisper-1@fail_first=1,key={unique_key}"
    with pytest.raises(openai.InternalServerError):
        oai.audio.transcriptions.create(model=model, file=("a.wav", synth.wav_bytes(b"\0\0" * 2400, "ok")))
    assert (
        oai.audio.transcriptions.create(model=model, file=("a.wav", synth.wav_bytes(b"\0\0", "ok"))).text
        == "ok"
    )
    with pytest.raises(openai.APIConnectionError):
        oai.audio.transcriptions.create(model="whisper-1@disconnect_after=0", file=("a.wav", b"RIFF"))


# --- the call log ---------------------------------------------------------------------------------


def test_media_calls_are_logged(oai, emulator_url):
    prompt, spoken = f"logged {uuid.uuid4().hex}", f"said {uuid.uuid4().hex}"
    oai.images.generate(model="gpt-image-1@ttfb_ms=0", prompt=prompt, size="16x16")
    oai.audio.speech.create(model="tts-1", input=spoken, voice="alloy")
    audio = synth.wav_bytes(b"\0\0" * 10, spoken)
    oai.audio.transcriptions.create(model="whisper-1", file=(f"{spoken}.wav", audio))
    with pytest.raises(openai.RateLimitError):
        oai.images.generate(model="gpt-image-1@status=429", prompt=prompt, size="16x16")
    images = [c for c in calls(emulator_url, "images") if c["inputs"] == [prompt]]
    assert [(c["path"], c["model"], c["status"]) for c in images] == [
        ("/v1/images/generations", "gpt-image-1", 200),
        ("/v1/images/generations", "gpt-image-1", 429),
    ]
    (said,) = [c for c in calls(emulator_url, "speech") if c["inputs"] == [spoken]]
    assert (said["path"], said["model"], said["status"]) == ("/v1/audio/speech", "tts-1", 200)
    heard = [
        c for c in calls(emulator_url, "transcriptions") if c["inputs"][0]["filename"] == f"{spoken}.wav"
    ]
    assert [(c["model"], c["inputs"][0]["bytes"], c["status"]) for c in heard] == [
        ("whisper-1", len(audio), 200)
    ]


@pytest.mark.skipif("images" not in CALL_KINDS, reason="common.CALL_KINDS does not name the media kinds yet")
def test_media_calls_can_be_listed_by_kind(oai, emulator_url):
    prompt = f"by kind {uuid.uuid4().hex}"
    oai.images.generate(model="gpt-image-1", prompt=prompt, size="16x16")
    listed = httpx.get(f"{emulator_url}/_emulator/calls", params={"kind": "images"}).json()
    assert {c["kind"] for c in listed} == {"images"} and [prompt] in [c["inputs"] for c in listed]


# --- media_synth ----------------------------------------------------------------------------------


def test_mp3_durations_come_from_the_bitrate_after_any_id3_tag():
    frames = synth.mp3_silence(1.0)
    assert synth.audio_info(frames) == synth.AudioInfo("mp3", len(frames) * 8 / 32_000)
    tag = b"ID3\x04\x00\x00" + bytes([0, 0, 1, 0]) + bytes(128)  # a 128-byte tag body (synch-safe size)
    assert synth.audio_info(tag + frames).duration_s == pytest.approx(len(frames) * 8 / 32_000)
    mpeg2 = b"\xff\xf3\x84\xc4" + bytes(200)  # MPEG-2 Layer III, 64 kbit/s
    assert synth.audio_info(mpeg2).duration_s == pytest.approx(204 * 8 / 64_000)


def test_a_broken_wav_is_estimated_from_its_size():
    broken = b"RIFF" + struct.pack("<I", 4) + b"WAVE" + bytes(32_000)
    assert synth.audio_info(broken) == synth.AudioInfo("unknown", len(broken) / 16_000)


def test_wav_bytes_round_trip_through_the_wave_module():
    audio = synth.wav_bytes(synth.speech_pcm("odd"), "héllo, odd length")
    with wave.open(io.BytesIO(audio)) as w:
        assert w.getnframes() == 3 * (24_000 // 15)
    assert synth.audio_info(audio) == synth.AudioInfo("wav", 3 / 15, "héllo, odd length")
