"""Media around a provider call: the bytes of a request's media before it (``materialise``), the
staging of an answer's media after it (``MediaOut``).

* ``materialise``: every ``MediaRef`` of a request the media-store resolved gets its ``data``
  (base64) filled, read from FileStorage by ``key`` when it was too large to travel inline. The
  copy it returns stays in this process: adapters always find the bytes, events never carry them
  above ``media.inline_max_bytes``.
* ``MediaIO.produced``: the ``MediaProduced`` event (``llm.media.out``) sent instead of the
  result of an ``image.generate`` / whole ``audio.speech`` answer. Media above the inline limit is
  uploaded to a staging object under the tenant's prefix first (the claim check); the media-store
  moves it to its final key. Media ids are derived from the request id: a plan run again produces
  the same ids.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from services.contracts.errors import MediaNotFound
from services.contracts.events import (
    ChatRequested,
    ExecutionPlanned,
    ImagesOutput,
    MediaProduced,
    MediaRef,
    RequestBase,
    ResultProduced,
    SpeechOutput,
    TranscribeRequested,
    VideoOutput,
)
from services.runtime.config import MediaConfig
from services.runtime.media.refs import staging_key, tenant_prefix
from services.runtime.media.storage import FileStorage

R = TypeVar("R", bound=RequestBase)


Read = Callable[[str], Awaitable[bytes]]


async def materialise(req: R, read: Read) -> R:
    """``req`` with the bytes of every media reference inline (``req`` itself when none is missing)."""
    if isinstance(req, TranscribeRequested):
        ref = req.file.media
        if ref is None or ref.data is not None:
            return req
        filled = await _filled(ref, read, req.tenant_id)
        return req.model_copy(update={"file": req.file.model_copy(update={"media": filled})})
    if not isinstance(req, ChatRequested):
        return req
    missing: list[tuple[int, int, dict[str, Any]]] = []
    for i, m in enumerate(req.messages):
        if isinstance(m.content, list):
            for j, part in enumerate(m.content):
                media = part.get("media")
                if isinstance(media, dict) and media.get("data") is None:
                    missing.append((i, j, part))
    if not missing:
        return req
    refs = await asyncio.gather(
        *(_filled(MediaRef.model_validate(p["media"]), read, req.tenant_id) for _, _, p in missing)
    )
    messages = list(req.messages)
    for (i, j, part), ref in zip(missing, refs, strict=True):
        content = list(messages[i].content or [])
        content[j] = {**part, "media": ref.model_dump(mode="json", exclude_none=True)}
        messages[i] = messages[i].model_copy(update={"content": content})
    return req.model_copy(update={"messages": messages})


async def _filled(ref: MediaRef, read: Read, tenant: str) -> MediaRef:
    if ref.key is None:
        raise ValueError(f"media {ref.media_id} has neither bytes nor an object key")
    if not ref.key.startswith(tenant_prefix(tenant)):  # the media-store's references only, never a caller's
        raise MediaNotFound(f"media {ref.media_id} not found")
    body = await read(ref.key)
    return ref.model_copy(update={"data": base64.b64encode(body).decode()})


def output_media_id(request_id: str, index: int) -> str:
    return "med_" + hashlib.sha256(f"{request_id}:out:{index}".encode()).hexdigest()[:32]


class MediaIO:
    """The executor's FileStorage, started on first use (an executor that never sees media never
    connects to S3), with ``materialise`` and ``produced`` on it."""

    def __init__(self, media: MediaConfig, storage: FileStorage, *, started: bool = False):
        self.media = media
        self._storage = storage
        self._started = started
        self._lock = asyncio.Lock()

    async def storage(self) -> FileStorage:
        if not self._started:
            async with self._lock:
                if not self._started:
                    await self._storage.start()
                    self._started = True
        return self._storage

    async def aclose(self) -> None:
        if self._started:
            self._started = False
            await self._storage.aclose()

    async def materialise(self, req: R) -> R:
        return await materialise(req, self._read)

    async def _read(self, key: str) -> bytes:
        return await (await self.storage()).get(key)

    async def produced(self, plan: ExecutionPlanned, result: ResultProduced) -> MediaProduced:
        req = plan.request
        out = result.output
        if isinstance(out, ImagesOutput):
            data = [
                img.model_copy(update={"media": await self._stage(req, i, img.media)})
                for i, img in enumerate(out.data)
            ]
            out = out.model_copy(update={"data": data})
        elif isinstance(out, SpeechOutput | VideoOutput):
            out = out.model_copy(update={"media": await self._stage(req, 0, out.media)})
        return MediaProduced(
            request_id=req.request_id,
            tenant_id=req.tenant_id,
            user_id=req.user_id,
            reply_to=req.reply_to,
            result=result.model_copy(update={"output": out}),
            job=req.job,
        )

    async def _stage(self, req: RequestBase, index: int, ref: MediaRef) -> MediaRef:
        media_id = output_media_id(req.request_id, index)
        if ref.data is None or len(ref.data) * 3 // 4 <= self.media.inline_max_bytes:
            return ref.model_copy(update={"media_id": media_id})
        body = base64.b64decode(ref.data)
        key = staging_key(req.tenant_id, media_id)
        await (await self.storage()).put(key, body, ref.mime_type, filename=ref.filename)
        return ref.model_copy(update={"media_id": media_id, "data": None, "key": key, "bytes": len(body)})
