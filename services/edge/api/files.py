"""``/v1/files``: OpenAI's files API over the media bucket (FileStorage), and the edge's helpers
for media held there.

* ``POST /v1/files`` (``multipart/form-data``: ``purpose``, then ``file``) streams the upload
  into FileStorage under ``tenants/<tenant>/files/<file id>`` (never held whole; at most
  ``media.max_bytes``) and answers OpenAI's file object ``{id, object: "file", bytes,
  created_at, filename, purpose, status: "processed"}``. ``purpose`` must come before ``file``
  (as the OpenAI SDKs send it): the object's metadata is written with it.
* ``GET /v1/files`` (``purpose``, ``order``, ``after``, ``limit``), ``GET /v1/files/{id}``,
  ``GET /v1/files/{id}/content`` (the bytes, streamed), ``DELETE /v1/files/{id}``.
* A batch's output and error files (``file-<batch id>-output`` / ``-errors``) are not stored:
  ``GET /v1/files/{id}`` and ``/content`` render them from the batch's items (``batches``).

A file id names an object under the caller's tenant's prefix only: another tenant's id (or a
made-up one) is ``media_not_found`` (404), the two are not told apart. A file id is what chat
content parts (``image_url.url``, ``file.file_id``, ``video_url.url``) and transcriptions take.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import urllib.parse
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from services.contracts.errors import MediaNotFound, ValidationError
from services.contracts.events import MediaRef
from services.runtime.batches import batch_of_file
from services.runtime.media.refs import file_key, new_file_id, owned_key, parse_reference

from ..asgi import Request, Response, json_response
from ..bodies import FormReader, Part, StreamedResponse
from .batch_files import result_file

if TYPE_CHECKING:
    from services.runtime.media.storage import FileStorage, StoredFile

    from ..context import Edge

#: ``purpose`` values ``POST /v1/files`` takes (OpenAI's).
PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
#: Upload bodies may exceed ``media.max_bytes`` by this much (the form's other fields, boundaries).
FORM_OVERHEAD = 1024 * 1024
#: The longest text field of an upload form.
FIELD_LIMIT = 64 * 1024
OCTET_STREAM = "application/octet-stream"
_HEADS = 32  # concurrent HEADs while listing


def upload_limit(edge: Edge) -> int:
    return edge.config.media.max_bytes + FORM_OVERHEAD


def declared(content_type: str | None) -> str:
    """A part's declared type (``application/octet-stream`` when it names none)."""
    base = (content_type or "").split(";", 1)[0].strip().lower()
    return base or OCTET_STREAM


async def store_upload(
    edge: Edge, tenant: str, part: Part, chunks: AsyncIterator[bytes], *, purpose: str
) -> tuple[str, StoredFile]:
    """Stream one uploaded file into the tenant's files: (its new file id, what was stored)."""
    file_id = new_file_id()
    stored = await edge.files.put_stream(
        file_key(tenant, file_id),
        chunks,
        declared(part.content_type),
        max_bytes=edge.config.media.max_bytes,
        filename=part.filename or None,
        metadata={"purpose": purpose},
    )
    return file_id, stored


async def discard(storage: FileStorage, key: str) -> None:
    """Delete an upload a request failed after (not interrupted by the request's own cancellation)."""
    with contextlib.suppress(Exception):  # the request's own error is what the caller must see
        await asyncio.shield(storage.delete(key))


def file_object(file_id: str, stored: StoredFile) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": stored.bytes,
        "created_at": stored.created_at,
        "filename": stored.filename or file_id,
        "purpose": stored.metadata.get("purpose", "user_data"),
        "status": "processed",
    }


def _key(edge: Edge, req: Request, file_id: str) -> str:
    """The object key of the caller's file ``file_id``; ``MediaNotFound`` for anything else."""
    assert req.caller is not None
    try:
        ref = parse_reference(file_id)
    except ValidationError:
        ref = None
    if ref is None or ref.kind != "file":
        raise MediaNotFound(f"no such file: {file_id[:80]!r}", param="file_id")
    return owned_key(req.caller.tenant_id, ref, edge.files.bucket)


async def head_file(edge: Edge, req: Request, file_id: str) -> tuple[str, StoredFile]:
    key = _key(edge, req, file_id)
    stored = await edge.files.head(key)
    if stored is None:
        raise MediaNotFound(f"no such file: {file_id[:80]!r}", param="file_id")
    return key, stored


def stored_body(storage: FileStorage, key: str) -> AsyncIterator[bytes]:
    """The object's bytes as they are read (``MediaNotFound`` when it is gone)."""

    async def body() -> AsyncIterator[bytes]:
        async with storage.open(key) as chunks:
            async for chunk in chunks:
                yield chunk

    return body()


