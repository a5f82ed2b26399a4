"""The media capabilities' adapter roles (``image.generate``, ``audio.speech``,
``audio.transcribe``) and the normalised shapes they produce: ``base.py``'s counterparts for
chat and embed. Like those, only the I/O methods touch the ``HttpTransport``, and no
``aiohttp`` error escapes them (``map_http_errors``).

Usage units (``Usage.units``, priced by ``Price.per_unit``): ``images`` (images returned),
``characters`` (characters of speech input), ``audio_seconds`` (seconds transcribed); tokens
too when the provider reports them.

Two transport abilities adapters use when the transport offers them (``Downloads``,
``ChunkedReply``): downloading a URL the provider answered with, and reading a streamed body as
raw bytes rather than text lines.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from services.contracts.events import ImageGenerateRequested, SpeechRequested, TranscribeRequested, Usage

from ..targets import Target
from .transport import HttpTransport


@dataclass
class Picture:
    """One generated image: its bytes, or (until downloaded) the provider's ``url`` for them."""

    data: bytes
    mime_type: str
    revised_prompt: str | None = None
    url: str | None = None


@dataclass
class Pictures:
    """A whole ``image.generate`` answer, in the provider's order."""

    images: list[Picture]
    usage: Usage
    model: str
    created: int
    output_format: str | None = None
    size: str | None = None
    quality: str | None = None


@dataclass
class Speech:
    """A whole ``audio.speech`` answer: the audio in ``format`` (the request's ``response_format``)."""

    audio: bytes
    mime_type: str
    format: str
    usage: Usage
    model: str


@dataclass
class SpeechPiece:
    """One piece of streamed speech; the last piece a stream yields carries ``usage``."""

    audio: bytes = b""
    usage: Usage | None = None


@dataclass
class Transcript:
    """A transcription: ``body`` in the asked ``format`` (an object for json / verbose_json,
    text for text / srt / vtt) and ``text``, the transcript alone, whatever the format."""

    text: str
    format: str
    body: dict[str, Any] | str
    usage: Usage
    model: str
    language: str | None = None
    duration_s: float | None = None


class ImagesAdapter(Protocol):
    """Operation ``image.generate``: every image comes back as bytes (``Picture.data``)."""

    kind: str

    def to_wire(self, req: ImageGenerateRequested, deployment: Target) -> dict[str, Any]: ...

    async def generate(
        self, http: HttpTransport, req: ImageGenerateRequested, deployment: Target, api_key: str | None
    ) -> Pictures: ...


class SpeechAdapter(Protocol):
    """Operation ``audio.speech``, whole (``speak``) or streamed (``stream``: nothing is sent
    until it is iterated)."""

    kind: str

    def to_wire(self, req: SpeechRequested, deployment: Target, *, stream: bool) -> dict[str, Any]: ...

    async def speak(
        self, http: HttpTransport, req: SpeechRequested, deployment: Target, api_key: str | None
    ) -> Speech: ...

    def stream(
        self, http: HttpTransport, req: SpeechRequested, deployment: Target, api_key: str | None
    ) -> AsyncGenerator[SpeechPiece, None]: ...


class TranscribeAdapter(Protocol):
    """Operation ``audio.transcribe``: the audio is ``req.file.media``'s bytes (the executor has
    filled its ``data``)."""

    kind: str

    async def transcribe(
        self, http: HttpTransport, req: TranscribeRequested, deployment: Target, api_key: str | None
    ) -> Transcript: ...


@runtime_checkable
class Downloads(Protocol):
    """A transport that can GET a URL (a provider's answer naming where its output is)."""

    async def get(self, url: str, headers: Mapping[str, str], timeout_s: float | None) -> tuple[int, bytes]:
        """``(status, whole body)``; redirects are not followed."""
        ...


@runtime_checkable
class HeadedDownloads(Protocol):
    """A transport whose GET also answers the response's headers (a poll reads ``Retry-After``)."""

    async def get_reply(
        self, url: str, headers: Mapping[str, str], timeout_s: float | None
    ) -> tuple[int, Mapping[str, str], bytes]:
        """``(status, headers, whole body)``; redirects are not followed."""
        ...


@runtime_checkable
class ChunkedReply(Protocol):
    """A streamed reply whose body can be read as raw byte chunks (binary streams: audio)."""

    def chunks(self) -> AsyncIterator[bytes]: ...
