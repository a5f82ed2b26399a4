"""``/v1/batches``: OpenAI's Batch API over the batch service (README "Batches").

* ``POST /v1/batches`` (``input_file_id``: a ``purpose=batch`` file of the caller's tenant;
  ``endpoint`` ``/v1/chat/completions`` | ``/v1/embeddings``; ``completion_window`` ``"24h"``;
  ``metadata``: at most 16 string pairs, keys up to 64 characters, values up to 512;
  ``output_expires_after`` accepted) reads the file, checks every line (``parse_jsonl``, then
  each body as its route would: ``batch_items``) and answers the ``Batch``: ``validating`` with
  the items written for the batch service, or ``failed`` with ``errors.data`` (``{code, message,
  param, line}``, the line 1-based) when a line was refused; nothing runs then.
* ``GET /v1/batches/{id}``, ``GET /v1/batches`` (``limit`` 1..100, default 20; ``after``; newest
  first), ``POST /v1/batches/{id}/cancel`` (``validating`` / ``in_progress``: ``cancelling``;
  ``cancelling``: the batch as it is; any other state: 409).
* The result files, ``output_file_id`` = ``file-<batch id>-output`` and ``error_file_id`` =
  ``file-<batch id>-errors``, are named from the start and read through the files API
  (``GET /v1/files/{id}``, ``/content``): rendered from the items' job records when read, so a
  running batch's files hold the items finished so far (an extension: OpenAI names them once
  the batch has ended).

Another tenant's batch id, or an Anthropic batch's, is ``batch_not_found`` (404); another
tenant's file id ``media_not_found`` (404), as in the files API.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from services.contracts.errors import ValidationError
from services.contracts.events import BatchLineError, BatchUpdated
from services.runtime.batches import (
    ENDPOINTS,
    MAX_ERRORS,
    STAMPS,
    BatchInputInvalid,
    BatchLine,
    LineError,
    error_file_id,
    moved,
    output_file_id,
    parse_jsonl,
)

from ..asgi import Request, Response, json_response
from ..auth import Caller
from ..errors import HTTPError
from . import batch_items as items
from .batch_files import find, unix
from .batch_results import usage
from .chat import parse_chat
from .embeddings import parse_embeddings
from .files import head_file

if TYPE_CHECKING:
    from ..context import Edge

Json = dict[str, Any]
WINDOW = "24h"
MAX_METADATA, MAX_KEY, MAX_VALUE = 16, 64, 512
CANCELLABLE = frozenset({"validating", "in_progress"})


def batch_json(b: BatchUpdated, use: Json) -> Json:
    """The ``Batch`` object (every field of the openai SDK's ``Batch``)."""
    c = b.counts
    ran = b.status != "failed"  # a batch refused in validation has no items and no files
    out: Json = {
        "id": b.batch_id,
        "object": "batch",
        "endpoint": b.endpoint,
        "model": b.model,
        "errors": {"object": "list", "data": [e.model_dump() for e in b.errors]} if b.errors else None,
        "input_file_id": b.input_file_id or "",
        "completion_window": WINDOW,
        "status": b.status,
        "output_file_id": output_file_id(b.batch_id) if ran else None,
        "error_file_id": error_file_id(b.batch_id) if ran else None,
        "created_at": unix(b.created_at),
        "expires_at": unix(b.expires_at),
        "request_counts": {
            "total": c.total,
            "completed": c.succeeded,
            "failed": c.errored + c.canceled + c.expired,
        },
        "usage": use,
        "metadata": b.metadata,
    }
    for stamp in STAMPS.values():
        out[stamp] = unix(getattr(b, stamp))
    return out


# --- create -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateCall:
    input_file_id: str
    endpoint: str
    metadata: dict[str, str] | None


def _bad(param: str, message: str) -> ValidationError:
    return ValidationError(f"{param}: {message}", param=param)


def check_metadata(value: Any) -> dict[str, str] | None:
    """OpenAI's ``metadata``: at most 16 pairs of strings, keys up to 64 characters, values up to 512."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _bad("metadata", "must be an object of string values")
    if len(value) > MAX_METADATA:
        raise _bad("metadata", f"at most {MAX_METADATA} pairs, got {len(value)}")
    for k, v in value.items():
        if len(k) > MAX_KEY:
            raise _bad("metadata", f"keys are at most {MAX_KEY} characters, {k[:20]!r}... is {len(k)}")
        if len(v) > MAX_VALUE:
            raise _bad("metadata", f"values are at most {MAX_VALUE} characters, that of {k!r} is {len(v)}")
    return value


def parse_create(body: Json) -> CreateCall:
    """Check a ``POST /v1/batches`` body; ``ValidationError`` names the field."""
    file_id = body.get("input_file_id")
    if not isinstance(file_id, str) or not file_id:
        raise _bad("input_file_id", "required, a file id")
    endpoint = body.get("endpoint")
    if endpoint not in ENDPOINTS:
        raise _bad("endpoint", f"must be one of {', '.join(sorted(ENDPOINTS))}, got {endpoint!r}")
    if body.get("completion_window") != WINDOW:
        raise _bad("completion_window", f"must be {WINDOW!r}, got {body.get('completion_window')!r}")
    expiry = body.get("output_expires_after")
    if expiry is not None:
        seconds = expiry.get("seconds") if isinstance(expiry, dict) else None
        if (
            not isinstance(expiry, dict)
            or expiry.get("anchor") != "created_at"
            or type(seconds) is not int
            or not 3600 <= seconds <= 2_592_000
        ):
            raise _bad("output_expires_after", "anchor 'created_at' and seconds from 3600 to 2592000")
    return CreateCall(file_id, endpoint, check_metadata(body.get("metadata")))


def line_items(
    edge: Edge, caller: Caller, batch_id: str, endpoint: str, lines: list[BatchLine]
) -> tuple[list[items.Item], list[LineError]]:
    """Each line's item, as its route would make the request; the lines it refuses."""
    out: list[items.Item] = []
    errors: list[LineError] = []
    for i, line in enumerate(lines):
        try:
            if endpoint == "/v1/embeddings":
                out.append(
                    items.embed_item(edge, caller, parse_embeddings(line.body), batch_id, line.custom_id, i)
                )
            else:
                out.append(items.chat_item(edge, caller, parse_chat(line.body), batch_id, line.custom_id, i))
        except ValidationError as exc:
            param = f"body.{exc.param}" if exc.param else "body"
            errors.append(LineError("invalid_request", line.line, f"body.{exc.message}", param))
            if len(errors) >= MAX_ERRORS:
                break
    return out, errors


async def _input(edge: Edge, req: Request, file_id: str) -> bytes:
    key, stored = await head_file(edge, req, file_id)
    if stored.metadata.get("purpose") != "batch":
        raise _bad(
            "input_file_id", f"file {file_id!r} has purpose {stored.metadata.get('purpose')!r}, not 'batch'"
        )
    limit = edge.config.batches.max_file_bytes
    if stored.bytes > limit:
        raise _bad("input_file_id", f"the input file has {stored.bytes} bytes, more than the {limit} allowed")
    return await edge.files.get(key)


async def create_batch(edge: Edge, req: Request) -> Response:
    caller = req.caller
    assert caller is not None
    call = parse_create(req.json())
    data = await _input(edge, req, call.input_file_id)
    batch_id = items.openai_batch_id()
    try:
        lines = parse_jsonl(data, call.endpoint, max_lines=edge.config.batches.max_lines)
        made, errors = line_items(edge, caller, batch_id, call.endpoint, lines)
    except BatchInputInvalid as exc:
        made, errors = [], exc.errors
    if errors:
        key = items.requests_key(caller.tenant_id, batch_id)  # (nothing is written there)
        made = []
    else:
        await items.claim_media(edge, caller, made)
        key = await items.write_requests(edge, caller.tenant_id, batch_id, made)
    record = items.created(
        edge,
        caller,
        api="openai",
        batch_id=batch_id,
        endpoint=call.endpoint,
        items=made,
        key=key,
        input_file_id=call.input_file_id,
        metadata=call.metadata,
    )
    if errors:  # refused in validation: it ends here, and nothing runs
        refused = [BatchLineError(**e.json()) for e in errors]
        record = record.model_copy(
            update={"status": "failed", "failed_at": record.created_at, "errors": refused}
        )
    record = await edge.gw.publish_batch(record)
    return json_response(200, batch_json(record, usage([])))


# --- read, list, cancel -------------------------------------------------------------------------


async def answer(edge: Edge, batch: BatchUpdated) -> Json:
    """The ``Batch`` with its usage so far (summed from its items' results)."""
    return batch_json(batch, usage(await edge.gw.batch_jobs(batch)))


async def get_batch(edge: Edge, req: Request) -> Response:
    assert req.caller is not None
    batch_id = req.params["batch_id"]
    if "/" in batch_id:
        raise HTTPError(404, f"Invalid URL (GET /v1/batches/{batch_id})")
    return json_response(200, await answer(edge, await find(edge, req.caller, batch_id)))


async def cancel_batch(edge: Edge, req: Request) -> Response:
    """``POST /v1/batches/{id}/cancel`` (the route's parameter holds ``{id}/cancel``)."""
    assert req.caller is not None
    batch_id, _, action = req.params["batch_id"].partition("/")
    if action != "cancel":
        raise HTTPError(404, f"Invalid URL (POST /v1/batches/{req.params['batch_id']})")
    batch = await find(edge, req.caller, batch_id)
    if batch.status in CANCELLABLE:
        batch = await edge.gw.publish_batch(moved(batch, "cancelling"))
    elif batch.status != "cancelling":
        raise HTTPError(409, f"Cannot cancel a batch with status '{batch.status}'.")
    return json_response(200, await answer(edge, batch))


def _query(req: Request) -> dict[str, str]:
    raw = req.scope.get("query_string", b"").decode("latin-1")
    return {k: v[-1] for k, v in urllib.parse.parse_qs(raw).items()}


def page_after(ids: list[str], after: str | None, limit: int) -> tuple[int, int]:
    """The slice ``[start, end)`` of a newest-first list a page after ``after`` takes (an unknown
    ``after``: none)."""
    start = 0
    if after is not None:
        start = ids.index(after) + 1 if after in ids else len(ids)
    return start, min(start + limit, len(ids))


async def list_batches(edge: Edge, req: Request) -> Response:
    assert req.caller is not None
    q = _query(req)
    try:
        limit = int(q.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise _bad("limit", "must be an integer from 1 to 100")
    batches = [b for b in await edge.gw.tenant_batches(req.caller.tenant_id) if b.api == "openai"]
    start, end = page_after([b.batch_id for b in batches], q.get("after"), limit)
    data = [await answer(edge, b) for b in batches[start:end]]
    return json_response(
        200,
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": end < len(batches),
        },
    )
