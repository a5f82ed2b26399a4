"""``/v1/messages/batches``: Anthropic's Message Batches over the batch service (README "Batches").

Keys and headers as on ``/v1/messages`` (``x-api-key`` or bearer; ``anthropic-version``
accepted; ``request-id`` on every answer); errors in Anthropic's shape.

* ``POST /v1/messages/batches`` (``{"requests": [{"custom_id", "params"}]}``: 1 to 100,000
  requests, and at most ``batches.max_lines``; ``custom_id`` matching ``^[a-zA-Z0-9_-]{1,64}$``,
  unique; ``params`` a Messages request, not streamed) is checked whole, as Anthropic does: any
  bad request is a 400 ``invalid_request_error`` naming it (``requests.3.params.max_tokens:
  ...``), and nothing is created. Each ``params`` becomes its item as ``/v1/messages`` would make
  its request (``anthropic_wire``). The answer is the ``message_batch``.
* ``GET /v1/messages/batches/{id}``, ``GET /v1/messages/batches`` (``limit`` 1..1000, default
  20; ``after_id`` / ``before_id``; newest first), ``POST /v1/messages/batches/{id}/cancel``
  (``canceling``; a batch already ``canceling`` or finalizing, its items all done, as it is;
  an ended one: 400), ``DELETE /v1/messages/batches/{id}`` (an ended batch; else 400).
* ``GET /v1/messages/batches/{id}/results``: JSONL, one line per finished item in input order,
  readable while the batch runs (an extension: Anthropic answers results once it has ended), so
  ``results_url`` is set from creation.

``processing_status`` is ``in_progress`` (validating, in_progress, finalizing), ``canceling``
or ``ended``; times are RFC 3339 (UTC). Another tenant's id, or an OpenAI batch's, is
``not_found_error`` (404).
"""

from __future__ import annotations

import re
import urllib.parse
from datetime import datetime
from typing import TYPE_CHECKING, Any

from services.contracts.errors import BatchNotFound, ValidationError
from services.contracts.events import BatchUpdated
from services.runtime.batches import TERMINAL_BATCH_STATES, moved

from ..asgi import Request, Response, json_response, read_body
from ..auth import Caller
from ..errors import HTTPError
from . import batch_items as items
from .anthropic_errors import REQUEST_ID
from .anthropic_wire import parse_messages
from .batch_results import anthropic_results, needs_custom_ids, outcomes
from .messages import authenticate

if TYPE_CHECKING:
    from ..context import Edge

Json = dict[str, Any]
MAX_REQUESTS = 100_000
CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
JSONL = b"application/x-jsonl"
_STATUS = {"cancelling": "canceling", **dict.fromkeys(TERMINAL_BATCH_STATES, "ended")}
_ENDED = ("completed_at", "cancelled_at", "expired_at", "failed_at")


def rfc3339(at: datetime | None) -> str | None:
    return at.isoformat().replace("+00:00", "Z") if at is not None else None


def results_url(base: str, batch_id: str) -> str:
    return f"{base}/v1/messages/batches/{batch_id}/results"


