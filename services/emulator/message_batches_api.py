"""Anthropic's Message Batches API, emulated (mounted by :func:`.batches_api.routes`).

``POST /v1/messages/batches`` (``{"requests": [{"custom_id", "params"}, ...]}``: 1..
:data:`MAX_REQUESTS` requests, ``custom_id`` matching ``^[a-zA-Z0-9_-]{1,64}$`` and unique,
``params`` a Messages request without ``stream: true``; else 400) answers the
``message_batch``. Its progress follows :mod:`.batch_clock` with the batch keys of
:mod:`.job_scenario` (``validating`` and ``finalizing`` show as ``in_progress``):
``processing_status`` ``in_progress`` → ``ended``, or after ``POST .../{id}/cancel`` (400 once
ended) ``canceling`` → ``ended``. ``request_counts`` ``{processing, succeeded, errored, canceled,
expired}`` always sum to the request count; finished requests move out of ``processing`` as they
finish (the real API may only move them at the end), the requests a cancel or the window
stopped become ``canceled`` / ``expired`` once the batch ended.

Once ended, ``results_url`` is ``<base>/v1/messages/batches/{id}/results``: JSONL of
``{"custom_id", "result": {"type": "succeeded", "message"} | {"type": "errored", "error":
{"type": "error", "error": {"type", "message"}, "request_id"}} | {"type": "canceled"} |
{"type": "expired"}}``, in no fixed order: shuffled deterministically by ``batch_seed``
(default 0), the same order on every read. Each request is answered by
:func:`.anthropic_api.messages` in-process (:mod:`.batch_work`), its ``params.model`` minus
the batch keys. Before the end the results are a 404. ``GET /v1/messages/batches`` lists newest
first (``limit`` 1..1000, default 20; ``after_id`` / ``before_id``); ``DELETE
/v1/messages/batches/{id}`` of an ended batch answers ``{"id", "type": "message_batch_deleted"}``
(400 while processing). Times are RFC 3339 (UTC). State is per app
(``app.state.anthropic_batches``). Errors are Anthropic's ``{"type": "error", "error": {...}}``.
"""

from __future__ import annotations

import random
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import anthropic_api, text
from .batch_clock import CANCELLABLE, Phase, Timeline
from .batch_work import BatchWork, Outcome, call_handler
from .common import BadRequest, json_response, read_json, scenario_header
from .job_scenario import app_store, batch_header, clock, split, strip_model
from .scenario import ScenarioError

BATCHES_KEPT = 1000
MAX_REQUESTS = 100_000
_CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_STATUS = {"cancelling": "canceling", "cancelled": "ended", "completed": "ended", "expired": "ended"}


@dataclass
class MessageBatch:
    id: str
    custom_ids: list[str]
    created_at: float
    work: BatchWork
    seed: int
    order: list[int] = field(default_factory=list)

    def stamp(self, at: float | None) -> str | None:
        if at is None:
            return None
        unix = self.created_at + (at - self.work.timeline.started)
        return datetime.fromtimestamp(unix, UTC).isoformat().replace("+00:00", "Z")


def _batches(request: Request) -> OrderedDict[str, MessageBatch]:
    batches: OrderedDict[str, MessageBatch] = app_store(request, "anthropic_batches", OrderedDict)
    return batches


def _unanswered() -> Response:
    return anthropic_api.error(500)


