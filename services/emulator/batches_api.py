"""OpenAI's Batch API, emulated; :func:`routes` also mounts the Files API (:mod:`.openai_files`)
and Anthropic's Message Batches (:mod:`.message_batches_api`).

``POST /v1/batches`` (``input_file_id`` of a ``purpose=batch`` file, ``endpoint``
``/v1/chat/completions`` or ``/v1/embeddings``, ``completion_window`` ``"24h"``, optional
``metadata`` of at most 16 pairs and ``output_expires_after``) answers the ``Batch``, then
``GET /v1/batches/{id}`` recomputes it from the app's clock (:mod:`.batch_clock`): ``validating``
→ ``in_progress`` (``request_counts`` ``{total, completed, failed}`` advancing at
``batch_items_per_s``) → ``finalizing`` → ``completed``; or ``failed`` (validation errors in
``errors.data``: ``{code, message, param, line}``), ``expired`` (past ``batch_window_s``), or,
after ``POST /v1/batches/{id}/cancel`` (409 unless ``validating`` / ``in_progress``; again while
``cancelling``: the batch as it is), ``cancelling`` → ``cancelled``. ``GET /v1/batches`` lists
(``limit`` up to 100, default 20; ``after``), newest first.

Input file lines are ``{"custom_id", "method": "POST", "url": <endpoint>, "body"}``; a line that
is not such a JSON object, a duplicate or missing ``custom_id``, another ``url``, or more than
:data:`MAX_REQUESTS` lines fail the batch in validation (codes ``invalid_json_line``,
``missing_custom_id``, ``duplicate_custom_id``, ``invalid_method``, ``mismatched_url``,
``missing_body``, ``too_many_requests``, ``empty_file``; scenario ``batch_fail=1``:
``emulator_batch_fail``). Each valid request is answered by the single-request handler
(:mod:`.batch_work`) with its body's ``model`` minus the batch keys; ``stream`` is ignored.

Once ``completed``, ``cancelled`` or ``expired`` the batch has its result files (``purpose:
"batch_output"``, read through ``GET /v1/files/{id}/content``): ``output_file_id`` holds the
lines of requests answered 200, ``error_file_id`` the others, in request order, each
``{"id": "batch_req_...", "custom_id", "response": {"status_code", "request_id", "body"},
"error": null}``; requests a cancel or the window stopped are in the error file as ``"response":
null, "error": {"code": "batch_cancelled" | "batch_expired", "message"}`` and then count as
``failed`` (so ``completed + failed == total`` at the end). A file id is null when it would be
empty. ``usage`` sums the 200 answers' token usage; ``model`` is the first request's bare model.
State is per app (``app.state.openai_batches``). Errors are OpenAI's error objects.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import message_batches_api, openai_api, openai_files, text
from .batch_clock import CANCELLABLE, Phase, Timeline
from .batch_work import BatchWork, Endpoint, Outcome, call_handler
from .common import BadRequest, json_response, read_json, scenario_header
from .cursor_page import page
from .job_scenario import JobScenario, app_store, batch_header, clock, split, strip_model
from .openai_api import error
from .scenario import ScenarioError, split_model

BATCHES_KEPT = 1000
MAX_REQUESTS = 50_000
MAX_ERRORS = 100
ENDPOINTS: dict[str, Endpoint] = {
    "/v1/chat/completions": openai_api.chat_completions,
    "/v1/embeddings": openai_api.embeddings,
}
SPEC_ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
STOPPED = {
    "cancelled": ("batch_cancelled", "This request was cancelled before it could be executed."),
    "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
}


@dataclass(frozen=True, slots=True)
class Line:
    custom_id: str
    body: dict[str, Any]


def _line_error(code: str, message: str, line: int | None, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def parse_input(data: bytes, endpoint: str) -> tuple[list[Line], list[dict[str, Any]]]:
    """The requests of a batch input file and its validation errors (``line`` is 1-based)."""
    lines: list[Line] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    raw_lines = [(n, raw) for n, raw in enumerate(data.splitlines(), start=1) if raw.strip()]
    if not raw_lines:
        return [], [_line_error("empty_file", "The batch input file is empty.", None)]
    if len(raw_lines) > MAX_REQUESTS:
        return [], [
            _line_error("too_many_requests", f"A batch may hold at most {MAX_REQUESTS} requests.", None)
        ]
    for number, raw in raw_lines:
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError:
            item = None
        problem = _check_line(item, endpoint, seen, number)
        if problem is not None:
            errors.append(problem)
            if len(errors) >= MAX_ERRORS:
                break
            continue
        assert isinstance(item, dict)
        seen.add(item["custom_id"])
        lines.append(Line(item["custom_id"], item["body"]))
    return lines, errors


def _check_line(item: Any, endpoint: str, seen: set[str], number: int) -> dict[str, Any] | None:
    if not isinstance(item, dict):
        return _line_error("invalid_json_line", "This line is not a valid JSON object.", number)
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return _line_error(
            "missing_custom_id", "Each request needs a non-empty 'custom_id'.", number, "custom_id"
        )
    if custom_id in seen:
        return _line_error(
            "duplicate_custom_id", f"The custom_id '{custom_id}' is used twice.", number, "custom_id"
        )
    if item.get("method") != "POST":
        return _line_error("invalid_method", "Each request's 'method' must be 'POST'.", number, "method")
    if item.get("url") != endpoint:
        return _line_error(
            "mismatched_url", f"The request's 'url' must be the batch's endpoint '{endpoint}'.", number, "url"
        )
    if not isinstance(item.get("body"), dict):
        return _line_error("missing_body", "Each request needs a JSON object 'body'.", number, "body")
    return None


@dataclass
class OpenAIBatch:
    """One batch: its request, its work (:class:`.batch_work.BatchWork`) and its result files."""

    id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, Any] | None
    created_at: int
    model: str | None
    lines: list[Line]
    errors: list[dict[str, Any]]
    work: BatchWork
    output_expires_after: int | None = None
    files: dict[str, str | None] = field(default_factory=dict)

    def unix(self, at: float) -> int:
        return int(self.created_at + (at - self.work.timeline.started))


def _batches(request: Request) -> OrderedDict[str, OpenAIBatch]:
    batches: OrderedDict[str, OpenAIBatch] = app_store(request, "openai_batches", OrderedDict)
    return batches


def _unanswered() -> Response:
    return error(500)


def _runner(request: Request, batch_id: str, endpoint: str, lines: list[Line]) -> Any:
    handler = ENDPOINTS[endpoint]
    path = f"/v1/batches/{batch_id}"

    async def run(index: int) -> Outcome:
        body = {k: v for k, v in lines[index].body.items() if k not in ("stream", "stream_options")}
        if isinstance(body.get("model"), str):
            try:
                body["model"] = strip_model(body["model"])
            except ScenarioError as exc:
                return Outcome(400, orjson.loads(error(400, str(exc), param="model").body), None)
        return await call_handler(request, handler, path, body, _unanswered)

    return run


def _result_line(line: Line, outcome: Outcome | None, stopped: str | None) -> bytes:
    entry: dict[str, Any] = {"id": text.new_id("batch_req_"), "custom_id": line.custom_id}
    if outcome is None:
        code, message = STOPPED[stopped or "cancelled"]
        entry.update(response=None, error={"code": code, "message": message})
    else:
        entry.update(
            response={"status_code": outcome.status, "request_id": outcome.request_id, "body": outcome.body},
            error=None,
        )
    return orjson.dumps(entry) + b"\n"


def _write_files(request: Request, batch: OpenAIBatch, phase: Phase) -> None:
    """Make the output and error files once the batch ended (not for a failed validation)."""
    if batch.files or phase.status == "failed":
        return
    good: list[bytes] = []
    bad: list[bytes] = []
    outcomes = batch.work.outcomes
    for index, line in enumerate(batch.lines):
        outcome = outcomes[index] if index < len(outcomes) else None
        (good if outcome is not None and outcome.ok else bad).append(
            _result_line(line, outcome, phase.status)
        )
    for key, rows, suffix in (("output_file_id", good, "output"), ("error_file_id", bad, "error")):
        batch.files[key] = None
        if rows:
            stored = openai_files.add_file(
                request,
                f"batch_{batch.id}_{suffix}.jsonl",
                "batch_output",
                b"".join(rows),
                batch.output_expires_after,
            )
            batch.files[key] = stored.id


def _usage(outcomes: list[Outcome]) -> dict[str, Any]:
    prompt = completion = cached = reasoning = 0
    for outcome in outcomes:
        usage = outcome.body.get("usage") if outcome.ok and isinstance(outcome.body, dict) else None
        if not isinstance(usage, dict):
            continue
        prompt += usage.get("prompt_tokens", 0)
        completion += usage.get("completion_tokens", 0)
        cached += (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        reasoning += (usage.get("completion_tokens_details") or {}).get("reasoning_tokens", 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


async def view(request: Request, batch: OpenAIBatch) -> dict[str, Any]:
    """The ``Batch`` object now (answering every request finished by now first)."""
    phase = await batch.work.catch_up(clock(request))
    if phase.terminal:
        _write_files(request, batch, phase)
    done = batch.work.outcomes[: phase.finished]
    completed = sum(1 for o in done if o.ok)
    failed = len(done) - completed
    total = 0 if batch.errors else len(batch.lines)
    if phase.status in STOPPED:
        failed += total - len(done)
    stamps: dict[str, int | None] = dict.fromkeys(_STAMPS)
    stamps.update({key: batch.unix(at) for key, at in phase.times.items()})
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "model": batch.model,
        "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": phase.status,
        "output_file_id": batch.files.get("output_file_id"),
        "error_file_id": batch.files.get("error_file_id"),
        "created_at": batch.created_at,
        "expires_at": batch.unix(batch.work.timeline.window_end),
        **stamps,
        "request_counts": {"total": total, "completed": completed, "failed": failed},
        "usage": _usage(done),
        "metadata": batch.metadata,
    }


_STAMPS = (
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


def _check_create(body: dict[str, Any]) -> tuple[str, str, str, dict[str, Any] | None, int | None]:
    input_file_id, endpoint, window = (
        body.get("input_file_id"),
        body.get("endpoint"),
        body.get("completion_window"),
    )
    if not isinstance(input_file_id, str) or not input_file_id:
        raise BadRequest("Missing required parameter: 'input_file_id'.", param="input_file_id")
    if endpoint not in SPEC_ENDPOINTS:
        listed = ", ".join(f"'{e}'" for e in SPEC_ENDPOINTS)
        raise BadRequest(f"Invalid value for 'endpoint': expected one of {listed}.", param="endpoint")
    if endpoint not in ENDPOINTS:
        raise BadRequest(
            f"The emulator does not batch '{endpoint}' (only {', '.join(ENDPOINTS)}).", param="endpoint"
        )
    if window != "24h":
        raise BadRequest(
            "Invalid value for 'completion_window': only '24h' is supported.", param="completion_window"
        )
    metadata = body.get("metadata")
    if metadata is not None and (
        not isinstance(metadata, dict)
        or len(metadata) > 16
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise BadRequest("Invalid 'metadata': at most 16 string pairs.", param="metadata")
    expiry = body.get("output_expires_after")
    seconds = None
    if expiry is not None:
        seconds = expiry.get("seconds") if isinstance(expiry, dict) else None
        if (
            not isinstance(seconds, int)
            or not 3600 <= seconds <= 2_592_000
            or expiry.get("anchor") != "created_at"
        ):
            raise BadRequest(
                "Invalid 'output_expires_after': anchor 'created_at' and seconds 3600..2592000.",
                param="output_expires_after",
            )
    return input_file_id, endpoint, window, metadata, seconds


def _job(lines: list[Line], header: str | None) -> tuple[JobScenario, str | None]:
    """The batch keys (first request's model, then the header) and that request's bare model."""
    model = lines[0].body.get("model") if lines else None
    if not isinstance(model, str):
        return split("", header)[1], None
    _, job, _ = split(model, header)
    return job, split_model(model)[0]


async def create(request: Request) -> Response:
    """``POST /v1/batches``."""
    try:
        body = await read_json(request)
        input_file_id, endpoint, window, metadata, expires_after = _check_create(body)
        stored = openai_files.get_file(request, input_file_id)
        if stored is None:
            return openai_files.not_found(input_file_id, "input_file_id")
        if stored.purpose != "batch":
            raise BadRequest(
                f"The file '{input_file_id}' has purpose '{stored.purpose}', not 'batch'.",
                param="input_file_id",
            )
        lines, errors = parse_input(stored.data, endpoint)
        job, model = _job(lines, batch_header(lines[0].body if lines else None, scenario_header(request)))
    except BadRequest as exc:
        return error(400, exc.message, param=exc.param)
    except ScenarioError as exc:
        return error(400, str(exc))
    if job.batch_fail and not errors:
        errors = [
            _line_error("emulator_batch_fail", "The emulator failed this batch (scenario batch_fail).", None)
        ]
    batch_id = text.new_id("batch_")
    now = clock(request)
    timeline = Timeline(now, len(lines), job, invalid=bool(errors))
    runner = _runner(request, batch_id, endpoint, lines)
    batch = OpenAIBatch(
        batch_id,
        endpoint,
        input_file_id,
        window,
        metadata,
        int(time.time()),
        model,
        lines,
        errors,
        BatchWork(timeline, runner),
        expires_after,
    )
    batches = _batches(request)
    batches[batch_id] = batch
    while len(batches) > BATCHES_KEPT:
        batches.popitem(last=False)
    return json_response(await view(request, batch))


def _not_found(batch_id: str) -> Response:
    return error(404, f"No batch found with id '{batch_id}'.", param="batch_id", code=None)


async def retrieve(request: Request) -> Response:
    batch = _batches(request).get(request.path_params["batch_id"])
    if batch is None:
        return _not_found(request.path_params["batch_id"])
    return json_response(await view(request, batch))


async def cancel(request: Request) -> Response:
    """``POST /v1/batches/{id}/cancel``: stop what has not finished."""
    batch = _batches(request).get(request.path_params["batch_id"])
    if batch is None:
        return _not_found(request.path_params["batch_id"])
    now = clock(request)
    phase = await batch.work.catch_up(now)
    if phase.status not in (*CANCELLABLE, "cancelling"):
        return error(409, f"Cannot cancel a batch with status '{phase.status}'.")
    if phase.status != "cancelling":
        batch.work.cancel(now)
    return json_response(await view(request, batch))


async def list_batches(request: Request) -> Response:
    newest_first = [await view(request, b) for b in reversed(_batches(request).values())]
    try:
        listed = page(newest_first, request.query_params, default_limit=20, max_limit=100)
    except BadRequest as exc:
        return error(400, exc.message, param=exc.param)
    return json_response(listed)


def routes() -> list[Route]:
    """OpenAI batches and files, and Anthropic message batches."""
    return [
        Route("/v1/batches", create, methods=["POST"]),
        Route("/v1/batches", list_batches, methods=["GET"]),
        Route("/v1/batches/{batch_id}", retrieve, methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", cancel, methods=["POST"]),
        *openai_files.routes(),
        *message_batches_api.routes(),
    ]
