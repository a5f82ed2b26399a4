"""Ollama wire format: ``POST /api/chat``, ``POST /api/embed``, ``POST /api/embeddings``,
``GET /api/tags``, ``GET /api/version`` and ``GET /`` ("Ollama is running").

``/api/chat`` answers ``tokens`` words (scenario ``echo``: the last user message) and streams NDJSON
**by default** (when ``"stream"`` is absent): one line
``{"model", "created_at", "message": {"role": "assistant", "content": piece}, "done": false}``
per token, then a ``done: true`` line with ``done_reason`` and the counts/durations
(``prompt_eval_count`` = :func:`~services.emulator.text.count_prompt_tokens` of
``messages``, ``eval_count`` = tokens). ``options.num_predict`` below the answer's token
count cuts it with ``done_reason: "length"``.

Tools: with ``tools`` and the scenario's ``tool=1`` / ``tools=N`` (Ollama has no
``tool_choice``; counts as in :mod:`.tools`, so a last ``role: "tool"`` message gets text)
the message has ``content: ""`` and ``tool_calls: [{"function": {"index", "name",
"arguments": {...}}}, ...]`` as Ollama sends them: whole calls, no ``id``, and ``index``
omitted for the first call (Go ``omitempty``). Streaming sends one line per call, then the
``done`` line. ``eval_count`` = the tool-argument piece count, as for the other formats.

A message's ``images`` (base64) are checked and noted (see :mod:`.attachments`): a text
answer that is not ``echo`` starts with ``saw image/png 1234 bytes``-style notes (the type
from the image's magic bytes), and the call log entry lists them as ``media``.

``format``: ``"json"`` answers ``{"answer": "<tokens words>"}``, a JSON schema answers the
JSON of :func:`~.schemas.example` of it (``schema_violation=1``: :func:`~.schemas.violation`),
streamed as content pieces; any other value is a 400.

``/api/embed``: ``input`` is a string or a list of strings; no input (absent, ``""`` or
``[]``) answers ``{"model", "embeddings": []}`` as Ollama does; else ``{"model",
"embeddings": [[...], ...], "total_duration", "load_duration", "prompt_eval_count"}``.
More than ``max_inputs`` (default 512) inputs, or one equal to ``fail_input``, is a 400.
Each call (and each legacy ``/api/embeddings`` call) is logged for ``GET /_emulator/calls``.
Durations are nanoseconds; ``eval_duration`` is never 0 so clients can divide by it.

Errors are ``{"error": "..."}``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from . import attachments, text, tools
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
    read_json,
    record_call,
    refused_input,
    retry_headers,
    scenario_spec,
)
from .openai_api import EMBEDDING_DIMS, offered_functions
from .scenario import Scenario, ScenarioError, resolve

VERSION = "0.9.0"
MODELS = ("llama-emu:latest", "nomic-embed-emu:latest")
LOAD_NS = 100_000
MIN_TOKEN_NS = 10_000

_MESSAGES = {
    400: "invalid request (emulated)",
    404: "model not found, try pulling it first (emulated)",
    429: "too many requests (emulated)",
    500: "internal server error (emulated)",
    503: "server busy, please try again.  maximum pending requests exceeded (emulated)",
}


def error(status: int, message: str | None = None, headers: dict[str, str] | None = None) -> Response:
    """An Ollama-shaped error response."""
    return json_response(
        {"error": message or _MESSAGES.get(status, f"emulated error (status {status})")}, status, headers
    )


def _created_at() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"


async def _parse(request: Request, body_check: Any) -> tuple[dict[str, Any], str, Scenario] | Response:
    """Parse, validate and resolve the scenario. A Response means "answer with this"."""
    try:
        body = await read_json(request)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("model is required")
        body_check(body)
        name, scenario = resolve(model, scenario_spec(request, body))
    except (BadRequest, ScenarioError) as exc:
        return error(400, str(exc))
    return body, name, scenario


async def _preflight(request: Request, scenario: Scenario) -> Response | None:
    outcome = await preflight(request, scenario)
    if outcome is not None:
        return Silent() if outcome == GONE else error(outcome, headers=retry_headers(scenario))
    return None


def _check_chat(body: dict[str, Any]) -> None:
    messages = body.get("messages", [])
    if not isinstance(messages, list):
        raise BadRequest("messages must be an array")
    if body.get("tools") is not None:
        offered_functions(body["tools"])
    fmt = body.get("format")
    if fmt not in (None, "", "json") and not isinstance(fmt, dict):
        raise BadRequest('invalid format: expected "json" or a JSON schema')


def _tool_call(index: int, call: tools.Call) -> dict[str, Any]:
    """Ollama's ``api.ToolCall``: no id; ``function.index`` is ``omitempty`` (absent for the first call)."""
    function: dict[str, Any] = {"index": index} if index else {}
    function["name"] = call.name
    function["arguments"] = call.arguments
    return {"function": function}


