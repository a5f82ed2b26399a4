"""A batch's items' outcomes as each API's results, and the usage they add up to: pure
(README "Batches").

An item's outcome is its job record's (``item_outcome``); an item with no terminal record in an
ended batch never ran, and ended as the batch did (``stop_outcome``). Results are rendered from
the records every time they are read, in input order, so a running batch's results are those
of the items finished so far.

* OpenAI's output file: one line per succeeded item, ``{"id": "batch_req_<hex>", "custom_id",
  "response": {"status_code": 200, "request_id": <item id>, "body": <the chat.completion or
  embeddings list, as the sync route answers it>}, "error": null}``; its error file: the other
  items, errored ones with ``"response": {"status_code": <the error's HTTP status>, "request_id",
  "body": {"error": {message, type, param, code}}}``, canceled and expired ones with
  ``"response": null, "error": {"code": "batch_cancelled" | "batch_expired", "message"}``.
* Anthropic's results: ``{"custom_id", "result": {"type": "succeeded", "message": <as
  /v1/messages answers>} | {"type": "errored", "error": <Anthropic's error body>} |
  {"type": "canceled"} | {"type": "expired"}}``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from services.client.client import error_from
from services.contracts.errors import GatewayError, InternalError
from services.contracts.events import BatchUpdated, JobUpdated, ResultProduced
from services.runtime.batches import TERMINAL_BATCH_STATES, ItemStatus, item_id, item_outcome, stop_outcome

from ..errors import openai_body
from .anthropic_answer import message_json
from .anthropic_errors import error_object
from .chat import completion_json
from .embeddings import embeddings_json

Json = dict[str, Any]

#: The error of an item a cancel or the window stopped before it ran (OpenAI's words).
STOPPED: dict[str, tuple[str, str]] = {
    "canceled": ("batch_cancelled", "This request was cancelled before it could be executed."),
    "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one item ended: ``job`` is its terminal record (None: it never ran)."""

    index: int
    request_id: str
    custom_id: str
    status: ItemStatus
    job: JobUpdated | None


def outcomes(
    batch: BatchUpdated, jobs: Sequence[JobUpdated | None], custom_ids: Sequence[str] | None = None
) -> Iterator[Outcome]:
    """The finished items of ``batch`` in input order (``jobs[i]``: item i's record, if any).
    ``custom_ids`` names the items with no record, needed only once the batch has ended."""
    ended = batch.status in TERMINAL_BATCH_STATES
    for i, job in enumerate(jobs):
        status = item_outcome(job) if job is not None else None
        if status is None:
            if not ended:
                continue  # still to run, or running
            status = stop_outcome(batch.status)
            job = None
        cid = job.batch.custom_id if job is not None and job.batch is not None else None
        if cid is None:
            cid = custom_ids[i] if custom_ids is not None and i < len(custom_ids) else str(i)
        yield Outcome(i, item_id(batch.batch_id, i), cid, status, job)


def needs_custom_ids(batch: BatchUpdated, jobs: Sequence[JobUpdated | None]) -> bool:
    """Whether rendering needs the input's custom ids: an ended batch with items that never ran."""
    return batch.status in TERMINAL_BATCH_STATES and any(j is None or item_outcome(j) is None for j in jobs)


def line_id(request_id: str) -> str:
    """The ``batch_req_`` id of an item's result line: the same on every read."""
    return "batch_req_" + hashlib.sha256(request_id.encode()).hexdigest()[:32]


def _error(o: Outcome) -> GatewayError:
    job = o.job
    if job is not None and job.error is not None:
        return error_from(job.error, o.request_id)
    return InternalError("the item ended without a result")


def _result(o: Outcome) -> ResultProduced | None:
    return o.job.result if o.job is not None and o.status == "succeeded" else None


def answer_body(endpoint: str, result: ResultProduced, job: JobUpdated) -> Json:
    """The sync route's answer to the item: a ``chat.completion`` or an embeddings list."""
    model = job.model or result.alias or ""
    if endpoint == "/v1/embeddings":
        return embeddings_json(result, model)
    created = int((job.finished_at or job.created_at).timestamp())
    return completion_json(result, model, created)


def openai_line(endpoint: str, o: Outcome) -> tuple[bool, Json]:
    """(whether it belongs to the output file, not the error file; the line)."""
    line: Json = {"id": line_id(o.request_id), "custom_id": o.custom_id}
    result = _result(o)
    if result is not None and o.job is not None:
        body = answer_body(endpoint, result, o.job)
        line.update(response={"status_code": 200, "request_id": o.request_id, "body": body}, error=None)
        return True, line
    if o.status in STOPPED:
        code, message = STOPPED[o.status]
        line.update(response=None, error={"code": code, "message": message})
        return False, line
    err = _error(o)
    response = {"status_code": err.http_status, "request_id": o.request_id, "body": openai_body(err)}
    line.update(response=response, error=None)
    return False, line


def openai_file(endpoint: str, items: Iterator[Outcome], kind: str) -> bytes:
    """The output (``kind="output"``) or error (``"errors"``) file's bytes: JSONL."""
    want = kind == "output"
    out = bytearray()
    for o in items:
        good, line = openai_line(endpoint, o)
        if good == want:
            out += orjson.dumps(line) + b"\n"
    return bytes(out)


def anthropic_result(o: Outcome) -> Json:
    """One line of ``/v1/messages/batches/{id}/results``."""
    result = _result(o)
    res: Json
    if result is not None and o.job is not None:
        res = {"type": "succeeded", "message": message_json(result, o.job.model or result.alias or "")}
    elif o.status in ("canceled", "expired"):
        res = {"type": o.status}
    else:
        res = {"type": "errored", "error": error_object(_error(o), o.request_id)}
    return {"custom_id": o.custom_id, "result": res}


def anthropic_results(items: Iterator[Outcome]) -> bytes:
    return b"".join(orjson.dumps(anthropic_result(o)) + b"\n" for o in items)


def usage(jobs: Sequence[JobUpdated | None]) -> Json:
    """OpenAI's batch ``usage``: the token usage of the succeeded items' results, summed."""
    prompt = completion = total = cached = 0
    for job in jobs:
        if job is None or job.status != "completed" or job.result is None or job.result.usage is None:
            continue
        u = job.result.usage
        prompt += u.prompt_tokens
        completion += u.completion_tokens
        cached += u.cached_tokens
        total += u.total_tokens or u.prompt_tokens + u.completion_tokens
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": total,
    }
