"""Google Gemini API v1beta (``generateContent``, ``streamGenerateContent``, Files API), emulated.

``POST /v1beta/models/{model}:generateContent`` answers one ``GenerateContentResponse``:
``{"candidates": [{"content": {"parts": [...], "role": "model"}, "finishReason", "index": 0}],
"usageMetadata": {"promptTokenCount", "candidatesTokenCount", "totalTokenCount",
"promptTokensDetails", "cachedContentTokenCount"?}, "modelVersion", "responseId"}``.
``:streamGenerateContent?alt=sse`` sends the same answer as SSE ``data: {response}`` events,
one per piece (text) or per call (tools), each with the usage so far; the last one carries
``finishReason`` and the whole usage. Without ``alt=sse`` the stream is one JSON array, as the
real API sends it. ``GET /v1beta/models[/{model}]`` lists the models.

The model name in the path carries the scenario (:mod:`.scenario`), like every wire format
here, as do the ``x-emulator-scenario`` header and the ``emulator_scenario`` body field. The
key (``x-goog-api-key`` header or ``key`` query parameter) is not checked: the call log entry
says where it came (``"auth": "header" | "query" | null``).

Like the real API, the request is checked: unknown top-level fields, roles other than ``user``
/ ``model``, parts that are not exactly one of ``text`` / ``inlineData`` / ``fileData`` /
``functionCall`` / ``functionResponse`` (so the gateway's ``media`` key is refused), base64
that does not decode, a body over :data:`MAX_REQUEST_BYTES` (20 MiB), a ``fileData`` naming a
Files API file this emulator does not have (403), a function-response turn that does not
follow a function-call turn or answers another number of calls: all 400s. Camel-case and
snake-case field names are both read, as by the real API.

Answers: ``tokens`` words (scenario ``echo``: the last user turn's text). A text answer that
is not ``echo`` starts with one note per media part of the request, in order (the notes
joined by ``"; "`` and ended by a newline, one piece per word), so a test sees what reached
the provider: ``saw <mime> <n> bytes`` for ``inlineData`` (decoded bytes) and for uploaded
files (their size), ``saw <image|audio|video|document> url <host>`` for other ``fileData``
URIs. The call log entry lists the notes as ``media``. ``generationConfig.maxOutputTokens``
cuts text and JSON answers (``finishReason: "MAX_TOKENS"``).

Tools: ``functionDeclarations`` (``parameters`` in Gemini's schema, upper-case types allowed,
or ``parametersJsonSchema``) are called per the scenario's ``tool`` / ``tools`` (counts as in
:mod:`.tools`); ``toolConfig.functionCallingConfig.mode`` ``NONE`` gives text, ``ANY`` at
least one call, ``allowedFunctionNames`` limits the calls to those. The answer is one
``{"functionCall": {"name", "args"}}`` part per call (no ids, as Gemini 2.x sends them),
``finishReason: "STOP"``, ``candidatesTokenCount`` = the argument pieces. Structured output:
``responseMimeType: "application/json"`` answers the JSON of :func:`~.schemas.example` of
``responseJsonSchema`` (or ``responseSchema``; none: ``{"answer": ...}``), or with
``schema_violation=1`` :func:`~.schemas.violation`.

Usage: the prompt is :func:`~.text.count_prompt_tokens` of the turns' text parts (the system
instruction one more turn); ``cached=N`` reports ``cachedContentTokenCount = min(N, prompt)``,
part of ``promptTokenCount`` as with Gemini. Errors are ``{"error": {"code", "message",
"status"}}`` (429 adds a ``RetryInfo`` detail when the scenario has ``retry_after_ms``).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import gemini_files, text, tools
from .common import (
    GONE,
    BadRequest,
    Drop,
    Silent,
    Stream,
    answered,
    generation_delay,
    json_response,
    preflight,
    record_call,
    retry_headers,
    scenario_spec,
)
from .gemini_files import ApiError, error
from .gemini_request import (
    MAX_REQUEST_BYTES,
    REQUEST_FIELDS,
    check_fields,
    generation,
    last_user_text,
    plan_calls,
    read_body,
    read_turns,
)
from .scenario import Scenario, ScenarioError, resolve

__all__ = ["MAX_REQUEST_BYTES", "routes"]

API_VERSION = "v1beta"
MODELS = ("gemini-emu", "gemini-emu-flash")


# --- the answer --------------------------------------------------------------------------------------


def _usage(prompt: int, cached: int, completion: int) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": completion,
        "totalTokenCount": prompt + completion,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }
    if cached:
        usage["cachedContentTokenCount"] = cached
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
    return usage


def _response(
    parts: list[dict[str, Any]], finish: str | None, usage: dict[str, Any], name: str, rid: str
) -> dict[str, Any]:
    content: dict[str, Any] = {"parts": parts, "role": "model"} if parts else {"role": "model"}
    candidate: dict[str, Any] = {"content": content}
    if finish is not None:
        candidate["finishReason"] = finish
    candidate["index"] = 0
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": name, "responseId": rid}


async def generate(request: Request) -> Response:
    """``POST /v1beta/models/{model}:{method}``; one chat call, logged once it parsed."""
    target = request.path_params["target"]
    model, sep, method = target.rpartition(":")
    if not sep or method not in ("generateContent", "streamGenerateContent"):
        return error(404, f"Method not found: models/{target}.")
    call: dict[str, Any] = {}
    try:
        response = await _generate(request, model, method == "streamGenerateContent", call)
    except ApiError as exc:
        response = error(exc.status, exc.message)
    return answered(call["entry"], response) if call else response


def _auth(request: Request) -> str | None:
    if request.headers.get("x-goog-api-key"):
        return "header"
    return "query" if request.query_params.get("key") else None


async def _generate(request: Request, model: str, stream: bool, call: dict[str, Any]) -> Response:
    try:
        body = await read_body(request)
        check_fields(body, REQUEST_FIELDS, "")
        name, scenario = resolve(model.removeprefix("models/"), scenario_spec(request, body))
        seen = read_turns(request, body)
        calls = plan_calls(body, scenario, seen.after_tool_result)
        limit, structured, schema = generation(body)
    except BadRequest as exc:
        return error(400, exc.message)
    except ScenarioError as exc:
        return error(400, str(exc))
    entry = call["entry"] = record_call(request, "chat", name, [last_user_text(seen)])
    entry["auth"], entry["media"] = _auth(request), seen.notes
    outcome = await preflight(request, scenario)
    if outcome is not None:
        return Silent() if outcome == GONE else _scenario_error(outcome, scenario)
    if scenario.disconnect_after is not None and not stream:
        return Drop()

    prompt = text.count_prompt_tokens(seen.turns, seen.system or None)
    cached = min(scenario.cached, prompt)
    finish = "STOP"
    chunks: list[list[dict[str, Any]]]
    if calls:
        chunks = [[{"functionCall": {"name": c.name, "args": c.arguments}}] for c in calls]
        counts = [len(c.pieces) for c in calls]
    else:
        if structured:
            pieces = text.argument_pieces(tools.json_answer(schema, scenario))
        elif scenario.echo:
            pieces = text.echo_pieces(last_user_text(seen))
        else:
            notes = text.echo_pieces("; ".join(seen.notes) + "\n") if seen.notes else []
            pieces = notes + text.completion_pieces(scenario.tokens)
        if limit is not None and limit < len(pieces):
            pieces, finish = pieces[:limit], "MAX_TOKENS"
        chunks = [[{"text": piece}] for piece in pieces]
        counts = [1] * len(pieces)
    rid = text.new_id("")
    if stream:
        return _stream(request, chunks, counts, finish, prompt, cached, name, rid, scenario)
    completion = sum(counts)
    await generation_delay(scenario, completion)
    if calls:
        parts = [part for chunk in chunks for part in chunk]
    else:
        joined = "".join(p["text"] for chunk in chunks for p in chunk)
        parts = [{"text": joined}] if joined else []
    return json_response(_response(parts, finish, _usage(prompt, cached, completion), name, rid))


def _scenario_error(status: int, scenario: Scenario) -> Response:
    details = None
    if status == 429 and scenario.retry_after_ms is not None:
        delay = f"{scenario.retry_after_ms / 1000:g}s"
        details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}]
    message = {
        429: "Resource has been exhausted (e.g. check quota). (emulated)",
        500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting (emulated)",
        503: "The model is overloaded. Please try again later. (emulated)",
    }.get(status, f"Emulated error (status {status}).")
    return error(status, message, retry_headers(scenario), details)


def _stream(
    request: Request,
    chunks: list[list[dict[str, Any]]],
    counts: list[int],
    finish: str,
    prompt: int,
    cached: int,
    name: str,
    rid: str,
    scenario: Scenario,
) -> Stream:
    """One event per chunk, each with the usage so far; the last one finishes. ``alt=sse``:
    ``data: {...}`` events; otherwise one JSON array."""
    sse = request.query_params.get("alt") == "sse"
    events: list[dict[str, Any]] = []
    done = 0
    for i, (parts, count) in enumerate(zip(chunks, counts, strict=True)):
        done += count
        last = i == len(chunks) - 1
        events.append(_response(parts, finish if last else None, _usage(prompt, cached, done), name, rid))
    if not events:
        events.append(_response([], finish, _usage(prompt, cached, 0), name, rid))
    if sse:
        body = [b"data: " + orjson.dumps(e) + b"\r\n\r\n" for e in events]
        return Stream([], body, [], scenario, "text/event-stream")
    body = [(b"[" if i == 0 else b",\r\n") + orjson.dumps(e) for i, e in enumerate(events)]
    return Stream([], body, [b"]"], scenario, "application/json; charset=UTF-8")


# --- models ------------------------------------------------------------------------------------------


def model_body(model_id: str) -> dict[str, Any]:
    return {
        "name": f"models/{model_id}",
        "version": "001",
        "displayName": model_id,
        "description": "Emulated Gemini model",
        "inputTokenLimit": 1048576,
        "outputTokenLimit": 65536,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
    }


async def list_models(request: Request) -> Response:
    return json_response({"models": [model_body(m) for m in MODELS]})


async def get_model(request: Request) -> Response:
    target = request.path_params["target"]
    return json_response(model_body(target.removeprefix("models/")))


def routes() -> list[Route]:
    """``v1beta`` and ``v1`` (the SDK's default) alike; ``GET /v1/models`` is OpenAI's (:mod:`.app`)."""
    return [
        Route(f"/{API_VERSION}/models", list_models, methods=["GET"]),
        Route(f"/{API_VERSION}/models/{{target:path}}", generate, methods=["POST"]),
        Route(f"/{API_VERSION}/models/{{target:path}}", get_model, methods=["GET"]),
        Route("/v1/models/{target:path}", generate, methods=["POST"]),
        *gemini_files.routes(),
    ]