async def media_bytes(edge: Edge, ref: MediaRef) -> bytes:
    """A ``MediaRef``'s bytes: inline ``data``, else the object at ``key`` (the claim check)."""
    if ref.data is not None:
        return base64.b64decode(ref.data)
    if ref.key is None:
        raise MediaNotFound(f"media {ref.media_id} has neither data nor a stored object")
    return await edge.files.get(ref.key)


# --- handlers -----------------------------------------------------------------------------------


async def create_file(edge: Edge, req: Request) -> Response:
    assert req.caller is not None
    form = FormReader(req, body_limit=upload_limit(edge))
    purpose: str | None = None
    created: tuple[str, StoredFile] | None = None
    try:
        while (part := await form.next_part()) is not None:
            if part.name == "purpose":
                purpose = await form.text(FIELD_LIMIT)
                if purpose not in PURPOSES:
                    raise ValidationError(
                        f"purpose: must be one of {', '.join(sorted(PURPOSES))}, got {purpose[:40]!r}",
                        param="purpose",
                    )
            elif part.name == "file":
                if created is not None:
                    raise ValidationError("file: one file per request", param="file")
                if part.filename is None:
                    raise ValidationError("file: must be a file upload", param="file")
                if purpose is None:
                    raise ValidationError(
                        "purpose: required, and before file in the form (as the OpenAI SDKs send it)",
                        param="purpose",
                    )
                created = await store_upload(edge, req.caller.tenant_id, part, form.chunks(), purpose=purpose)
            # other fields (expires_after[...]) are not kept: files last until deleted
        if created is None:
            raise ValidationError("file: required", param="file")
    except BaseException:
        if created is not None:
            await discard(edge.files, file_key(req.caller.tenant_id, created[0]))
        raise
    return json_response(200, file_object(*created))


def _query(req: Request) -> dict[str, str]:
    raw = req.scope.get("query_string", b"").decode("latin-1")
    return {k: v[-1] for k, v in urllib.parse.parse_qs(raw).items()}


async def list_files(edge: Edge, req: Request) -> Response:
    """The caller's tenant's files, newest first (``order=asc``: oldest first), ``limit`` (1-10000,
    default 10000) after the file ``after``, only those of ``purpose`` when given."""
    assert req.caller is not None
    q = _query(req)
    try:
        limit = int(q.get("limit", "10000"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 10000:
        raise ValidationError("limit: must be an integer from 1 to 10000", param="limit")
    order = q.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ValidationError("order: must be 'asc' or 'desc'", param="order")
    storage = edge.files
    prefix = file_key(req.caller.tenant_id, "")
    ids = [k[len(prefix) :] for k in await storage.keys(prefix) if "/" not in k[len(prefix) :]]
    gate = asyncio.Semaphore(_HEADS)

    async def head(file_id: str) -> tuple[str, StoredFile | None]:
        async with gate:
            return file_id, await storage.head(prefix + file_id)

    found = [(i, s) for i, s in await asyncio.gather(*map(head, ids)) if s is not None]
    if "purpose" in q:
        found = [(i, s) for i, s in found if s.metadata.get("purpose", "user_data") == q["purpose"]]
    found.sort(key=lambda f: (f[1].created_at, f[0]), reverse=order == "desc")
    if "after" in q:
        at = next((n for n, (i, _) in enumerate(found) if i == q["after"]), len(found))
        found = found[at + 1 :]
    page = found[:limit]
    return json_response(
        200,
        {
            "object": "list",
            "data": [file_object(i, s) for i, s in page],
            "first_id": page[0][0] if page else "",
            "last_id": page[-1][0] if page else "",
            "has_more": len(found) > limit,
        },
    )


async def get_file(edge: Edge, req: Request) -> Response | StreamedResponse:
    """``/v1/files/{id}`` (the file object) and ``/v1/files/{id}/content`` (its bytes): one route,
    as a path parameter takes the rest of the path."""
    file_id = req.params["file_id"]
    of_batch = batch_of_file(file_id.removesuffix("/content"))
    if of_batch is not None:  # a batch's output or error file, rendered when read
        return await result_file(edge, req, *of_batch, content=file_id.endswith("/content"))
    if file_id.endswith("/content"):
        key, stored = await head_file(edge, req, file_id.removesuffix("/content"))
        return StreamedResponse(
            stored_body(edge.files, key),
            content_type=(stored.mime_type or OCTET_STREAM).encode("latin-1"),
            length=stored.bytes,
        )
    _, stored = await head_file(edge, req, file_id)
    return json_response(200, file_object(file_id, stored))


async def delete_file(edge: Edge, req: Request) -> Response:
    file_id = req.params["file_id"]
    key, _ = await head_file(edge, req, file_id)
    await edge.files.delete(key)
    return json_response(200, {"id": file_id, "object": "file", "deleted": True})
