"""Resolving the media of a plan before it is executed (``llm.media.in`` -> ``llm.exec``).

Every media reference of the request — a chat content part of a ``MEDIA_PART_TYPES`` type, a
transcription's ``file`` — is read (a ``data:`` URL decoded, an ``s3://`` reference, file id or
media id read from FileStorage only when it is the caller's tenant's, an ``http(s)`` URL fetched
through the safe fetcher), checked (``sniff.inspect``: magic bytes against the declared type and
the allowed types, byte, pixel and duration caps) and stored under the tenant's prefix; the
request then carries a ``MediaRef`` for it (``part["media"]``, ``file.media``), with the bytes
inline only when at most ``media.inline_max_bytes``, and no ``data:`` URL of its own any more.
Media ids are derived from the request id and the media's position, so a plan resolved twice
(redelivered) writes the same objects again instead of new ones.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any

from services.contracts.errors import GatewayError, ValidationError
from services.contracts.events import (
    MEDIA_PART_TYPES,
    ChatRequested,
    ExecutionPlanned,
    MediaRef,
    Message,
    ModelRequest,
    TranscribeRequested,
)
from services.runtime.config import GatewayConfig
from services.runtime.media.fetch import SafeFetcher
from services.runtime.media.refs import decode_data_url, media_key, owned_key, parse_reference, redact_url
from services.runtime.media.sniff import inspect
from services.runtime.media.storage import FileStorage

#: The media family each part type holds (what ``inspect`` expects).
FAMILY: dict[str, str] = {
    "image_url": "image",
    "image": "image",
    "file": "document",
    "document": "document",
    "input_audio": "audio",
    "video_url": "video",
}
#: ``input_audio.format`` -> the type it declares.
AUDIO_FORMATS: dict[str, str] = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
}
#: Content types that declare nothing.
UNDECLARED = frozenset({"", "application/octet-stream", "binary/octet-stream"})


def media_id_for(request_id: str, index: int) -> str:
    """The id of a request's ``index``-th media item: the same on every resolution of the plan."""
    return "med_" + hashlib.sha256(f"{request_id}:{index}".encode()).hexdigest()[:32]


def _declared(mime: str | None) -> str | None:
    if mime is None:
        return None
    base = mime.split(";", 1)[0].strip().lower()
    return None if base in UNDECLARED else base


