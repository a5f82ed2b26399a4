"""Storing generated media (``llm.media.out``) and answering the caller with its URLs.

Each ``MediaRef`` of the result's output is kept under ``media_key(tenant, media_id)``: its
inline bytes written, or the executor's staging object (bytes above ``media.inline_max_bytes``)
copied there and removed. Then it gets a presigned GET URL (``media.url_expiry_s``) and loses
its inline bytes if they are above the inline limit. The executor derives media ids from the
request id, so a redelivered ``MediaProduced`` stores the same objects again; a staging object
already moved is found at its final key.
"""

from __future__ import annotations

import base64
from datetime import timedelta

from services.contracts.errors import InternalError
from services.contracts.events import (
    ImagesOutput,
    MediaProduced,
    MediaRef,
    ResultProduced,
    SpeechOutput,
    VideoOutput,
    utcnow,
)
from services.runtime.config import MediaConfig
from services.runtime.media.refs import media_key, tenant_prefix
from services.runtime.media.storage import FileStorage


class Outputs:
    def __init__(self, media: MediaConfig, storage: FileStorage):
        self.media = media
        self.storage = storage

    async def store(self, produced: MediaProduced) -> ResultProduced:
        result = produced.result
        out = result.output
        tenant = produced.tenant_id
        if isinstance(out, ImagesOutput):
            data = [img.model_copy(update={"media": await self.keep(tenant, img.media)}) for img in out.data]
            out = out.model_copy(update={"data": data})
        elif isinstance(out, SpeechOutput | VideoOutput):
            out = out.model_copy(update={"media": await self.keep(tenant, out.media)})
        return result.model_copy(update={"output": out})

    async def keep(self, tenant: str, ref: MediaRef) -> MediaRef:
        final = media_key(tenant, ref.media_id)
        if ref.data is not None:
            if await self.storage.head(final) is None:
                await self.storage.put(
                    final, base64.b64decode(ref.data), ref.mime_type, filename=ref.filename
                )
        elif ref.key is not None and ref.key != final:
            if not ref.key.startswith(tenant_prefix(tenant)):
                raise InternalError(f"media {ref.media_id}: staging object outside the tenant's prefix")
            if await self.storage.head(final) is None:  # not moved yet (else: a redelivery)
                await self.storage.copy(ref.key, final)
            await self.storage.delete(ref.key)
        elif ref.key is None:
            raise InternalError(f"media {ref.media_id} has neither bytes nor an object")
        url = await self.storage.presign(final, self.media.url_expiry_s)
        inline = ref.data if ref.bytes <= self.media.inline_max_bytes else None
        return ref.model_copy(
            update={
                "key": final,
                "url": url,
                "url_expires_at": utcnow() + timedelta(seconds=self.media.url_expiry_s),
                "data": inline,
            }
        )
