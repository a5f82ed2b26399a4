"""OpenAI's media APIs, emulated: ``POST /v1/images/generations``, ``POST /v1/audio/speech``,
``POST /v1/audio/transcriptions``, and ``GET /_emulator/files/{id}`` (the emulator's image URLs).

The media itself is :mod:`.media_synth`'s: deterministic, real, small. Each call is logged for
``GET /_emulator/calls`` as kind ``images`` (inputs: the prompt), ``speech`` (the input text) or
``transcriptions`` (``{"filename", "bytes"}`` of the upload), and the model name's scenario
applies as in the chat endpoints (``status``, ``fail_first``, ``hang``, ``hang_first``,
``ttfb_ms``, ``retry_after_ms``; ``disconnect_after``: speech streams N chunks then drops,
images and transcriptions drop at once; ``chunk_delay_ms``: between speech chunks, and per
image / per transcript word for whole answers).

Images: ``model`` (default ``dall-e-2``), ``prompt``, ``n`` (1..10), ``size`` (``WxH``, each side
16..4096; ``auto`` or none: 1024x1024), ``quality`` (standard, hd, low, medium, high, auto),
``response_format`` (``url``, the default, or ``b64_json``), ``output_format`` (png, the default,
jpeg, webp; honoured for every model). Models named ``gpt-image*`` always answer ``b64_json`` and
add ``usage`` (input: the prompt's words; output: tokens by quality) and ``background``,
``output_format``, ``quality``, ``size``; other models add ``revised_prompt`` (the prompt).
``url`` answers point at ``/_emulator/files/{id}`` on this app, which keeps the last
:data:`FILES_KEPT` images.

Speech: ``model``, ``input`` (1..4096 characters), ``voice`` (a name or ``{"id"}``),
``response_format`` (mp3, the default, wav or pcm; ``opus``, ``flac`` and ``aac`` are a 400: the
emulator does not produce them), ``speed`` (0.25..4), ``instructions``, ``stream_format``
(``audio``, the default: the audio as a chunked body; ``sse``: ``data: {"type":
"speech.audio.delta", "audio": <base64>}`` events then ``{"type": "speech.audio.done", "usage":
{"input_tokens", "output_tokens", "total_tokens"}}``; like OpenAI, ``sse`` with ``tts-1*`` is a
400).

Transcriptions (multipart): ``file`` (its name must end in a supported extension), ``model``,
``language``, ``prompt``, ``response_format`` (json, text, srt, verbose_json, vtt),
``timestamp_granularities[]`` (word, segment: verbose_json only), ``temperature`` (0..1). The
text is what :func:`.media_synth.heard` reads: the emulator's own WAV speech gives back its
input. ``json`` answers ``{"text", "usage"}``: ``{"type": "duration", "seconds"}`` (whole
seconds, rounded up) for whisper models, ``{"type": "tokens", ...}`` for ``gpt-*`` transcribe
models, which (like OpenAI's) only answer json and text. ``stream`` is refused (400).

Errors are OpenAI's ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import base64
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import media_synth as synth
from . import text
from .common import (
    GONE,
    BadRequest,
    Drop,
    Silent,
    Stream,
    answered,
    generation_delay,
    json_response,
    preflight,
    read_json,
    record_call,
    scenario_spec,
)
from .openai_api import error, scenario_error
from .scenario import Scenario, ScenarioError, resolve

#: How many generated images ``/_emulator/files`` keeps (the oldest go first).
FILES_KEPT = 256
#: Bytes of audio per streamed chunk (0.1 s of 24 kHz 16-bit mono).
AUDIO_CHUNK = 4800
MAX_UPLOAD_BYTES = 25 * 1024 * 1024

IMAGE_QUALITIES = ("standard", "hd", "low", "medium", "high", "auto")
IMAGE_FORMATS = ("png", "jpeg", "webp")
#: Output tokens of one 1024x1024 gpt-image image, by quality.
IMAGE_TOKENS = {"low": 272, "medium": 1056, "high": 4160}
SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
SPEECH_MADE = ("mp3", "wav", "pcm")
SPEECH_MIME = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "opus": "audio/ogg",
    "flac": "audio/flac",
    "aac": "audio/aac",
}
TRANSCRIPTION_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
UPLOAD_EXTENSIONS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
LANGUAGES = {
    "en": "english",
    "fr": "french",
    "de": "german",
    "es": "spanish",
    "it": "italian",
    "pt": "portuguese",
    "nl": "dutch",
    "ja": "japanese",
    "zh": "chinese",
    "ru": "russian",
}


def _refused(outcome: int, scenario: Scenario) -> Response:
    return Silent() if outcome == GONE else scenario_error(outcome, scenario)


def _model(value: Any, default: str | None = None) -> str:
    if value is None and default is not None:
        return default
    if not isinstance(value, str) or not value:
        raise BadRequest("you must provide a model parameter", param="model")
    return value


def _string(body: dict[str, Any], key: str, *, max_length: int) -> str:
    value = body.get(key)
    if value is None:
        raise BadRequest(f"Missing required parameter: '{key}'.", param=key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"Invalid '{key}': expected a non-empty string.", param=key)
    if len(value) > max_length:
        raise BadRequest(
            f"Invalid '{key}': string too long. Expected a string with maximum length {max_length}, "
            f"but got a string with length {len(value)} instead.",
            param=key,
        )
    return value


def _choice(body: dict[str, Any], key: str, allowed: tuple[str, ...], default: str | None) -> str | None:
    value = body.get(key, default)
    if value is None:
        return default
    if value not in allowed:
        supported = ", ".join(f"'{a}'" for a in allowed)
        raise BadRequest(f"Invalid value: '{value}'. Supported values are: {supported}.", param=key)
    return str(value)


def _number(body: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise BadRequest(f"Invalid '{key}': expected a number between {low:g} and {high:g}.", param=key)
    return float(value)


# --- images ---------------------------------------------------------------------------------------


def _size(value: Any) -> tuple[int, int]:
    if value is None or value == "auto":
        return 1024, 1024
    width, sep, height = str(value).partition("x")
    if (
        sep
        and width.isdigit()
        and height.isdigit()
        and 16 <= int(width) <= 4096
        and 16 <= int(height) <= 4096
    ):
        return int(width), int(height)
    raise BadRequest(
        f"Invalid value: '{value}'. Supported sizes are WIDTHxHEIGHT with sides of 16 to 4096 pixels "
        "(e.g. '1024x1024'), or 'auto'.",
        param="size",
    )


def _files(request: Request) -> OrderedDict[str, tuple[bytes, str]]:
    state = request.app.state
    files: OrderedDict[str, tuple[bytes, str]] | None = getattr(state, "media_files", None)
    if files is None:
        files = state.media_files = OrderedDict()
    return files


def _keep_file(request: Request, data: bytes, mime: str) -> str:
    """Keep ``data`` for ``GET /_emulator/files/{id}``; its absolute URL."""
    files = _files(request)
    file_id = text.new_id("file-")
    files[file_id] = (data, mime)
    while len(files) > FILES_KEPT:
        files.popitem(last=False)
    return f"{str(request.base_url).rstrip('/')}/_emulator/files/{file_id}"


async def images(request: Request) -> Response:
    """One image generation, logged (kind ``images``) once its body parsed."""
    try:
        body = await read_json(request)
        model = _model(body.get("model"), "dall-e-2")
        prompt = _string(body, "prompt", max_length=32_000)
        n = body.get("n", 1)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10:
            raise BadRequest("Invalid 'n': expected an integer between 1 and 10.", param="n")
        width, height = _size(body.get("size"))
        quality = _choice(body, "quality", IMAGE_QUALITIES, None)
        response_format = _choice(body, "response_format", ("url", "b64_json"), "url")
        output_format = _choice(body, "output_format", IMAGE_FORMATS, "png") or "png"
        name, scenario = resolve(model, scenario_spec(request, body))
    except BadRequest as exc:
        return error(400, exc.message, param=exc.param)
    except ScenarioError as exc:
        return error(400, str(exc), param="model")
    entry = record_call(request, "images", name, [prompt])
    outcome = await preflight(request, scenario)
    if outcome is not None:
        return answered(entry, _refused(outcome, scenario))
    if scenario.disconnect_after is not None:
        return answered(entry, Drop())
    await generation_delay(scenario, n)
    gpt_image = name.startswith("gpt-image")
    mime = synth.IMAGE_MIME[output_format]
    data = []
    for i in range(n):
        picture = synth.image_bytes(prompt, i, width, height, output_format)
        item: dict[str, Any] = {}
        if gpt_image or response_format == "b64_json":
            item["b64_json"] = base64.b64encode(picture).decode()
        else:
            item["url"] = _keep_file(request, picture, mime)
        if not gpt_image:
            item["revised_prompt"] = prompt
        data.append(item)
    answer: dict[str, Any] = {"created": int(time.time()), "data": data}
    if gpt_image:
        level = quality if quality in IMAGE_TOKENS else "medium"
        per_image = math.ceil(IMAGE_TOKENS[level] * width * height / (1024 * 1024))
        words = text.count_words(prompt)
        answer |= {
            "background": "opaque",
            "output_format": output_format,
            "quality": level,
            "size": f"{width}x{height}",
            "usage": {
                "input_tokens": words,
                "input_tokens_details": {"text_tokens": words, "image_tokens": 0},
                "output_tokens": per_image * n,
                "total_tokens": words + per_image * n,
            },
        }
    return answered(entry, json_response(answer, headers={"x-request-id": text.new_id("req_")}))


async def get_file(request: Request) -> Response:
    """The bytes of an image a ``url`` answer named."""
    found = _files(request).get(request.path_params["file_id"])
    if found is None:
        return error(
            404, "No such file (emulated): it was never made or is no longer kept.", code="not_found"
        )
    data, mime = found
    return Response(data, media_type=mime)


# --- speech ---------------------------------------------------------------------------------------


def _voice(value: Any) -> None:
    if value is None:
        raise BadRequest("Missing required parameter: 'voice'.", param="voice")
    if isinstance(value, str) and value:
        return
    if isinstance(value, dict) and isinstance(value.get("id"), str) and value["id"]:
        return
    raise BadRequest("Invalid 'voice': expected a voice name or an object with an 'id'.", param="voice")


def _audio_chunks(audio: bytes) -> list[bytes]:
    return [audio[i : i + AUDIO_CHUNK] for i in range(0, len(audio), AUDIO_CHUNK)] or [b""]


async def speech(request: Request) -> Response:
    """One speech call, logged (kind ``speech``) once its body parsed."""
    try:
        body = await read_json(request)
        model = _model(body.get("model"))
        spoken = _string(body, "input", max_length=4096)
        _voice(body.get("voice"))
        fmt = _choice(body, "response_format", SPEECH_FORMATS, "mp3") or "mp3"
        speed = _number(body, "speed", 0.25, 4.0) or 1.0
        instructions = body.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise BadRequest("Invalid 'instructions': expected a string.", param="instructions")
        stream_format = _choice(body, "stream_format", ("sse", "audio"), "audio")
        name, scenario = resolve(model, scenario_spec(request, body))
        if stream_format == "sse" and name.startswith("tts-1"):
            raise BadRequest("stream_format 'sse' is not supported for tts-1 or tts-1-hd.", "stream_format")
        if fmt not in SPEECH_MADE:
            raise BadRequest(
                f"The emulator does not produce '{fmt}' audio; it answers mp3, wav and pcm.",
                param="response_format",
            )
    except BadRequest as exc:
        return error(400, exc.message, param=exc.param)
    except ScenarioError as exc:
        return error(400, str(exc), param="model")
    entry = record_call(request, "speech", name, [spoken])
    outcome = await preflight(request, scenario)
    if outcome is not None:
        return answered(entry, _refused(outcome, scenario))
    seconds = synth.speech_seconds(spoken, speed)
    if fmt == "mp3":
        audio = synth.mp3_silence(seconds)
    else:
        pcm = synth.speech_pcm(spoken, speed)
        audio = synth.wav_bytes(pcm, spoken) if fmt == "wav" else pcm
    headers = {"x-request-id": text.new_id("req_")}
    chunks = _audio_chunks(audio)
    if stream_format == "audio":
        return answered(entry, Stream([], chunks, [], scenario, SPEECH_MIME[fmt], headers))
    words = text.count_words(spoken) + text.count_words(instructions or "")
    produced = math.ceil(seconds * 20)
    done = {
        "type": "speech.audio.done",
        "usage": {"input_tokens": words, "output_tokens": produced, "total_tokens": words + produced},
    }
    events = [
        b"data: "
        + orjson.dumps({"type": "speech.audio.delta", "audio": base64.b64encode(c).decode()})
        + b"\n\n"
        for c in chunks
    ]
    tail = [b"data: " + orjson.dumps(done) + b"\n\n"]
    return answered(entry, Stream([], events, tail, scenario, "text/event-stream; charset=utf-8", headers))


# --- transcriptions -------------------------------------------------------------------------------


async def _form(request: Request) -> FormData:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BadRequest("The request must be multipart/form-data with a 'file' part.", param="file")
    try:
        return await request.form(max_files=1, max_fields=64)
    except Exception as exc:  # python-multipart's parse errors have no common base
        raise BadRequest(f"Could not parse the multipart form: {exc}", param="file") from None


def _field(form: FormData, key: str) -> str | None:
    value = form.get(key)
    return value if isinstance(value, str) else None


def _upload_name(upload: UploadFile) -> str:
    name = upload.filename or ""
    ext = name.rpartition(".")[2].lower() if "." in name else ""
    if ext not in UPLOAD_EXTENSIONS:
        raise BadRequest(f"Invalid file format. Supported formats: {list(UPLOAD_EXTENSIONS)}", param="file")
    return name


def _float_field(form: FormData, key: str, low: float, high: float) -> float | None:
    raw = _field(form, key)
    if raw is None:
        return None
    try:
        return _number({key: float(raw)}, key, low, high)
    except ValueError:
        raise BadRequest(f"Invalid '{key}': expected a number.", param=key) from None


@dataclass(frozen=True)
class _Ask:
    """A transcription request, checked."""

    filename: str
    audio: bytes
    name: str
    scenario: Scenario
    fmt: str
    granularities: list[str]
    language: str | None
    prompt: str | None

    @property
    def tokens_model(self) -> bool:
        return self.name.startswith("gpt-")


async def _transcription_ask(request: Request, form: FormData) -> _Ask:
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise BadRequest("Missing required parameter: 'file'.", param="file")
    filename = _upload_name(upload)
    model = _model(_field(form, "model"))
    asked = {"response_format": _field(form, "response_format")}
    fmt = _choice(asked, "response_format", TRANSCRIPTION_FORMATS, "json") or "json"
    granularities = [g for g in form.getlist("timestamp_granularities[]") if isinstance(g, str)]
    for g in granularities:
        _choice({"timestamp_granularities": g}, "timestamp_granularities", ("word", "segment"), None)
    _float_field(form, "temperature", 0, 1)
    if (_field(form, "stream") or "").lower() == "true":
        raise BadRequest("The emulator does not stream transcriptions.", param="stream")
    spec = scenario_spec(request, {"emulator_scenario": _field(form, "emulator_scenario")})
    name, scenario = resolve(model, spec)
    if name.startswith("gpt-") and fmt not in ("json", "text"):
        raise BadRequest(
            f"response_format '{fmt}' is not compatible with model '{name}'. Use 'json' or 'text' instead.",
            param="response_format",
        )
    audio = await upload.read()
    if not audio:
        raise BadRequest("Audio file is empty.", param="file")
    if len(audio) > MAX_UPLOAD_BYTES:
        raise BadRequest(f"Maximum content size limit ({MAX_UPLOAD_BYTES}) exceeded.", param="file")
    language, prompt = _field(form, "language"), _field(form, "prompt")
    return _Ask(filename, audio, name, scenario, fmt, granularities, language, prompt)


async def transcriptions(request: Request) -> Response:
    """One transcription, logged (kind ``transcriptions``) once its form parsed."""
    try:
        form = await _form(request)
        try:
            ask = await _transcription_ask(request, form)
        finally:
            await form.close()
    except BadRequest as exc:
        return error(400, exc.message, param=exc.param)
    except ScenarioError as exc:
        return error(400, str(exc), param="model")
    entry = record_call(
        request, "transcriptions", ask.name, [{"filename": ask.filename, "bytes": len(ask.audio)}]
    )
    outcome = await preflight(request, ask.scenario)
    if outcome is not None:
        return answered(entry, _refused(outcome, ask.scenario))
    if ask.scenario.disconnect_after is not None:
        return answered(entry, Drop())
    info = synth.audio_info(ask.audio)
    said = synth.heard(info)
    await generation_delay(ask.scenario, text.count_words(said))
    usage = _transcription_usage(ask.tokens_model, info.duration_s, said, ask.prompt)
    return answered(entry, _transcript(ask, said, info.duration_s, usage))


def _transcription_usage(
    tokens_model: bool, duration: float, said: str, prompt: str | None
) -> dict[str, Any]:
    if not tokens_model:
        return {"type": "duration", "seconds": math.ceil(duration)}
    audio_tokens = math.ceil(duration * 10)
    prompt_tokens = text.count_words(prompt or "")
    output = text.count_words(said)
    return {
        "type": "tokens",
        "input_tokens": audio_tokens + prompt_tokens,
        "input_token_details": {"text_tokens": prompt_tokens, "audio_tokens": audio_tokens},
        "output_tokens": output,
        "total_tokens": audio_tokens + prompt_tokens + output,
    }


def _transcript(ask: _Ask, said: str, duration: float, usage: dict[str, Any]) -> Response:
    fmt, language, granularities = ask.fmt, ask.language, ask.granularities
    headers = {"x-request-id": text.new_id("req_")}
    if fmt == "json":
        return json_response({"text": said, "usage": usage}, headers=headers)
    if fmt == "text":
        return Response(said + "\n", media_type="text/plain; charset=utf-8", headers=headers)
    cues = synth.segments(said, duration)
    if fmt == "srt":
        return Response(synth.srt(cues), media_type="application/x-subrip; charset=utf-8", headers=headers)
    if fmt == "vtt":
        return Response(synth.vtt(cues), media_type="text/vtt; charset=utf-8", headers=headers)
    verbose: dict[str, Any] = {
        "task": "transcribe",
        "language": LANGUAGES.get(language or "en", language),
        "duration": round(duration, 3),
        "text": said,
    }
    if not granularities or "segment" in granularities:
        verbose["segments"] = [_segment(i, cue) for i, cue in enumerate(cues)]
    if "word" in granularities:
        verbose["words"] = [
            {"word": w.text, "start": w.start, "end": w.end} for w in synth.words(said, duration)
        ]
    verbose["usage"] = usage
    return json_response(verbose, headers=headers)


def _segment(index: int, cue: synth.Timed) -> dict[str, Any]:
    return {
        "id": index,
        "seek": 0,
        "start": cue.start,
        "end": cue.end,
        "text": " " + cue.text,
        "tokens": [50364 + i for i in range(len(cue.text.split()))],
        "temperature": 0.0,
        "avg_logprob": -0.2,
        "compression_ratio": 1.2,
        "no_speech_prob": 0.01,
    }


def routes() -> list[Route]:
    return [
        Route("/v1/images/generations", images, methods=["POST"]),
        Route("/v1/audio/speech", speech, methods=["POST"]),
        Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
        Route("/_emulator/files/{file_id}", get_file, methods=["GET"]),
    ]