class Resolver:
    def __init__(self, config: GatewayConfig, storage: FileStorage, fetcher: SafeFetcher):
        self.config = config
        self.media = config.media
        self.storage = storage
        self.fetcher = fetcher

    async def plan(self, plan: ExecutionPlanned) -> ExecutionPlanned:
        """``plan`` with every media reference of its request resolved; a ``GatewayError``
        (``validation_error``, ``media_not_found``, ``payload_too_large``) names the one that
        is not acceptable, with ``param`` its place in the request."""
        req = plan.request
        if isinstance(req, TranscribeRequested):
            src = req.file
            ref = await self._resolve(req, 0, src.url, src.mime_type, "audio", src.filename, "file")
            url = src.url if not src.url.startswith("data:") else f"s3://{self.storage.bucket}/{ref.key}"
            update: dict[str, Any] = {"file": src.model_copy(update={"media": ref, "url": url})}
            return plan.model_copy(update={"request": req.model_copy(update=update)})
        if not isinstance(req, ChatRequested):
            return plan
        pass_urls = self._pass_urls(plan)
        jobs: list[tuple[int, int, dict[str, Any]]] = []
        for i, m in enumerate(req.messages):
            if isinstance(m.content, list):
                jobs += [(i, j, p) for j, p in enumerate(m.content) if p.get("type") in MEDIA_PART_TYPES]
        done = await asyncio.gather(
            *(
                self._part(req, n, part, f"messages[{i}].content[{j}]", pass_urls)
                for n, (i, j, part) in enumerate(jobs)
            )
        )
        messages: list[Message] = list(req.messages)
        for (i, j, _), new in zip(jobs, done, strict=True):
            content = messages[i].content
            assert isinstance(content, list)
            if content is req.messages[i].content:
                content = list(content)
                messages[i] = messages[i].model_copy(update={"content": content})
            content[j] = new
        return plan.model_copy(update={"request": req.model_copy(update={"messages": messages})})

    def _pass_urls(self, plan: ExecutionPlanned) -> bool:
        """Whether every alias the plan may use lets its provider fetch a caller's URL itself."""
        aliases = {d.alias for d in plan.deployments}
        return all((m := self.config.models.get(a)) is not None and m.pass_urls for a in aliases)

    async def _part(
        self, req: ChatRequested, index: int, part: dict[str, Any], param: str, pass_urls: bool
    ) -> dict[str, Any]:
        kind = str(part["type"])
        body = part.get(kind)
        new = dict(part)
        declared: str | None = None
        filename: str | None = None
        if kind in ("image_url", "video_url", "image"):
            url = body if isinstance(body, str) else (body or {}).get("url")
            if not isinstance(url, str) or not url:
                raise ValidationError(f"{param}: {kind} needs a url", param=param)
        elif kind in ("file", "document"):
            if not isinstance(body, dict):
                raise ValidationError(f"{param}: {kind} needs an object", param=param)
            url = body.get("file_data") or body.get("file_id") or body.get("url")
            filename = body.get("filename")
            if not isinstance(url, str) or not url:
                raise ValidationError(f"{param}: {kind} needs file_data, file_id or url", param=param)
        else:  # input_audio: base64 data and its format, or a reference
            if not isinstance(body, dict):
                raise ValidationError(f"{param}: input_audio needs an object", param=param)
            fmt = body.get("format")
            declared = AUDIO_FORMATS.get(fmt) if isinstance(fmt, str) else None
            if isinstance(body.get("data"), str) and body["data"]:
                url = f"data:{declared or 'application/octet-stream'};base64,{body['data']}"
            elif isinstance(body.get("url"), str) and body["url"]:
                url = body["url"]
            else:
                raise ValidationError(f"{param}: input_audio needs data (base64) or url", param=param)
        ref = await self._resolve(req, index, url, declared, FAMILY[kind], filename, param)
        new["media"] = ref.model_dump(mode="json", exclude_none=True)
        stored = f"s3://{self.storage.bucket}/{ref.key}"
        if kind in ("image_url", "video_url", "image") and url.startswith("data:"):
            new[kind] = {**(body if isinstance(body, dict) else {}), "url": stored}
        elif kind in ("file", "document") and isinstance(body, dict):
            new[kind] = {k: v for k, v in body.items() if k != "file_data"} | {"url": stored}
        elif kind == "input_audio" and isinstance(body, dict):
            new[kind] = {k: v for k, v in body.items() if k != "data"}
        if pass_urls and url.startswith("https:"):
            new["pass_url"] = True
        return new

    async def _resolve(
        self,
        req: ModelRequest,
        index: int,
        url: str,
        declared: str | None,
        family: str,
        filename: str | None,
        param: str,
    ) -> MediaRef:
        try:
            return await self._read(req, index, url, _declared(declared), family, filename)
        except GatewayError as err:
            if err.param is None:
                err.param = param
            raise

    async def _read(
        self, req: ModelRequest, index: int, url: str, declared: str | None, family: str, filename: str | None
    ) -> MediaRef:
        ref = parse_reference(url)
        media_id = media_id_for(req.request_id, index)
        key: str | None = None
        source: str | None = None
        if ref.kind == "data":
            mime, body = decode_data_url(url)
            declared = declared or _declared(mime)
        elif ref.kind == "http":
            fetched = await self.fetcher.fetch(url)
            body, source = fetched.body, fetched.url
            declared = declared or _declared(fetched.content_type)
        else:
            key = owned_key(req.tenant_id, ref, self.storage.bucket)  # MediaNotFound unless the tenant's
            head = await self.storage.head(key)
            if head is not None:
                declared = declared or _declared(head.mime_type)
                filename = filename or head.filename
            body = await self.storage.get(key)
            media_id = ref.id or media_id
        sniffed = inspect(body, declared, self.media, expect=family)
        if key is None:
            key = media_key(req.tenant_id, media_id)
            meta = {"request_id": req.request_id} | ({"source": source} if source else {})
            await self.storage.put(key, body, sniffed.mime_type, filename=filename, metadata=meta)
        inline = len(body) <= self.media.inline_max_bytes
        return MediaRef(
            media_id=media_id,
            mime_type=sniffed.mime_type,
            bytes=len(body),
            key=key,
            data=base64.b64encode(body).decode() if inline else None,
            filename=filename,
            width=sniffed.width,
            height=sniffed.height,
            duration_s=sniffed.duration_s,
            source=source or (redact_url(url) if ref.kind != "data" else None),
        )
