"""The SDK's media operations (``GatewayClient`` has them through ``MediaOperations``): images,
speech (whole and streamed), transcription, and reading the media an answer names.

A file is a reference string (``https:`` / ``data:`` URL, ``s3://`` reference, file id
``file-...``, media id ``med_...``), passed on as it is, or bytes: up to ``inline_max_bytes`` they
travel in the request as a ``data:`` URL; above it they are uploaded to FileStorage under the
tenant's files prefix first (the client needs ``storage``) and the request names their file id
(the claim check), so no event carries a large body; the upload is deleted once answered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import mimetypes
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import aiohttp

from services.contracts.errors import GatewayError, MediaNotFound, ValidationError
from services.contracts.events import (
    ChatRequested,
    ChunkEmitted,
    ImageFormat,
    ImageGenerateRequested,
    MediaRef,
    MediaSource,
    RequestBase,
    ResultProduced,
    SpeechFormat,
    SpeechRequested,
    TranscribeRequested,
    VideoGenerateRequested,
    VideoSeconds,
)
from services.runtime.config import MediaConfig
from services.runtime.media.refs import file_key, new_file_id

#: The media requests (each has ``extra``).
M = TypeVar("M", ImageGenerateRequested, VideoGenerateRequested, SpeechRequested, TranscribeRequested)

if TYPE_CHECKING:
    from services.runtime.media.storage import FileStorage

#: Bytes up to this size travel inline (the gateway's default ``media.inline_max_bytes``).
INLINE_MAX_BYTES: int = MediaConfig.model_fields["inline_max_bytes"].default
OCTET_STREAM = "application/octet-stream"


def data_url(body: bytes, mime_type: str) -> str:
    return f"data:{mime_type};base64,{base64.b64encode(body).decode('ascii')}"


def declared_type(mime_type: str | None, filename: str | None) -> str:
    """The type a caller gave, else the one its file name suggests, else ``application/octet-stream``
    (which the media-store treats as undeclared: it sniffs the bytes)."""
    if mime_type:
        return mime_type
    guessed = mimetypes.guess_type(filename)[0] if filename else None
    return guessed or OCTET_STREAM


async def source_for(
    file: str | bytes | MediaSource,
    *,
    tenant_id: str,
    storage: FileStorage | None,
    filename: str | None = None,
    mime_type: str | None = None,
    inline_max_bytes: int = INLINE_MAX_BYTES,
) -> tuple[MediaSource, str | None]:
    """The ``MediaSource`` for ``file`` (see the module docstring), and the key of the object it
    was uploaded to, if it was; large bytes need ``storage``, else ``ValidationError`` saying so."""
    if isinstance(file, MediaSource):
        return file, None
    if isinstance(file, str):
        return MediaSource(url=file, filename=filename, mime_type=mime_type), None
    if not file:
        raise ValidationError("file: empty", param="file")
    mime = declared_type(mime_type, filename)
    if len(file) <= inline_max_bytes:
        return MediaSource(url=data_url(file, mime), filename=filename, mime_type=mime_type), None
    if storage is None:
        raise ValidationError(
            f"file: {len(file)} bytes is above the inline limit of {inline_max_bytes} bytes; create the"
            " GatewayClient with storage=FileStorage to upload it, or pass a URL, s3:// reference or file id",
            param="file",
        )
    file_id = new_file_id()
    key = file_key(tenant_id, file_id)
    await storage.put(key, file, mime, filename=filename, metadata={"purpose": "user_data"})
    return MediaSource(url=file_id, filename=filename, mime_type=mime_type), key


async def fetch(url: str, timeout_s: float) -> bytes:
    """GET a presigned URL. An answer of 403 / 404 (expired or deleted) is ``MediaNotFound``; a
    failure to connect or another status is a ``GatewayError`` naming the status."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.get(url) as resp,
        ):
            if resp.status in (403, 404):
                raise MediaNotFound(f"media URL answered {resp.status} (expired or deleted)")
            if resp.status >= 400:
                raise GatewayError(f"media URL answered {resp.status}")
            return await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise GatewayError(f"could not read the media URL: {type(exc).__name__}: {exc}") from exc


