"""OpenAI's media APIs: images (``POST {base_url}/images/generations``), speech
(``POST {base_url}/audio/speech``) and transcriptions (``POST {base_url}/audio/transcriptions``,
multipart); base_url ends in /v1.

* Images: the provider is asked for ``b64_json`` (the gateway stores the bytes and presigns its
  own URL, whatever the caller's ``response_format``), except for ``gpt-image*`` models, which
  take no ``response_format`` and always answer base64. ``extra["response_format"]`` overrides
  that; an answer with URLs is downloaded through the transport (the provider's URL, never a
  caller's), which needs a transport that ``Downloads``. Types come from the bytes' magic, else
  ``output_format``.
* Speech: a whole answer is the body's bytes; a stream asks the caller's ``stream_format``
  (default ``audio``): ``sse`` events are decoded (``speech.audio.delta`` / ``speech.audio.done``),
  a raw audio body is read as byte chunks when the reply is a ``ChunkedReply``, else whole and
  then cut into pieces.
* Transcriptions: the multipart body is built here, as bytes (pure, so it is tested without
  HTTP); the file part is named from the media's filename when it has an audio extension, else
  ``audio.<extension of its type>`` (OpenAI tells the format by the name).

``extra`` keys reach the provider unchanged; the typed fields win over them.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import orjson

from services.contracts.errors import ProviderError
from services.contracts.events import (
    ImageGenerateRequested,
    MediaSource,
    SpeechRequested,
    TranscribeRequested,
    Usage,
)

from ..targets import Target
from ._http import bearer, error_message, headers, is_success, loads_line, malformed, sse_field
from ._media import media_bytes
from .base import map_http_errors, upstream_error
from .media_base import (
    ChunkedReply,
    Downloads,
    Picture,
    Pictures,
    Speech,
    SpeechPiece,
    Transcript,
)
from .transport import HttpTransport, StreamingReply

SPEECH_MIME = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "opus": "audio/ogg",
    "flac": "audio/flac",
    "aac": "audio/aac",
}
IMAGE_MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
#: Pieces a whole streamed body is cut into when the transport cannot read it in chunks.
PIECE_BYTES = 64 * 1024


def _url(deployment: Target, path: str) -> str:
    return f"{deployment.base_url.rstrip('/')}/{path}"


async def _post(http: HttpTransport, provider: str, url: str, hdrs: Mapping[str, str], body: bytes) -> bytes:
    """POST ``body``; the whole answer's bytes, or the provider's error."""
    with map_http_errors(provider):
        status, raw = await http.post_json(url, hdrs, body, None)
    if not is_success(status):
        raise upstream_error(provider, status, error_message(raw))
    return raw


def _tokens(input_tokens: Any, output_tokens: Any, total: Any, units: dict[str, float]) -> Usage:
    prompt, completion = int(input_tokens or 0), int(output_tokens or 0)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=int(total or prompt + completion),
        units=units,
    )


# --- images ---------------------------------------------------------------------------------------


def image_mime(data: bytes) -> str | None:
    """An image's type from its first bytes (png, jpeg, webp, gif), else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