def _requests(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise BadRequest("requests: List should have at least 1 item after validation")
    if len(requests) > MAX_REQUESTS:
        raise BadRequest(f"requests: List should have at most {MAX_REQUESTS} items after validation")
    out: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for i, item in enumerate(requests):
        if not isinstance(item, dict):
            raise BadRequest(f"requests.{i}: Input should be a valid dictionary")
        custom_id, params = item.get("custom_id"), item.get("params")
        if not isinstance(custom_id, str) or not _CUSTOM_ID.fullmatch(custom_id):
            raise BadRequest(f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        if custom_id in seen:
            raise BadRequest(f"requests.{i}.custom_id: Duplicate custom_id '{custom_id}'")
        if not isinstance(params, dict):
            raise BadRequest(f"requests.{i}.params: Input should be a valid dictionary")
        if params.get("stream") is True:
            raise BadRequest(f"requests.{i}.params.stream: Streaming is not supported in message batches")
        seen.add(custom_id)
        out.append((custom_id, params))
    return out


def _runner(request: Request, batch_id: str, params: list[dict[str, Any]]) -> Any:
    path = f"/v1/messages/batches/{batch_id}"

    async def run(index: int) -> Outcome:
        body = dict(params[index])
        if isinstance(body.get("model"), str):
            try:
                body["model"] = strip_model(body["model"])
            except ScenarioError as exc:
                return Outcome(400, orjson.loads(anthropic_api.error(400, str(exc)).body), None)
        return await call_handler(request, anthropic_api.messages, path, body, _unanswered)

    return run


def _counts(batch: MessageBatch, phase: Phase) -> dict[str, int]:
    done = batch.work.outcomes[: phase.finished]
    succeeded = sum(1 for o in done if o.ok)
    counts = {
        "processing": 0,
        "succeeded": succeeded,
        "errored": len(done) - succeeded,
        "canceled": 0,
        "expired": 0,
    }
    rest = len(batch.custom_ids) - len(done)
    if phase.status == "cancelled":
        counts["canceled"] = rest
    elif phase.status == "expired":
        counts["expired"] = rest
    else:
        counts["processing"] = rest
    return counts


async def view(request: Request, batch: MessageBatch) -> dict[str, Any]:
    """The ``message_batch`` object now (answering every request finished by now first)."""
    phase = await batch.work.catch_up(clock(request))
    status = _STATUS.get(phase.status, "in_progress")
    ended = status == "ended"
    times = phase.times
    ended_at = times.get("completed_at") or times.get("cancelled_at") or times.get("expired_at")
    base = str(request.base_url).rstrip("/")
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": _counts(batch, phase),
        "ended_at": batch.stamp(ended_at) if ended else None,
        "created_at": batch.stamp(batch.work.timeline.started),
        "expires_at": batch.stamp(batch.work.timeline.window_end),
        "archived_at": None,
        "cancel_initiated_at": batch.stamp(times.get("cancelling_at")),
        "results_url": f"{base}/v1/messages/batches/{batch.id}/results" if ended else None,
    }


async def create(request: Request) -> Response:
    """``POST /v1/messages/batches``."""
    try:
        requests = _requests(await read_json(request))
        first = requests[0][1].get("model")
        header = batch_header(requests[0][1], scenario_header(request))
        job = split(first if isinstance(first, str) else "", header)[1]
    except BadRequest as exc:
        return anthropic_api.error(400, exc.message)
    except ScenarioError as exc:
        return anthropic_api.error(400, str(exc))
    batch_id = text.new_id("msgbatch_")
    now = clock(request)
    work = BatchWork(Timeline(now, len(requests), job), _runner(request, batch_id, [p for _, p in requests]))
    batch = MessageBatch(batch_id, [c for c, _ in requests], time.time(), work, job.batch_seed)
    batches = _batches(request)
    batches[batch_id] = batch
    while len(batches) > BATCHES_KEPT:
        batches.popitem(last=False)
    return json_response(await view(request, batch))


def _not_found(batch_id: str) -> Response:
    return anthropic_api.error(404, f"No message batch found with id '{batch_id}'.")


def _find(request: Request) -> MessageBatch | Response:
    """The batch named by the path, or the 404 to answer."""
    batch_id = request.path_params["batch_id"]
    return _batches(request).get(batch_id) or _not_found(batch_id)


async def retrieve(request: Request) -> Response:
    batch = _find(request)
    if isinstance(batch, Response):
        return batch
    return json_response(await view(request, batch))


async def cancel(request: Request) -> Response:
    """``POST /v1/messages/batches/{id}/cancel``: stop what has not finished."""
    batch = _find(request)
    if isinstance(batch, Response):
        return batch
    now = clock(request)
    phase = await batch.work.catch_up(now)
    if phase.status in (*CANCELLABLE, "finalizing"):  # finalizing: every request is done already
        batch.work.cancel(now)
    elif phase.status != "cancelling":
        return anthropic_api.error(
            400, f"Message batch '{batch.id}' has already ended; it cannot be canceled."
        )
    return json_response(await view(request, batch))


def _result(custom_id: str, outcome: Outcome | None, status: str) -> bytes:
    result: dict[str, Any]
    if outcome is None:
        result = {"type": "canceled" if status == "cancelled" else "expired"}
    elif outcome.ok:
        result = {"type": "succeeded", "message": outcome.body}
    else:
        result = {"type": "errored", "error": outcome.body}
    return orjson.dumps({"custom_id": custom_id, "result": result}) + b"\n"


async def results(request: Request) -> Response:
    """``GET /v1/messages/batches/{id}/results``: JSONL, shuffled by the batch's seed."""
    batch = _find(request)
    if isinstance(batch, Response):
        return batch
    phase = await batch.work.catch_up(clock(request))
    if _STATUS.get(phase.status) != "ended":
        return anthropic_api.error(404, f"Message batch '{batch.id}' has not ended: no results yet.")
    if not batch.order:
        batch.order = list(range(len(batch.custom_ids)))
        random.Random(batch.seed).shuffle(batch.order)
    outcomes = batch.work.outcomes
    body = b"".join(
        _result(batch.custom_ids[i], outcomes[i] if i < len(outcomes) else None, phase.status)
        for i in batch.order
    )
    return Response(body, media_type="application/x-jsonl")


async def delete(request: Request) -> Response:
    batch = _find(request)
    if isinstance(batch, Response):
        return batch
    phase = await batch.work.catch_up(clock(request))
    if _STATUS.get(phase.status) != "ended":
        return anthropic_api.error(400, f"Message batch '{batch.id}' is still processing; cancel it first.")
    del _batches(request)[batch.id]
    return json_response({"id": batch.id, "type": "message_batch_deleted"})


async def list_batches(request: Request) -> Response:
    params = request.query_params
    try:
        limit = int(params.get("limit", 20))
    except ValueError:
        return anthropic_api.error(400, "limit: Input should be a valid integer")
    if not 1 <= limit <= 1000:
        return anthropic_api.error(400, "limit: Input should be between 1 and 1000")
    newest_first = list(reversed(_batches(request).values()))
    ids = [b.id for b in newest_first]
    if (after := params.get("after_id")) is not None:
        newest_first = newest_first[ids.index(after) + 1 :] if after in ids else []
        chosen = newest_first[:limit]
    elif (before := params.get("before_id")) is not None:
        newest_first = newest_first[: ids.index(before)] if before in ids else []
        chosen = newest_first[-limit:]
    else:
        chosen = newest_first[:limit]
    data = [await view(request, b) for b in chosen]
    return json_response(
        {
            "data": data,
            "has_more": len(newest_first) > len(chosen),
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


def routes() -> list[Route]:
    return [
        Route("/v1/messages/batches", create, methods=["POST"]),
        Route("/v1/messages/batches", list_batches, methods=["GET"]),
        Route("/v1/messages/batches/{batch_id}", retrieve, methods=["GET"]),
        Route("/v1/messages/batches/{batch_id}", delete, methods=["DELETE"]),
        Route("/v1/messages/batches/{batch_id}/cancel", cancel, methods=["POST"]),
        Route("/v1/messages/batches/{batch_id}/results", results, methods=["GET"]),
    ]
