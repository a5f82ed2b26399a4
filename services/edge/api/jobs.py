"""Asynchronous jobs at the edge (README "Jobs").

* Any OpenAI route (chat completions, embeddings, images, speech, transcriptions) takes
  ``"async": true`` in its body or the header ``x-llmgw-async: true``: the request goes to the
  pipeline as a job and the answer is at once ``202 {"id", "object": "job", "status":
  "pending", ...}``; the request id (``x-request-id``) is the job id.
* ``GET /v1/jobs/{id}``: the job (``status`` pending | running | completed | failed |
  cancelled, times in unix seconds, ``progress``, ``error``, and once completed ``result``: the
  answer in the gateway's own result shape, media by presigned URL). Another tenant's id:
  404 ``job_not_found``; a job finished longer ago than ``jobs.retention_s``: 410 ``job_expired``.
* ``POST /v1/jobs/{id}/cancel``: stops it (a pending job never runs, a running one's provider
  call stops); answers the job as it stands.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from services.contracts.events import JobUpdated, RequestBase

from ..asgi import Request, Response
from ..errors import HTTPError

if TYPE_CHECKING:
    from ..context import Edge

ASYNC_HEADER = b"x-llmgw-async"


def wants_job(req: Request, event: RequestBase) -> bool:
    """Whether the caller asked for a job: ``async: true`` in the body (taken out of the fields
    that would reach the provider) or the ``x-llmgw-async`` header."""
    params = getattr(event, "params", None)
    extra = params.extra if params is not None else getattr(event, "extra", None)
    if isinstance(extra, dict) and extra.pop("async", None) is True:
        return True
    for name, value in req.scope["headers"]:
        if name == ASYNC_HEADER:
            return value.strip().lower() in (b"true", b"1", b"yes")
    return False


async def submitted(edge: Edge, req: Request, event: RequestBase) -> Response:
    """Send ``event`` as a job: the 202 answer naming it."""
    job_id = await edge.gw.submit(event)
    body = {
        "id": job_id,
        "object": "job",
        "status": "pending",
        "operation": event.operation,
        "model": getattr(event, "model", None),
        "created_at": int(event.occurred_at.timestamp()),
    }
    return Response(202, orjson.dumps(body), [(b"location", f"/v1/jobs/{job_id}".encode())])


def _unix(at: datetime | None) -> int | None:
    return int(at.timestamp()) if at is not None else None


def job_json(job: JobUpdated) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": job.job_id,
        "object": "job",
        "status": job.status,
        "operation": job.operation,
        "model": job.model,
        "created_at": _unix(job.created_at),
        "started_at": _unix(job.started_at),
        "finished_at": _unix(job.finished_at),
        "progress": job.progress,
        "error": job.error.model_dump(exclude_none=True) if job.error else None,
        "result": None,
    }
    if job.result is not None:
        out["result"] = job.result.model_dump(mode="json", exclude_none=True)
    return out


async def get_job(edge: Edge, req: Request) -> Response:
    assert req.caller is not None
    job_id = req.params["job_id"]
    if "/" in job_id:
        raise HTTPError(404, f"Invalid URL (GET /v1/jobs/{job_id})")
    job = await edge.gw.job(req.caller.tenant_id, job_id)
    return Response(200, orjson.dumps(job_json(job)))


async def cancel_job(edge: Edge, req: Request) -> Response:
    """``POST /v1/jobs/{id}/cancel`` (the route's parameter holds ``{id}/cancel``)."""
    assert req.caller is not None
    job_id, _, action = req.params["job_id"].partition("/")
    if action != "cancel":
        raise HTTPError(404, f"Invalid URL (POST /v1/jobs/{req.params['job_id']})")
    job = await edge.gw.cancel_job_of(req.caller.tenant_id, job_id)
    return Response(200, orjson.dumps(job_json(job)))