async def chat(request: Request) -> Response:
    """One chat call, logged for ``GET /_emulator/calls`` (kind ``chat``) once it parsed."""
    call: dict[str, Any] = {}
    response = await _chat(request, call)
    return answered(call["entry"], response) if call else response


async def _chat(request: Request, call: dict[str, Any]) -> Response:
    started = time.perf_counter_ns()
    begun = await _parse(request, _check_chat)
    if isinstance(begun, Response):
        return begun
    body, name, scenario = begun
    try:
        notes = attachments.ollama_notes(body.get("messages"))
    except BadRequest as exc:
        return error(400, exc.message)
    call["entry"] = record_call(request, "chat", name, [text.last_user_text(body.get("messages"))])
    if notes:
        call["entry"]["media"] = notes
    refused = await _preflight(request, scenario)
    if refused is not None:
        return refused
    stream = body.get("stream", True) is not False
    if scenario.disconnect_after is not None and not stream:
        return Drop()

    messages = body.get("messages") or []
    prompt = text.count_prompt_tokens(messages)
    calls: list[tools.Call] = []
    if body.get("tools"):
        last = messages[-1] if messages else None
        after_tool_result = isinstance(last, dict) and last.get("role") == "tool"
        count = tools.call_count(scenario, after_tool_result=after_tool_result)
        calls = tools.make_calls(offered_functions(body["tools"]), count, scenario)
    reason = "stop"
    if calls:
        count = sum(len(call.pieces) for call in calls)
        pieces = [""]
    else:
        fmt = body.get("format")
        if fmt == "json" or isinstance(fmt, dict):
            pieces = text.argument_pieces(tools.json_answer(fmt if isinstance(fmt, dict) else None, scenario))
        else:
            pieces = text.answer_pieces(messages, echo=scenario.echo, tokens=scenario.tokens)
            if not scenario.echo:
                pieces = attachments.note_pieces(notes) + pieces
        options = body.get("options")
        limit = options.get("num_predict") if isinstance(options, dict) else None
        if isinstance(limit, int) and 0 < limit < len(pieces):
            pieces, reason = pieces[:limit], "length"
        count = len(pieces)
    created = _created_at()
    eval_ns = max(int(scenario.chunk_delay_ms * 1e6) * count, MIN_TOKEN_NS * max(count, 1))
    stats = {
        "load_duration": LOAD_NS,
        "prompt_eval_count": prompt,
        "prompt_eval_duration": max(int(scenario.ttfb_ms * 1e6), MIN_TOKEN_NS),
        "eval_count": count,
        "eval_duration": eval_ns,
    }
    tool_calls = [_tool_call(i, call) for i, call in enumerate(calls)]

    if not stream:
        await generation_delay(scenario, count)
        message: dict[str, Any] = {"role": "assistant", "content": "".join(pieces)}
        if tool_calls:
            message["tool_calls"] = tool_calls
        return json_response(
            {
                "model": name,
                "created_at": created,
                "message": message,
                "done": True,
                "done_reason": reason,
                "total_duration": time.perf_counter_ns() - started,
                **stats,
            }
        )

    if tool_calls:  # each call arrives whole, one line per call (Ollama's streaming tool parser)
        lines = [
            orjson.dumps(
                {
                    "model": name,
                    "created_at": created,
                    "message": {"role": "assistant", "content": "", "tool_calls": [call]},
                    "done": False,
                }
            )
            + b"\n"
            for call in tool_calls
        ]
    else:
        head = orjson.dumps(
            {"model": name, "created_at": created, "message": {"role": "assistant", "content": ""}}
        )
        prefix = head[: -len(b'""}}')]
        lines = [prefix + orjson.dumps(piece) + b'},"done":false}\n' for piece in pieces]
    total = time.perf_counter_ns() - started + eval_ns
    final = (
        orjson.dumps(
            {
                "model": name,
                "created_at": created,
                "message": {"role": "assistant", "content": ""},
                "done": True,
                "done_reason": reason,
                "total_duration": total,
                **stats,
            }
        )
        + b"\n"
    )
    return Stream([], lines, [final], scenario, "application/x-ndjson")