class OpenAIImagesAdapter:
    kind = "openai"

    def to_wire(self, req: ImageGenerateRequested, deployment: Target) -> dict[str, Any]:
        body: dict[str, Any] = dict(req.extra)
        model = deployment.upstream_model
        body |= {"model": model, "prompt": req.prompt, "n": req.n}
        for key in ("size", "quality", "output_format"):
            value = getattr(req, key)
            if value is not None:
                body[key] = value
        if "response_format" not in req.extra and not model.startswith("gpt-image"):
            body["response_format"] = "b64_json"
        return body

    def from_wire(self, body: dict[str, Any], req: ImageGenerateRequested) -> Pictures:
        """The images in order: decoded ``b64_json``, or a ``url`` still to download."""
        fallback = IMAGE_MIME.get(body.get("output_format") or req.output_format or "png", "image/png")
        images = []
        for item in body["data"]:
            revised = item.get("revised_prompt")
            if item.get("b64_json") is not None:
                data = base64.b64decode(item["b64_json"], validate=True)
                images.append(Picture(data, image_mime(data) or fallback, revised))
            elif isinstance(item.get("url"), str):
                images.append(Picture(b"", fallback, revised, url=item["url"]))
            else:
                raise ValueError("an image with neither b64_json nor url")
        if not images:
            raise ValueError("no images")
        u = body.get("usage") or {}
        units = {"images": float(len(images))}
        usage = _tokens(u.get("input_tokens"), u.get("output_tokens"), u.get("total_tokens"), units)
        return Pictures(
            images=images,
            usage=usage,
            model=body.get("model") or "",
            created=int(body.get("created") or time.time()),
            output_format=body.get("output_format") or req.output_format,
            size=body.get("size") or req.size,
            quality=body.get("quality") or req.quality,
        )

    async def generate(
        self, http: HttpTransport, req: ImageGenerateRequested, deployment: Target, api_key: str | None
    ) -> Pictures:
        provider = deployment.provider
        url = _url(deployment, "images/generations")
        raw = await _post(
            http, provider, url, headers(bearer(api_key)), orjson.dumps(self.to_wire(req, deployment))
        )
        try:
            data = orjson.loads(raw)
            if not isinstance(data, dict):
                raise TypeError("not an object")
            done = self.from_wire(data, req)
        except (KeyError, IndexError, TypeError, ValueError) as exc:  # (binascii.Error is a ValueError)
            raise malformed(provider, "unexpected images response", error_message(raw)) from exc
        for picture in done.images:
            if picture.url is not None:
                await _download(http, provider, picture)
        done.model = done.model or deployment.upstream_model
        return done


async def _download(http: HttpTransport, provider: str, picture: Picture) -> None:
    """Fill ``picture.data`` from the provider's URL."""
    if not isinstance(http, Downloads):
        raise ProviderError(
            f"{provider}: the images came back as URLs and this transport cannot download them",
            details={"upstream_status": None},
        )
    assert picture.url is not None
    with map_http_errors(provider):
        status, raw = await http.get(picture.url, {}, None)
    if not is_success(status):
        raise upstream_error(provider, status, f"downloading a generated image: {error_message(raw)}")
    if not raw:
        raise malformed(provider, "a generated image's URL answered no bytes")
    picture.data, picture.url = raw, None
    picture.mime_type = image_mime(raw) or picture.mime_type


# --- speech ---------------------------------------------------------------------------------------


def _characters(req: SpeechRequested) -> dict[str, float]:
    return {"characters": float(len(req.input))}


class SpeechEvents:
    """Stateful, pure: OpenAI's speech SSE lines -> ``SpeechPiece``s; the last carries usage."""

    def __init__(self, provider: str, req: SpeechRequested):
        self._provider = provider
        self._units = _characters(req)
        self.done = False

    def feed(self, line: str) -> list[SpeechPiece]:
        field = sse_field(line)
        if field is None or field[0] != "data" or field[1] == "[DONE]":
            return []
        event = loads_line(self._provider, field[1])
        kind = event.get("type")
        if kind == "speech.audio.delta":
            try:
                return [SpeechPiece(audio=base64.b64decode(event.get("audio") or "", validate=True))]
            except (binascii.Error, TypeError) as exc:
                raise malformed(self._provider, "speech delta is not base64", line) from exc
        if kind == "speech.audio.done":
            self.done = True
            u = event.get("usage") or {}
            usage = _tokens(u.get("input_tokens"), u.get("output_tokens"), u.get("total_tokens"), self._units)
            return [SpeechPiece(usage=usage)]
        if kind == "error" or "error" in event:
            raise ProviderError(
                f"{self._provider}: speech stream failed: {error_message(orjson.dumps(event))}",
                details={"upstream_status": None},
            )
        return []

    def close(self) -> list[SpeechPiece]:
        if not self.done:
            raise malformed(self._provider, "speech stream ended before speech.audio.done")
        return []


async def _raw_chunks(reply: StreamingReply) -> AsyncIterator[bytes]:
    if isinstance(reply, ChunkedReply):
        async for chunk in reply.chunks():
            yield chunk
        return
    whole = await reply.read()
    for at in range(0, len(whole), PIECE_BYTES):
        yield whole[at : at + PIECE_BYTES]