def base_url(req: Request) -> str:
    """The URL the caller reached the edge at (its ``Host``), for ``results_url``."""
    host = next((v.decode("latin-1") for k, v in req.scope["headers"] if k == b"host"), None)
    if host is None:
        server = req.scope.get("server") or ("localhost", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{req.scope.get('scheme', 'http')}://{host}{req.scope.get('root_path', '')}"


def batch_json(b: BatchUpdated, base: str) -> Json:
    """The ``message_batch`` object."""
    c = b.counts
    ended = next((at for at in (getattr(b, f) for f in _ENDED) if at is not None), None)
    return {
        "id": b.batch_id,
        "type": "message_batch",
        "processing_status": _STATUS.get(b.status, "in_progress"),
        "request_counts": {
            "processing": c.total - c.succeeded - c.errored - c.canceled - c.expired,
            "succeeded": c.succeeded,
            "errored": c.errored,
            "canceled": c.canceled,
            "expired": c.expired,
        },
        "ended_at": rfc3339(ended) if b.status in TERMINAL_BATCH_STATES else None,
        "created_at": rfc3339(b.created_at),
        "expires_at": rfc3339(b.expires_at),
        "archived_at": None,
        "cancel_initiated_at": rfc3339(b.cancelling_at),
        "results_url": results_url(base, b.batch_id),
    }


def _answer(req: Request, doc: Json, status: int = 200) -> Response:
    return json_response(status, doc, [(REQUEST_ID, req.request_id.encode())])


def _bad(message: str) -> ValidationError:
    return ValidationError(message)


def check_requests(body: Json, max_lines: int) -> list[tuple[str, Json]]:
    """``requests`` as ``(custom_id, params)`` pairs; ``ValidationError`` naming the bad one."""
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise _bad("requests: required, a list of at least 1 request")
    most = min(MAX_REQUESTS, max_lines)
    if len(requests) > most:
        raise _bad(f"requests: at most {most} requests, got {len(requests)}")
    out: list[tuple[str, Json]] = []
    seen: set[str] = set()
    for i, r in enumerate(requests):
        if not isinstance(r, dict):
            raise _bad(f"requests.{i}: must be an object with custom_id and params")
        cid, params = r.get("custom_id"), r.get("params")
        if not isinstance(cid, str) or not CUSTOM_ID.fullmatch(cid):
            raise _bad(f"requests.{i}.custom_id: must match ^[a-zA-Z0-9_-]{{1,64}}$")
        if cid in seen:
            raise _bad(f"requests.{i}.custom_id: {cid!r} is used by an earlier request")
        if not isinstance(params, dict):
            raise _bad(f"requests.{i}.params: required, a Messages request object")
        if params.get("stream") is True:
            raise _bad(f"requests.{i}.params.stream: batch requests cannot stream")
        seen.add(cid)
        out.append((cid, params))
    return out


def request_items(
    edge: Edge, caller: Caller, batch_id: str, requests: list[tuple[str, Json]]
) -> list[items.Item]:
    """Each request's item, as ``/v1/messages`` would make its request; the first refusal raised,
    naming the request (``requests.<i>.params.<field>``)."""
    out: list[items.Item] = []
    for i, (cid, params) in enumerate(requests):
        try:
            out.append(items.chat_item(edge, caller, parse_messages(params), batch_id, cid, i))
        except ValidationError as exc:
            param = f"requests.{i}.params.{exc.param}" if exc.param else f"requests.{i}.params"
            raise ValidationError(f"requests.{i}.params.{exc.message}", param=param) from None
    return out


async def create_batch(edge: Edge, req: Request) -> Response:
    caller = authenticate(edge, req)
    limit = max(edge.settings.max_body_bytes, edge.config.batches.max_file_bytes)
    req.body = await read_body(req, limit)
    requests = check_requests(req.json(), edge.config.batches.max_lines)
    batch_id = items.anthropic_batch_id()
    made = request_items(edge, caller, batch_id, requests)
    await items.claim_media(edge, caller, made)
    key = await items.write_requests(edge, caller.tenant_id, batch_id, made)
    record = items.created(
        edge, caller, api="anthropic", batch_id=batch_id, endpoint="/v1/messages", items=made, key=key
    )
    record = await edge.gw.publish_batch(record)
    return _answer(req, batch_json(record, base_url(req)))


# --- read, list, cancel, results ----------------------------------------------------------------


async def find(edge: Edge, caller: Caller, batch_id: str) -> BatchUpdated:
    """The caller's tenant's Anthropic batch ``batch_id``, else ``BatchNotFound``."""
    batch = await edge.gw.batch(caller.tenant_id, batch_id)
    if batch.api != "anthropic":
        raise BatchNotFound(f"no message batch {batch_id!r}")
    return batch


async def get_batch(edge: Edge, req: Request) -> Response:
    """``GET /v1/messages/batches/{id}`` and ``.../{id}/results`` (one route: the parameter
    takes the rest of the path)."""
    caller = authenticate(edge, req)
    batch_id, _, action = req.params["batch_id"].partition("/")
    if action not in ("", "results"):
        raise HTTPError(404, f"Invalid URL (GET /v1/messages/batches/{req.params['batch_id']})")
    batch = await find(edge, caller, batch_id)
    if action == "results":
        return await results(edge, req, batch)
    return _answer(req, batch_json(batch, base_url(req)))


async def results(edge: Edge, req: Request, batch: BatchUpdated) -> Response:
    jobs = await edge.gw.batch_jobs(batch)
    cids = await items.read_custom_ids(edge, batch) if needs_custom_ids(batch, jobs) else None
    body = anthropic_results(outcomes(batch, jobs, cids))
    return Response(200, body, [(REQUEST_ID, req.request_id.encode())], content_type=(b"content-type", JSONL))


async def cancel_batch(edge: Edge, req: Request) -> Response:
    """``POST /v1/messages/batches/{id}/cancel``."""
    caller = authenticate(edge, req)
    batch_id, _, action = req.params["batch_id"].partition("/")
    if action != "cancel":
        raise HTTPError(404, f"Invalid URL (POST /v1/messages/batches/{req.params['batch_id']})")
    batch = await find(edge, caller, batch_id)
    if batch.status in ("validating", "in_progress"):
        batch = await edge.gw.publish_batch(moved(batch, "cancelling"))
    elif batch.status in TERMINAL_BATCH_STATES:
        raise ValidationError(f"message batch {batch_id!r} has already ended; it cannot be canceled")
    return _answer(req, batch_json(batch, base_url(req)))


async def delete_batch(edge: Edge, req: Request) -> Response:
    """``DELETE /v1/messages/batches/{id}``: an ended batch's record and its stored items go (its
    items' job records stay until ``llm.jobs`` forgets them); a batch still processing: 400."""
    caller = authenticate(edge, req)
    batch_id = req.params["batch_id"]
    if "/" in batch_id:
        raise HTTPError(404, f"Invalid URL (DELETE /v1/messages/batches/{batch_id})")
    batch = await find(edge, caller, batch_id)
    if batch.status not in TERMINAL_BATCH_STATES:
        raise ValidationError(f"message batch {batch_id!r} is still processing; cancel it first")
    await edge.gw.delete_batch(batch)
    for key in (batch.requests_key, items.custom_ids_key(batch.requests_key)):
        await edge.files.delete(key)
    return _answer(req, {"id": batch_id, "type": "message_batch_deleted"})


def _query(req: Request) -> dict[str, str]:
    raw = req.scope.get("query_string", b"").decode("latin-1")
    return {k: v[-1] for k, v in urllib.parse.parse_qs(raw).items()}


def page(ids: list[str], q: dict[str, str], limit: int) -> tuple[int, int]:
    """Anthropic's paging of a newest-first list: the slice ``[start, end)`` after ``after_id``
    (the next, older, page) or before ``before_id`` (the previous, newer, one); an unknown id: none."""
    if (after := q.get("after_id")) is not None:
        start = ids.index(after) + 1 if after in ids else len(ids)
        return start, min(start + limit, len(ids))
    if (before := q.get("before_id")) is not None:
        end = ids.index(before) if before in ids else 0
        return max(end - limit, 0), end
    return 0, min(limit, len(ids))


async def list_batches(edge: Edge, req: Request) -> Response:
    caller = authenticate(edge, req)
    q = _query(req)
    try:
        limit = int(q.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 1000:
        raise ValidationError("limit: must be an integer from 1 to 1000", param="limit")
    batches = [b for b in await edge.gw.tenant_batches(caller.tenant_id) if b.api == "anthropic"]
    start, end = page([b.batch_id for b in batches], q, limit)
    base = base_url(req)
    data = [batch_json(b, base) for b in batches[start:end]]
    more = start > 0 if "before_id" in q and "after_id" not in q else end < len(batches)
    return _answer(
        req,
        {
            "data": data,
            "has_more": more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        },
    )
