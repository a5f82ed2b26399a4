"""OpenAI's videos API at the edge (README "Videos"), over the job machinery.

* ``POST /v1/videos`` (multipart, as the SDKs send it, or JSON: ``model``, ``prompt``,
  ``seconds``, ``size``; other fields reach the provider) submits a ``video.generate`` job and
  answers the video object at once (``status: queued``, ``id`` the job id). With the header
  ``x-llmgw-wait: true`` it is a synchronous request instead: the gateway submits, polls the
  provider itself and answers once the video is stored (``status: completed``).
* ``GET /v1/videos/{id}``: the video object from the job (pending -> ``queued``, running ->
  ``in_progress`` with ``progress``, ``completed``, failed / cancelled -> ``failed`` with
  ``error``); ``GET /v1/videos/{id}/content``: the stored MP4 (the gateway's copy, kept after the
  provider's expires). Another tenant's id: 404 ``job_not_found``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
import pydantic

from services.contracts.errors import GatewayError, JobNotFound, ValidationError
from services.contracts.events import JobUpdated, ResultProduced
from services.runtime.jobs import job_state

from ..asgi import Request, Response, read_body
from ..bodies import MULTIPART, FormReader, StreamedResponse, content_type
from .chat import error_answer, invalid, key_of, split_gateway
from .files import FIELD_LIMIT, stored_body
from .images import required_text

if TYPE_CHECKING:
    from ..context import Edge

WAIT_HEADER = b"x-llmgw-wait"
OWN = frozenset({"model", "prompt", "seconds", "size"})
STATUS = {"pending": "queued", "running": "in_progress", "completed": "completed"}


def _bad(param: str, message: str) -> ValidationError:
    return ValidationError(f"{param}: {message}", param=param)


async def _fields(req: Request, limit: int) -> dict[str, Any]:
    kind, _ = content_type(req)
    if kind == MULTIPART:
        form = FormReader(req, body_limit=limit)
        values: dict[str, Any] = {}
        while (part := await form.next_part()) is not None:
            if part.filename is not None:
                raise _bad(part.name, "file inputs (input_reference) are not supported")
            values[part.name] = await form.text(FIELD_LIMIT)
        return values
    req.body = await read_body(req, limit)
    return req.json()


def _wait(req: Request) -> bool:
    return any(n == WAIT_HEADER and v.strip().lower() in (b"true", b"1") for n, v in req.scope["headers"])


def video_json(job_id: str, job: JobUpdated | None, result: ResultProduced | None = None) -> dict[str, Any]:
    params = (job.params if job else None) or {}
    out = result or (job.result if job else None)
    video = out.output if out is not None and out.output is not None and out.output.kind == "video" else None
    status = STATUS.get(job.status, "failed") if job is not None else "completed"
    error = (job.error if job else None) or (out.error if out else None)
    finished = job.finished_at if job else None
    return {
        "id": job_id,
        "object": "video",
        "model": (job.model if job else None) or (out.alias if out else None),
        "status": status,
        "progress": 100 if status == "completed" else int(((job.progress if job else None) or 0) * 100),
        "created_at": int(job.created_at.timestamp()) if job else None,
        "completed_at": int(finished.timestamp()) if finished else None,
        "expires_at": None,
        "prompt": params.get("prompt"),
        "size": (video.size if video else None) or params.get("size"),
        "seconds": (video.seconds if video else None) or params.get("seconds") or "4",
        "remixed_from_video_id": None,
        "error": {"code": error.code, "message": error.message} if error and status == "failed" else None,
    }


async def create_video(edge: Edge, req: Request) -> Response:
    assert req.caller is not None
    body = await _fields(req, edge.settings.max_body_bytes)
    model, prompt = required_text(body, "model"), required_text(body, "prompt")
    fields, extra = split_gateway(body, OWN)
    try:
        event = edge.gw.video_request(
            req.caller,
            model,
            prompt,
            seconds=body.get("seconds"),
            size=body.get("size"),
            request_id=req.request_id,
            extra=extra,
            **fields,
            **key_of(req),
        )
    except pydantic.ValidationError as exc:
        raise invalid(exc) from None
    if _wait(req):  # an asynchronous provider behind a synchronous request
        try:
            result = await req.until_disconnect(
                edge.gw.result(event, edge.timeout_for(fields.get("total_ms")))
            )
        except GatewayError as err:
            return error_answer(err)
        return Response(200, orjson.dumps(video_json(event.request_id, None, result)))
    job_id = await edge.gw.submit(event)
    return Response(200, orjson.dumps(video_json(job_id, job_state(event, "pending"))))


async def get_video(edge: Edge, req: Request) -> Response | StreamedResponse:
    """``/v1/videos/{id}`` and ``/v1/videos/{id}/content`` (one route: the parameter takes the rest)."""
    assert req.caller is not None
    video_id, _, rest = req.params["video_id"].partition("/")
    job = await edge.gw.job(req.caller.tenant_id, video_id)
    if job.operation != "video.generate":
        raise JobNotFound(f"no video {video_id!r}")
    if rest == "content":
        out = job.result.output if job.result is not None else None
        if job.status != "completed" or out is None or out.kind != "video" or out.media.key is None:
            raise JobNotFound(f"video {video_id!r} is not completed")
        return StreamedResponse(
            stored_body(edge.files, out.media.key),
            content_type=out.media.mime_type.encode(),
            length=out.media.bytes,
        )
    if rest:
        raise JobNotFound(f"no video {video_id!r}/{rest}")
    return Response(200, orjson.dumps(video_json(video_id, job)))
