"""A batch's output and error files, read through the files API (``GET /v1/files/{id}`` and
``/content`` of ``file-<batch id>-output`` / ``file-<batch id>-errors``): not stored, rendered
from the batch's items' job records when read (``batch_results``), so a running batch's files
hold the items finished so far. Another tenant's (or an unknown) batch's file ids are
``media_not_found`` (404), as in the files API; so are a ``failed`` batch's (it has no items).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from services.contracts.errors import BatchNotFound, MediaNotFound
from services.contracts.events import BatchUpdated
from services.runtime.batches import error_file_id, output_file_id

from ..asgi import Request, Response, json_response
from ..auth import Caller
from .batch_items import read_custom_ids
from .batch_results import needs_custom_ids, openai_file, outcomes

if TYPE_CHECKING:
    from ..context import Edge

JSONL = b"application/jsonl"


def unix(at: datetime | None) -> int | None:
    return int(at.timestamp()) if at is not None else None


async def find(edge: Edge, caller: Caller, batch_id: str) -> BatchUpdated:
    """The caller's tenant's OpenAI batch ``batch_id``, else ``BatchNotFound``."""
    batch = await edge.gw.batch(caller.tenant_id, batch_id)
    if batch.api != "openai":
        raise BatchNotFound(f"no batch {batch_id!r}")
    return batch


async def result_file(edge: Edge, req: Request, batch_id: str, kind: str, content: bool) -> Response:
    """A batch's output or error file: the file object, or (``content``) its JSONL."""
    assert req.caller is not None
    file_id = output_file_id(batch_id) if kind == "output" else error_file_id(batch_id)
    try:
        batch = await find(edge, req.caller, batch_id)
    except BatchNotFound:
        raise MediaNotFound(f"no such file: {file_id[:80]!r}", param="file_id") from None
    if batch.status == "failed":
        raise MediaNotFound(f"no such file: {file_id[:80]!r}", param="file_id")
    jobs = await edge.gw.batch_jobs(batch)
    cids = await read_custom_ids(edge, batch) if needs_custom_ids(batch, jobs) else None
    body = openai_file(batch.endpoint, outcomes(batch, jobs, cids), kind)
    if content:
        return Response(200, body, content_type=(b"content-type", JSONL))
    return json_response(
        200,
        {
            "id": file_id,
            "object": "file",
            "bytes": len(body),
            "created_at": unix(batch.created_at),
            "filename": f"{batch_id}_{kind}.jsonl",
            "purpose": "batch_output",
            "status": "processed",
        },
    )
