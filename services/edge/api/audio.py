"""``POST /v1/audio/speech``: OpenAI's speech API over the event pipeline (transcriptions:
``transcriptions.py``).

The JSON body (``model``, ``input``, ``voice``, ``response_format``, ``speed``, ``instructions``,
``stream_format``) becomes one ``SpeechRequested``:

* no ``stream_format``: the answer is the audio file, ``Content-Type`` of its format, and
  ``x-llmgw-media-url``: the presigned URL of the stored copy. The bytes come from the result when
  it carries them inline, else they are streamed from FileStorage by the audio's key.
* ``stream_format: "sse"``: server-sent events ``{"type": "speech.audio.delta", "audio": <base64>}``
  as the audio is produced, then ``{"type": "speech.audio.done", "usage": {...}}``.
* ``stream_format: "audio"``: the raw audio, sent chunk by chunk as it is produced (no bound on
  what waits for a slow reader beyond the answer itself: speech input is at most 4096 characters).

Both streamed forms set ``SpeechRequested.stream``. Every other field reaches the provider
unchanged (``extra``); gateway fields ``fallbacks``, ``metadata``, ``client_id``, ``total_ms``.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import pydantic

from services.contracts.errors import GatewayError, ValidationError
from services.contracts.events import ChunkEmitted, ResultProduced, SpeechRequested, Usage

from ..asgi import Headers, Request, Response, ms_header
from ..bodies import StreamedResponse
from ..errors import error_headers, openai_body, openai_error
from ..sse import SseResponse
from .chat import (
    OVERHEAD,
    answer_headers,
    chunk_error,
    error_answer,
    invalid,
    key_of,
    split_gateway,
    stream_first_headers,
)
from .files import stored_body
from .images import required_text
from .jobs import submitted, wants_job

if TYPE_CHECKING:
    from ..context import Edge

MEDIA_URL = b"x-llmgw-media-url"
#: ``Content-Type`` of each speech ``response_format`` (as OpenAI answers them).
SPEECH_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
SPEECH_OWN = frozenset(
    {"model", "input", "voice", "response_format", "speed", "instructions", "stream_format", "stream"}
)


def _bad(param: str, message: str) -> ValidationError:
    return ValidationError(f"{param}: {message}", param=param)


@dataclass
class SpeechCall:
    model: str
    input: str
    voice: str
    params: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stream_format(self) -> str | None:
        return self.params.get("stream_format")

    @property
    def format(self) -> str:
        return str(self.params.get("response_format", "mp3"))


def _voice(value: Any) -> str:
    """A voice name, or the id of a custom voice (``{"id": "voice_..."}``)."""
    if isinstance(value, dict) and isinstance(value.get("id"), str) and value["id"]:
        return str(value["id"])
    if isinstance(value, str) and value:
        return value
    raise _bad("voice", "required, a voice name or {'id': ...}")


def parse_speech(body: dict[str, Any]) -> SpeechCall:
    """Check an OpenAI speech body; ``ValidationError`` names the bad field."""
    model = required_text(body, "model")
    text = required_text(body, "input")
    voice = _voice(body.get("voice"))
    params: dict[str, Any] = {}
    fmt = body.get("response_format")
    if fmt is not None:
        if fmt not in SPEECH_TYPES:
            raise _bad("response_format", f"must be one of {', '.join(SPEECH_TYPES)}, got {fmt!r}")
        params["response_format"] = fmt
    stream_format = body.get("stream_format")
    if stream_format is not None:
        if stream_format not in ("sse", "audio"):
            raise _bad("stream_format", f"must be 'sse' or 'audio', got {stream_format!r}")
        params["stream_format"] = stream_format
    for name in ("speed", "instructions"):
        if body.get(name) is not None:
            params[name] = body[name]
    fields, extra = split_gateway(body, SPEECH_OWN)
    return SpeechCall(model, text, voice, params, fields, extra)


def speech_event(edge: Edge, req: Request, call: SpeechCall) -> SpeechRequested:
    assert req.caller is not None
    try:
        return edge.gw.speech_request(
            req.caller,
            call.model,
            call.input,
            call.voice,
            stream=call.stream_format is not None,
            request_id=req.request_id,
            extra=call.extra,
            **call.params,
            **call.fields,
            **key_of(req),
        )
    except pydantic.ValidationError as exc:
        raise invalid(exc) from None


def overhead_header(req: Request, provider_ms: float | None) -> tuple[bytes, bytes]:
    return ms_header(OVERHEAD, max((time.perf_counter() - req.started) * 1000 - (provider_ms or 0.0), 0.0))


def speech_usage(u: Usage | None) -> dict[str, int]:
    u = u or Usage()
    return {
        "input_tokens": u.prompt_tokens,
        "output_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens or u.prompt_tokens + u.completion_tokens,
    }


class SpeechEncoder:
    """Speech chunk events -> OpenAI's ``speech.audio.delta`` / ``speech.audio.done`` SSE events
    (an ``SseEncoder``); a failed final chunk ends the stream with an OpenAI error event."""

    def __init__(self) -> None:
        self.failed = False

    def encode(self, chunk: ChunkEmitted) -> bytes:
        out = b""
        if chunk.delta.audio:
            out += _event({"type": "speech.audio.delta", "audio": chunk.delta.audio})
        if chunk.final:
            if chunk.error is not None:
                self.failed = True
                return out + _event(openai_body(chunk_error(chunk)))
            out += _event({"type": "speech.audio.done", "usage": speech_usage(chunk.usage)})
        return out

    def end(self) -> bytes:
        return b""

    def error(self, err: GatewayError) -> bytes:
        if self.failed:
            return b""
        self.failed = True
        return _event(openai_body(err))

    def first_headers(self, chunk: ChunkEmitted, elapsed_ms: float) -> Headers:
        return [ms_header(OVERHEAD, max(elapsed_ms - (chunk.ttft_ms or 0.0), 0.0))]


def _event(doc: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


class AudioRelay:
    """A speech stream's chunk events as the raw audio bytes they carry; ``head`` gives the
    response headers from the first chunk (overhead to it, fallback, rate limits)."""

    def __init__(self, chunks: AsyncIterator[ChunkEmitted], started: float):
        self._chunks = chunks
        self._started = started
        self._first: list[tuple[bytes, bytes]] = []

    async def pieces(self) -> AsyncIterator[bytes]:
        first = True
        try:
            async for chunk in self._chunks:
                if first:
                    first = False
                    elapsed = (time.perf_counter() - self._started) * 1000
                    self._first = [
                        ms_header(OVERHEAD, max(elapsed - (chunk.ttft_ms or 0.0), 0.0)),
                        *stream_first_headers(chunk),
                    ]
                yield base64.b64decode(chunk.delta.audio) if chunk.delta.audio else b""
        finally:
            if isinstance(self._chunks, AsyncGenerator):  # its cleanup cancels a request it did not finish
                await self._chunks.aclose()

    def head(self) -> Headers:
        return self._first


async def create_speech(edge: Edge, req: Request) -> Response | SseResponse | StreamedResponse:
    call = parse_speech(req.json())
    event = speech_event(edge, req, call)
    if wants_job(req, event):  # async: the job's id at once, its answer on llm.jobs
        return await submitted(edge, req, event)
    timeout = edge.timeout_for(call.fields.get("total_ms"))
    mime = SPEECH_TYPES[call.format].encode()
    if call.stream_format == "sse":
        s = edge.settings
        return SseResponse(
            edge.gw.stream(event, timeout),
            SpeechEncoder(),
            started=req.started,
            keepalive_s=s.keepalive_s,
            buffer_limit=s.stream_buffer_bytes,
            error_body=openai_error,
            more_first_headers=stream_first_headers,
            error_headers=error_headers,
        )
    if call.stream_format == "audio":
        relay = AudioRelay(edge.gw.stream(event, timeout), req.started)
        return StreamedResponse(relay.pieces(), content_type=mime, head=relay.head)
    try:
        result = await req.until_disconnect(edge.gw.result(event, timeout))
    except GatewayError as err:
        return error_answer(err)
    return await speech_answer(edge, req, result, mime)


async def speech_answer(
    edge: Edge, req: Request, result: ResultProduced, mime: bytes
) -> Response | StreamedResponse:
    """A whole speech answer: its bytes, inline or streamed from FileStorage."""
    out = result.output
    if out is None or out.kind != "speech":
        raise GatewayError("the speech answer carries no audio")
    ref = out.media
    headers = [overhead_header(req, result.latency.provider_ms), *answer_headers(result)]
    if ref.url:
        headers.append((MEDIA_URL, ref.url.encode("latin-1")))
    if ref.data is not None:
        return Response(200, base64.b64decode(ref.data), headers, content_type=(b"content-type", mime))
    if ref.key is None:
        raise GatewayError("the speech answer names no audio bytes")
    return StreamedResponse(
        stored_body(edge.files, ref.key), content_type=mime, headers=headers, length=ref.bytes
    )