async def ref_bytes(ref: MediaRef, *, storage: FileStorage | None, timeout_s: float) -> bytes:
    """A ``MediaRef``'s bytes: its inline ``data``, else a GET of its presigned ``url``, else (a
    client with storage) the object at its ``key``."""
    if ref.data is not None:
        return base64.b64decode(ref.data)
    if ref.url:
        return await fetch(ref.url, timeout_s)
    if ref.key and storage is not None:
        return await storage.get(ref.key)
    raise ValidationError(f"media {ref.media_id} has neither data nor a URL (and this client has no storage)")


class MediaOperations:
    """The media calls of ``GatewayClient``: each builds its request event (``build_*``, keywords
    as ``build_embed``: the envelope's, ``fallbacks``, ``total_ms``, the rest to ``extra``) and
    waits for its result or its chunks."""

    timeout_s: float
    tenant_id: str
    storage: FileStorage | None
    inline_max_bytes: int

    if TYPE_CHECKING:  # GatewayClient's

        def _common(self, kw: dict[str, Any]) -> dict[str, Any]: ...

        async def result(self, req: RequestBase, timeout: float) -> ResultProduced: ...

        async def submit(self, req: RequestBase) -> str: ...

        def stream(
            self, req: ChatRequested | SpeechRequested, timeout: float
        ) -> AsyncGenerator[ChunkEmitted, None]: ...

    def _model_request(self, cls: type[M], model: str, kw: dict[str, Any], **fields: Any) -> M:
        """A ``cls`` request for ``model``: the envelope's keywords (``_common``) and ``fallbacks``
        taken from ``kw``, ``fields`` as given, every other keyword to ``extra``."""
        common = self._common(kw)
        fallbacks = kw.pop("fallbacks", [])
        return cls(**common, model=model, fallbacks=fallbacks, **fields, extra=kw.pop("extra", {}) | kw)

    def build_video(
        self,
        model: str,
        prompt: str,
        *,
        seconds: VideoSeconds | None = None,
        size: str | None = None,
        **kw: Any,
    ) -> VideoGenerateRequested:
        """Keywords the SDK does not model go to ``extra`` and reach providers unchanged."""
        return self._model_request(
            VideoGenerateRequested, model, kw, prompt=prompt, seconds=seconds, size=size
        )

    async def generate_video(
        self,
        model: str,
        prompt: str,
        *,
        seconds: VideoSeconds | None = None,
        size: str | None = None,
        wait: bool = False,
        **kw: Any,
    ) -> str | ResultProduced:
        """A video, from an asynchronous provider. ``wait=False``: a job (README "Jobs"), its id at
        once (``wait_job`` / ``get_job`` follow it). ``wait=True``: the answer itself once the
        provider has finished (the gateway polls it), ``result.output.media`` the stored MP4."""
        timeout = kw.pop("timeout_s", self.timeout_s)
        req = self.build_video(model, prompt, seconds=seconds, size=size, **kw)
        if wait:
            return await self.result(req, timeout)
        return await self.submit(req)

    def build_image(
        self,
        model: str,
        prompt: str,
        *,
        n: int = 1,
        size: str | None = None,
        quality: str | None = None,
        response_format: Literal["url", "b64_json"] = "url",
        output_format: ImageFormat | None = None,
        **kw: Any,
    ) -> ImageGenerateRequested:
        """Keywords the SDK does not model go to ``extra`` and reach providers unchanged."""
        return self._model_request(
            ImageGenerateRequested,
            model,
            kw,
            prompt=prompt,
            n=n,
            size=size,
            quality=quality,
            response_format=response_format,
            output_format=output_format,
        )

    async def generate_image(
        self,
        model: str,
        prompt: str,
        n: int = 1,
        size: str | None = None,
        quality: str | None = None,
        response_format: Literal["url", "b64_json"] = "url",
        output_format: ImageFormat | None = None,
        **kw: Any,
    ) -> ResultProduced:
        """``n`` images of ``prompt``: ``result.output.data[i].media`` is a ``MediaRef`` with a
        presigned ``url`` (and ``data`` when small); ``media_bytes`` reads it."""
        timeout = kw.pop("timeout_s", self.timeout_s)
        req = self.build_image(
            model,
            prompt,
            n=n,
            size=size,
            quality=quality,
            response_format=response_format,
            output_format=output_format,
            **kw,
        )
        return await self.result(req, timeout)

    def build_speech(
        self,
        model: str,
        input: str,
        voice: str,
        *,
        response_format: SpeechFormat = "mp3",
        speed: float | None = None,
        stream: bool = False,
        **kw: Any,
    ) -> SpeechRequested:
        """``instructions``, ``stream_format``, ``fallbacks`` are request fields; other keywords
        go to ``extra``."""
        common = self._common(kw)
        fields = {k: kw.pop(k) for k in ("fallbacks", "instructions", "stream_format") if k in kw}
        return SpeechRequested(
            **common,
            **fields,
            model=model,
            input=input,
            voice=voice,
            response_format=response_format,
            speed=speed,
            stream=stream,
            extra=kw.pop("extra", {}) | kw,
        )

    async def speech(
        self,
        model: str,
        input: str,
        voice: str,
        response_format: SpeechFormat = "mp3",
        speed: float | None = None,
        **kw: Any,
    ) -> ResultProduced:
        """``input`` read aloud: ``result.output.media`` is the stored audio (presigned ``url``,
        ``data`` when small); ``media_bytes`` reads it."""
        timeout = kw.pop("timeout_s", self.timeout_s)
        req = self.build_speech(model, input, voice, response_format=response_format, speed=speed, **kw)
        return await self.result(req, timeout)

    async def stream_speech(
        self,
        model: str,
        input: str,
        voice: str,
        response_format: SpeechFormat = "mp3",
        speed: float | None = None,
        **kw: Any,
    ) -> AsyncIterator[bytes]:
        """``input`` read aloud, the audio bytes as they are produced (``stream_format`` ``audio``
        unless given). Stopping early cancels the request."""
        timeout = kw.pop("timeout_s", self.timeout_s)
        kw.setdefault("stream_format", "audio")
        req = self.build_speech(
            model, input, voice, response_format=response_format, speed=speed, stream=True, **kw
        )
        async with contextlib.aclosing(self.stream(req, timeout)) as chunks:  # (closed: cancelled)
            async for chunk in chunks:
                if chunk.delta.audio:
                    yield base64.b64decode(chunk.delta.audio)

    def build_transcribe(self, model: str, file: MediaSource, **kw: Any) -> TranscribeRequested:
        """``language``, ``prompt``, ``response_format``, ``timestamp_granularities``,
        ``temperature``, ``fallbacks`` are request fields; other keywords go to ``extra``."""
        common = self._common(kw)
        names = (
            "fallbacks",
            "language",
            "prompt",
            "response_format",
            "timestamp_granularities",
            "temperature",
        )
        fields = {k: kw.pop(k) for k in names if k in kw}
        return TranscribeRequested(**common, **fields, model=model, file=file, extra=kw.pop("extra", {}) | kw)

    async def transcribe(self, model: str, file: str | bytes | MediaSource, **kw: Any) -> ResultProduced:
        """The text of ``file``: a reference (``https:`` / ``data:`` URL, ``s3://``, a file id) or
        the bytes (``filename=`` and ``mime_type=`` describe them). Bytes up to
        ``inline_max_bytes`` travel as a ``data:`` URL; larger ones are uploaded to ``storage``
        first (without storage: ``ValidationError``) and deleted once answered. ``result.output.body``
        is the answer in ``response_format``, ``result.output.text`` the text."""
        timeout = kw.pop("timeout_s", self.timeout_s)
        source, uploaded = await source_for(
            file,
            tenant_id=kw.get("tenant_id") or self.tenant_id,
            storage=self.storage,
            filename=kw.pop("filename", None),
            mime_type=kw.pop("mime_type", None),
            inline_max_bytes=self.inline_max_bytes,
        )
        try:
            req = self.build_transcribe(model, source, **kw)
            return await self.result(req, timeout)
        finally:
            if uploaded is not None and self.storage is not None:
                with contextlib.suppress(Exception):  # the call's own outcome is what matters
                    await asyncio.shield(self.storage.delete(uploaded))

    async def media_bytes(self, ref: MediaRef) -> bytes:
        """The bytes of media an answer carries: its inline ``data``, else a GET of its presigned
        ``url`` (``MediaNotFound`` once it expired), else (with ``storage``) the object at ``key``."""
        return await ref_bytes(ref, storage=self.storage, timeout_s=self.timeout_s)