MAX_EMBED_INPUTS = 512


def _embed_inputs(value: Any) -> list[str]:
    """Like Ollama: a string (empty: none), a list of strings (may be empty) or nothing."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise BadRequest("invalid input type")


def _check_embed(body: dict[str, Any]) -> None:
    _embed_inputs(body.get("input"))
    dims = body.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or not 1 <= dims <= 8192):
        raise BadRequest("dimensions must be an integer between 1 and 8192")


async def embed(request: Request) -> Response:
    started = time.perf_counter_ns()
    begun = await _parse(request, _check_embed)
    if isinstance(begun, Response):
        return begun
    body, name, scenario = begun
    inputs = _embed_inputs(body.get("input"))
    entry = record_call(request, "embeddings", name, list(inputs))
    return answered(entry, await _embed(request, body, name, scenario, inputs, started))


async def _embed(
    request: Request, body: dict[str, Any], name: str, scenario: Scenario, inputs: list[str], started: int
) -> Response:
    refused = await _preflight(request, scenario)
    if refused is not None:
        return refused
    if scenario.disconnect_after is not None:
        return Drop()
    if not inputs:  # Ollama answers an empty input (it only loads the model) without durations
        return json_response({"model": name, "embeddings": []})
    limit = scenario.max_inputs or MAX_EMBED_INPUTS
    if len(inputs) > limit:
        return error(400, f"too many inputs: {len(inputs)} exceeds the maximum of {limit} inputs per request")
    bad = refused_input(inputs, scenario)
    if bad is not None:
        return error(400, f"input[{bad}]: the emulator refuses this input (scenario fail_input)")
    dims = body.get("dimensions") or EMBEDDING_DIMS
    vectors = [text.embedding(item, dims) for item in inputs]
    return json_response(
        {
            "model": name,
            "embeddings": vectors,
            "total_duration": time.perf_counter_ns() - started,
            "load_duration": LOAD_NS,
            "prompt_eval_count": sum(map(text.count_words, inputs)),
        }
    )


def _check_legacy_embed(body: dict[str, Any]) -> None:
    if not isinstance(body.get("prompt", ""), str):
        raise BadRequest("prompt must be a string")


async def embeddings(request: Request) -> Response:
    """Legacy ``/api/embeddings``: ``{"prompt"}`` -> ``{"embedding": [...]}``."""
    begun = await _parse(request, _check_legacy_embed)
    if isinstance(begun, Response):
        return begun
    body, name, scenario = begun
    prompt = body.get("prompt", "")
    entry = record_call(request, "embeddings", name, [prompt])
    return answered(entry, await _legacy_embed(request, scenario, prompt))


async def _legacy_embed(request: Request, scenario: Scenario, prompt: str) -> Response:
    refused = await _preflight(request, scenario)
    if refused is not None:
        return refused
    if scenario.disconnect_after is not None:
        return Drop()
    if refused_input([prompt], scenario) is not None:
        return error(400, "input[0]: the emulator refuses this input (scenario fail_input)")
    return json_response({"embedding": text.embedding(prompt, EMBEDDING_DIMS)})


async def tags(request: Request) -> Response:
    models = [
        {
            "name": m,
            "model": m,
            "modified_at": "2025-01-01T00:00:00Z",
            "size": 1_000_000,
            "digest": "0" * 64,
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "llama",
                "families": ["llama"],
                "parameter_size": "1B",
                "quantization_level": "Q4_K_M",
            },
        }
        for m in MODELS
    ]
    return json_response({"models": models})


async def version(request: Request) -> Response:
    return json_response({"version": VERSION})


async def root(request: Request) -> Response:
    return PlainTextResponse("Ollama is running")


def routes() -> list[Route]:
    return [
        Route("/api/chat", chat, methods=["POST"]),
        Route("/api/embed", embed, methods=["POST"]),
        Route("/api/embeddings", embeddings, methods=["POST"]),
        Route("/api/tags", tags, methods=["GET"]),
        Route("/api/version", version, methods=["GET"]),
        Route("/", root, methods=["GET", "HEAD"]),
    ]
