"""Ollama wire format: ``POST /api/chat``, ``POST /api/embed``, ``POST /api/embeddings``,
``GET /api/tags``, ``GET /api/version`` and ``GET /`` ("Ollama is running").

``/api/chat`` streams NDJSON **by default** (when ``"stream"`` is absent): one line
``{"model", "created_at", "message": {"role": "assistant", "content": piece}, "done": false}``
per token, then a ``done: true`` line with ``done_reason`` and the counts/durations
(``prompt_eval_count`` = :func:`~services.emulator.text.count_prompt_tokens` of
``messages``, ``eval_count`` = tokens). ``options.num_predict`` below ``tokens``
cuts the answer with ``done_reason: "length"``. With ``tool=1`` and ``tools`` the
answer is one message with ``tool_calls: [{"function": {"name", "arguments": {...}}}]``
(``eval_count`` = the tool-argument piece count, as for the other formats).
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

from . import text
from .common import (
    GONE,
    BadRequest,
    Drop,
    Silent,
    Stream,
    generation_delay,
    json_response,
    preflight,
    read_json,
    retry_headers,
    scenario_spec,
)
from .openai_api import EMBEDDING_DIMS, pick_tool
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
    return json_response({"error": message or _MESSAGES.get(status, f"emulated error (status {status})")},
                         status, headers)


def _created_at() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"


async def _begin(request: Request, body_check: Any) -> tuple[dict[str, Any], str, Scenario] | Response:
    """Parse, validate and resolve the scenario; run the preflight. A Response means "answer with this"."""
    try:
        body = await read_json(request)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("model is required")
        body_check(body)
        name, scenario = resolve(model, scenario_spec(request, body))
    except (BadRequest, ScenarioError) as exc:
        return error(400, str(exc))
    outcome = await preflight(request, scenario)
    if outcome is not None:
        return Silent() if outcome == GONE else error(outcome, headers=retry_headers(scenario))
    return body, name, scenario


def _check_chat(body: dict[str, Any]) -> None:
    if not isinstance(body.get("messages", []), list):
        raise BadRequest("messages must be an array")


async def chat(request: Request) -> Response:
    started = time.perf_counter_ns()
    begun = await _begin(request, _check_chat)
    if isinstance(begun, Response):
        return begun
    body, name, scenario = begun
    stream = body.get("stream", True) is not False
    if scenario.disconnect_after is not None and not stream:
        return Drop()

    prompt = text.count_prompt_tokens(body.get("messages"))
    call = pick_tool(body, scenario)
    if call is not None:
        count = len(text.argument_pieces(text.arguments_json(call[1])))
        pieces, reason = [""], "stop"
    else:
        count, reason = scenario.tokens, "stop"
        options = body.get("options")
        limit = options.get("num_predict") if isinstance(options, dict) else None
        if isinstance(limit, int) and 0 < limit < count:
            count, reason = limit, "length"
        pieces = text.completion_pieces(count)
    created = _created_at()
    eval_ns = max(int(scenario.chunk_delay_ms * 1e6) * count, MIN_TOKEN_NS * max(count, 1))
    stats = {"load_duration": LOAD_NS, "prompt_eval_count": prompt,
             "prompt_eval_duration": max(int(scenario.ttfb_ms * 1e6), MIN_TOKEN_NS),
             "eval_count": count, "eval_duration": eval_ns}
    tool_calls = None if call is None else [{"function": {"name": call[0], "arguments": call[1]}}]

    if not stream:
        await generation_delay(scenario, count)
        message: dict[str, Any] = {"role": "assistant", "content": "".join(pieces)}
        if tool_calls:
            message["tool_calls"] = tool_calls
        return json_response({"model": name, "created_at": created, "message": message, "done": True,
                              "done_reason": reason, "total_duration": time.perf_counter_ns() - started,
                              **stats})

    if tool_calls:
        lines = [orjson.dumps({"model": name, "created_at": created, "done": False,
                               "message": {"role": "assistant", "content": "", "tool_calls": tool_calls}}) + b"\n"]
    else:
        head = orjson.dumps({"model": name, "created_at": created, "message": {"role": "assistant", "content": ""}})
        prefix = head[: -len(b'""}}')]
        lines = [prefix + orjson.dumps(piece) + b'},"done":false}\n' for piece in pieces]
    total = time.perf_counter_ns() - started + eval_ns
    final = orjson.dumps({"model": name, "created_at": created, "message": {"role": "assistant", "content": ""},
                          "done": True, "done_reason": reason, "total_duration": total, **stats}) + b"\n"
    return Stream([], lines, [final], scenario, "application/x-ndjson")


def _embed_inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise BadRequest("invalid input type")


def _check_embed(body: dict[str, Any]) -> None:
    _embed_inputs(body.get("input"))
    dims = body.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or not 1 <= dims <= 8192):
        raise BadRequest("dimensions must be an integer between 1 and 8192")


async def embed(request: Request) -> Response:
    started = time.perf_counter_ns()
    begun = await _begin(request, _check_embed)
    if isinstance(begun, Response):
        return begun
    body, name, scenario = begun
    if scenario.disconnect_after is not None:
        return Drop()
    inputs = _embed_inputs(body["input"])
    dims = body.get("dimensions") or EMBEDDING_DIMS
    vectors = [text.embedding(item, dims) for item in inputs]
    return json_response({"model": name, "embeddings": vectors, "total_duration": time.perf_counter_ns() - started,
                          "load_duration": LOAD_NS, "prompt_eval_count": sum(map(text.count_words, inputs))})


def _check_legacy_embed(body: dict[str, Any]) -> None:
    if not isinstance(body.get("prompt", ""), str):
        raise BadRequest("prompt must be a string")


async def embeddings(request: Request) -> Response:
    """Legacy ``/api/embeddings``: ``{"prompt"}`` -> ``{"embedding": [...]}``."""
    begun = await _begin(request, _check_legacy_embed)
    if isinstance(begun, Response):
        return begun
    body, _, scenario = begun
    if scenario.disconnect_after is not None:
        return Drop()
    return json_response({"embedding": text.embedding(body.get("prompt", ""), EMBEDDING_DIMS)})


async def tags(request: Request) -> Response:
    models = [{"name": m, "model": m, "modified_at": "2025-01-01T00:00:00Z", "size": 1_000_000,
               "digest": "0" * 64, "details": {"parent_model": "", "format": "gguf", "family": "llama",
                                               "families": ["llama"], "parameter_size": "1B",
                                               "quantization_level": "Q4_K_M"}} for m in MODELS]
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