class OpenAISpeechAdapter:
    kind = "openai"

    def to_wire(self, req: SpeechRequested, deployment: Target, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = dict(req.extra)
        body |= {
            "model": deployment.upstream_model,
            "input": req.input,
            "voice": req.voice,
            "response_format": req.response_format,
        }
        if req.speed is not None:
            body["speed"] = req.speed
        if req.instructions is not None:
            body["instructions"] = req.instructions
        if stream:
            body["stream_format"] = req.stream_format or "audio"
        else:
            body.pop("stream_format", None)
        return body

    async def speak(
        self, http: HttpTransport, req: SpeechRequested, deployment: Target, api_key: str | None
    ) -> Speech:
        body = orjson.dumps(self.to_wire(req, deployment, stream=False))
        url = _url(deployment, "audio/speech")
        audio = await _post(http, deployment.provider, url, headers(bearer(api_key)), body)
        if not audio:
            raise malformed(deployment.provider, "speech answer has no audio")
        return Speech(
            audio=audio,
            mime_type=SPEECH_MIME[req.response_format],
            format=req.response_format,
            usage=Usage(units=_characters(req)),
            model=deployment.upstream_model,
        )

    async def stream(
        self, http: HttpTransport, req: SpeechRequested, deployment: Target, api_key: str | None
    ) -> AsyncGenerator[SpeechPiece, None]:
        """The audio in pieces as it arrives; the last piece carries the usage."""
        provider = deployment.provider
        body = self.to_wire(req, deployment, stream=True)
        url, hdrs = _url(deployment, "audio/speech"), headers(bearer(api_key))
        with map_http_errors(provider):
            async with http.stream_lines(url, hdrs, orjson.dumps(body), None) as reply:
                if not is_success(reply.status):
                    raise upstream_error(provider, reply.status, error_message(await reply.read()))
                content_type = reply.headers.get("content-type") or reply.headers.get("Content-Type") or ""
                if body["stream_format"] == "sse" and content_type.startswith("text/event-stream"):
                    events = SpeechEvents(provider, req)
                    async for line in reply.lines():
                        for piece in events.feed(line):
                            yield piece
                    events.close()
                    return
                async for chunk in _raw_chunks(reply):
                    if chunk:
                        yield SpeechPiece(audio=chunk)
        yield SpeechPiece(usage=Usage(units=_characters(req)))


# --- transcriptions -------------------------------------------------------------------------------

AUDIO_EXTENSIONS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
_EXTENSION_OF = {
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/mp4": "m4a",
    "audio/m4a": "m4a",
    "audio/x-m4a": "m4a",
    "video/mp4": "mp4",
    "audio/ogg": "ogg",
    "audio/webm": "webm",
    "video/webm": "webm",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def upload_name(source: MediaSource, mime_type: str) -> str:
    """The file part's name: the media's own when it ends in an audio extension OpenAI knows
    (made header-safe), else ``audio.<extension of mime_type>``."""
    name = (source.media.filename if source.media else None) or source.filename or ""
    stem, dot, ext = name.rpartition(".")
    if dot and ext.lower() in AUDIO_EXTENSIONS:
        return (_UNSAFE.sub("_", stem)[:100] or "audio") + "." + ext.lower()
    return "audio." + _EXTENSION_OF.get(mime_type.split(";")[0].strip().lower(), "wav")


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def multipart(fields: list[tuple[str, str]], file: tuple[str, str, bytes], boundary: str) -> bytes:
    """A ``multipart/form-data`` body: the text ``fields`` in order, then the part ``file`` from
    ``file = (filename, content type, bytes)``. Names and the filename must be header-safe."""
    out = []
    for name, value in fields:
        out.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    filename, mime, data = file
    out.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: {mime}\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out)


_TIMESTAMP = re.compile(r"^\d{1,2}:\d{2}(:\d{2})?[.,]\d{3} --> (\d{1,2}:\d{2}(:\d{2})?[.,]\d{3})")


def _seconds(stamp: str) -> float:
    parts = stamp.replace(",", ".").split(":")
    return sum(float(p) * 60.0**i for i, p in enumerate(reversed(parts)))


def subtitles_text(body: str) -> tuple[str, float | None]:
    """The cue text of an SRT or WebVTT body joined by spaces, and the last cue's end (seconds)."""
    texts, end = [], None
    for line in body.splitlines():
        line = line.strip()
        stamp = _TIMESTAMP.match(line)
        if stamp:
            end = _seconds(stamp.group(2))
        elif line and not line.isdigit() and line != "WEBVTT" and not line.startswith(("NOTE", "WEBVTT ")):
            texts.append(line)
    return " ".join(texts), end


class OpenAITranscribeAdapter:
    kind = "openai"

    def to_wire(
        self, req: TranscribeRequested, deployment: Target, *, boundary: str | None = None
    ) -> tuple[str, bytes]:
        """``(content type, multipart body)``."""
        media = req.file.media
        if media is None:
            raise RuntimeError(f"request {req.request_id} reached the adapter with its file unresolved")
        typed: dict[str, Any] = {
            "model": deployment.upstream_model,
            "response_format": req.response_format,
            "language": req.language,
            "prompt": req.prompt,
            "temperature": req.temperature,
        }
        fields = [(k, _form_value(v)) for k, v in req.extra.items() if k not in typed and k != "file"]
        fields += [(k, _form_value(v)) for k, v in typed.items() if v is not None]
        for granularity in req.timestamp_granularities or ():
            fields.append(("timestamp_granularities[]", granularity))
        boundary = boundary or f"llmgw-{secrets.token_hex(16)}"
        file = (upload_name(req.file, media.mime_type), media.mime_type, media_bytes(media))
        return f"multipart/form-data; boundary={boundary}", multipart(fields, file, boundary)

    def from_wire(self, raw: bytes, req: TranscribeRequested) -> Transcript:
        """The answer in ``req.response_format``; the duration is the provider's, else the media's,
        else the subtitles' end."""
        fmt = req.response_format
        media_s = req.file.media.duration_s if req.file.media else None
        reported: float | None = None
        usage = Usage()
        language: str | None = None
        body: dict[str, Any] | str
        if fmt in ("json", "verbose_json"):
            loaded = orjson.loads(raw)
            if not isinstance(loaded, dict) or not isinstance(loaded.get("text"), str):
                raise ValueError("no text")
            body, text = loaded, loaded["text"]
            language = loaded.get("language")
            duration = loaded.get("duration")
            u = loaded.get("usage") or {}
            if u.get("type") == "duration":
                reported = float(u["seconds"])
            elif u.get("type") == "tokens":
                usage = _tokens(u.get("input_tokens"), u.get("output_tokens"), u.get("total_tokens"), {})
            seconds = (
                float(duration) if duration is not None else media_s if media_s is not None else reported
            )
        else:
            body = raw.decode("utf-8", "replace")
            if fmt == "text":
                text, end = body.strip(), None
            else:
                text, end = subtitles_text(body)
            seconds = media_s if media_s is not None else end
        billed = reported if reported is not None else seconds
        if billed is not None:
            usage.units["audio_seconds"] = float(billed)
        return Transcript(text, fmt, body, usage, "", language=language, duration_s=seconds)

    async def transcribe(
        self, http: HttpTransport, req: TranscribeRequested, deployment: Target, api_key: str | None
    ) -> Transcript:
        provider = deployment.provider
        content_type, body = self.to_wire(req, deployment)
        hdrs = {"content-type": content_type, **bearer(api_key)}
        raw = await _post(http, provider, _url(deployment, "audio/transcriptions"), hdrs, body)
        try:
            done = self.from_wire(raw, req)
        except (KeyError, TypeError, ValueError) as exc:  # (orjson's decode error is a ValueError)
            raise malformed(provider, "unexpected transcription response", error_message(raw)) from exc
        done.model = deployment.upstream_model
        return done


#: (kind, operation) -> adapter, merged into the registry.
ADAPTERS: dict[tuple[str, str], Any] = {
    ("openai", "image.generate"): OpenAIImagesAdapter(),
    ("openai", "audio.speech"): OpenAISpeechAdapter(),
    ("openai", "audio.transcribe"): OpenAITranscribeAdapter(),
}
