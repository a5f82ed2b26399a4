"""A job's result, inline when small, in FileStorage when large (README "Jobs").

A terminal ``JobUpdated`` whose result, as JSON, is larger than the inline limit
(``jobs.result_inline_max_bytes``, default ``media.inline_max_bytes``) is written to the
media bucket under its tenant's prefix (``tenants/<tenant>/jobs/<job id>/result.json``) and the
record carries ``result_ref`` (key, size, a presigned URL) instead of ``result``: the
compacted ``llm.jobs`` keeps small records. Readers (the SDK's ``get_job`` / ``wait_job``, the
edge) put the result back with ``load_result``.
"""

from __future__ import annotations

from datetime import timedelta

from services.contracts.events import JobUpdated, MediaRef, ResultProduced, utcnow

from .media.refs import tenant_prefix
from .media.storage import FileStorage


def result_key(tenant_id: str, job_id: str) -> str:
    return f"{tenant_prefix(tenant_id)}jobs/{job_id}/result.json"


async def spill(
    state: JobUpdated, storage: FileStorage, inline_max_bytes: int, url_expiry_s: int
) -> JobUpdated:
    """``state`` as it goes to ``llm.jobs``: unchanged when its result is small, else with the
    result stored and referenced (``result_ref``). The object is written before the record."""
    if state.result is None:
        return state
    body = state.result.model_dump_json(exclude_none=True).encode()
    if len(body) <= inline_max_bytes:
        return state
    key = result_key(state.tenant_id, state.job_id)
    await storage.put(key, body, "application/json", filename="result.json")
    ref = MediaRef(
        media_id=f"jobres_{state.job_id}",
        mime_type="application/json",
        bytes=len(body),
        key=key,
        url=await storage.presign(key, url_expiry_s),
        url_expires_at=utcnow() + timedelta(seconds=url_expiry_s),
        filename="result.json",
    )
    return state.model_copy(update={"result": None, "result_ref": ref})


def with_result(job: JobUpdated, body: bytes) -> JobUpdated:
    """``job`` with its stored result (``body``, the JSON ``spill`` wrote) back inline."""
    return job.model_copy(update={"result": ResultProduced.model_validate_json(body)})
