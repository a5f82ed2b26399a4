"""OpenAI wire format: ``POST /v1/chat/completions``, ``POST /v1/embeddings``, ``GET /v1/models``.

Chat completions answer ``tokens`` words (see :mod:`.text`) or, when the request
offers ``tools``, ``tool_choice`` is not ``"none"`` and either the scenario has
``tool=1``, ``tool_choice`` is ``"required"`` or names a function, one tool call.
``max_completion_tokens`` / ``max_tokens`` below ``tokens`` cut the answer with
``finish_reason: "length"``. ``usage.prompt_tokens`` is
:func:`~services.emulator.text.count_prompt_tokens` of ``messages``.

Streams are SSE ``data: {chat.completion.chunk}`` events: a first chunk with
``delta: {"role": "assistant", "content": ""}``, one chunk per token (the last
one carries ``finish_reason``), then, with ``stream_options.include_usage``, a
``choices: []`` chunk holding ``usage`` (every other chunk has ``usage: null``),
then ``data: [DONE]``. Tool calls stream a first delta with index/id/name and
empty arguments, then the arguments in pieces.

Errors are ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
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
from .scenario import Scenario, ScenarioError, resolve

FINGERPRINT = "fp_emulator"
EMBEDDING_DIMS = 16
MODELS = ("gpt-emu", "gpt-emu-mini", "text-embedding-emu")

_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request (emulated)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided (emulated)."),
    403: ("request_forbidden", None, "Request forbidden (emulated)."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist (emulated)."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests (emulated)."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def error(status: int, message: str | None = None, *, param: str | None = None, code: str | None = None,
          headers: dict[str, str] | None = None) -> Response:
    """An OpenAI-shaped error response."""
    kind, default_code, default_message = _ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, f"Emulated error (status {status}).")
    )
    body = {"error": {"message": message or default_message, "type": kind, "param": param, "code": code or default_code}}
    return json_response(body, status, headers)


def scenario_error(status: int, scenario: Scenario) -> Response:
    return error(status, headers=retry_headers(scenario))


def pick_tool(body: dict[str, Any], scenario: Scenario) -> tuple[str, dict[str, Any]] | None:
    """(function name, arguments) when this request gets a tool call (OpenAI/Ollama ``tools`` format)."""
    tools = body.get("tools")
    if not tools or not isinstance(tools, list):
        return None
    choice = body.get("tool_choice", "auto")
    if choice == "none":
        return None
    wanted = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    if not (scenario.tool or wanted or choice == "required"):
        return None
    functions = [t.get("function") or {} for t in tools if isinstance(t, dict)]
    function = next((f for f in functions if f.get("name") == wanted), functions[0] if functions else {})
    return function.get("name", "tool"), text.tool_arguments(function.get("parameters"))


def _max_tokens(body: dict[str, Any]) -> int | None:
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise BadRequest("max_tokens must be a positive integer.", param="max_tokens")
    return limit


async def chat_completions(request: Request) -> Response:
    try:
        body = await read_json(request)
        model, messages = body.get("model"), body.get("messages")
        if not isinstance(model, str) or not model:
            raise BadRequest("you must provide a model parameter", param="model")
        if not isinstance(messages, list):
            raise BadRequest("Missing required parameter: 'messages'.", param="messages")
        limit = _max_tokens(body)
        name, scenario = resolve(model, scenario_spec(request, body))
    except BadRequest as exc:
        return error(400, exc.message, param=exc.param)
    except ScenarioError as exc:
        return error(400, str(exc), param="model")
    outcome = await preflight(request, scenario)
    if outcome is not None:
        return Silent() if outcome == GONE else scenario_error(outcome, scenario)
    stream = body.get("stream") is True
    if scenario.disconnect_after is not None and not stream:
        return Drop()

    prompt = text.count_prompt_tokens(messages)
    call = pick_tool(body, scenario)
    if call is not None:
        arguments = text.arguments_json(call[1])
        pieces = text.argument_pieces(arguments)
        finish = "tool_calls"
    else:
        count, finish = scenario.tokens, "stop"
        if limit is not None and limit < count:
            count, finish = limit, "length"
        pieces = text.completion_pieces(count)
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": len(pieces),
        "total_tokens": prompt + len(pieces),
        "prompt_tokens_details": {"cached_tokens": min(scenario.cached, prompt), "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }
    cid = text.new_id("chatcmpl-")
    headers = {"x-request-id": text.new_id("req_")}
    tool_call = None if call is None else {"id": text.new_id("call_"), "type": "function",
                                           "function": {"name": call[0], "arguments": arguments}}
    if stream:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return _stream(cid, name, pieces, finish, usage, tool_call, include_usage, scenario, headers)

    await generation_delay(scenario, len(pieces))
    message: dict[str, Any] = {"role": "assistant", "content": None if call else "".join(pieces),
                               "refusal": None, "annotations": []}
    if tool_call is not None:
        message["tool_calls"] = [tool_call]
    return json_response({
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": name,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }, headers=headers)


_SENTINEL = "\u2063emulator-piece\u2063"


def _stream(cid: str, name: str, pieces: list[str], finish: str, usage: dict[str, Any],
            tool_call: dict[str, Any] | None, include_usage: bool, scenario: Scenario,
            headers: dict[str, str]) -> Stream:
    base: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
                            "model": name, "service_tier": "default", "system_fingerprint": FINGERPRINT}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        data = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
        if include_usage:
            data["usage"] = None
        return b"data: " + orjson.dumps(data) + b"\n\n"

    if tool_call is None:
        head = [chunk({"role": "assistant", "content": "", "refusal": None})]
        before, _, after = chunk({"content": _SENTINEL}).rpartition(orjson.dumps(_SENTINEL))
        body = [before + orjson.dumps(piece) + after for piece in pieces[:-1]]
        if pieces:
            body.append(chunk({"content": pieces[-1]}, finish))
    else:
        function = tool_call["function"]
        head = [chunk({"role": "assistant", "content": None, "refusal": None, "tool_calls": [
            {"index": 0, "id": tool_call["id"], "type": "function",
             "function": {"name": function["name"], "arguments": ""}}]})]
        body = [chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}) for piece in pieces[:-1]]
        body.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": pieces[-1]}}]}, finish))
    tail = [] if pieces else [chunk({}, finish)]
    if include_usage:
        tail.append(b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n")
    tail.append(b"data: [DONE]\n\n")
    return Stream(head, body, tail, scenario, "text/event-stream; charset=utf-8", headers)


def _embedding_inputs(value: Any) -> list[tuple[str, int]]:
    """(text, tokens) per input: a string, a list of strings, a token array or a list of token arrays."""
    if isinstance(value, str):
        return [(value, text.count_words(value))]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) for v in value):
            return [(" ".join(map(str, value)), len(value))]
        out = []
        for item in value:
            if isinstance(item, str):
                out.append((item, text.count_words(item)))
            elif isinstance(item, list) and item and all(isinstance(v, int) for v in item):
                out.append((" ".join(map(str, item)), len(item)))
            else:
                break
        else:
            return out
    raise BadRequest("'input' must be a string, an array of strings or an array of token arrays.", param="input")


async def embeddings(request: Request) -> Response:
    try:
        body = await read_json(request)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("you must provide a model parameter", param="model")
        if "input" not in body:
            raise BadRequest("Missing required parameter: 'input'.", param="input")
        inputs = _embedding_inputs(body["input"])
        dims = body.get("dimensions") or EMBEDDING_DIMS
        if not isinstance(dims, int) or not 1 <= dims <= 8192:
            raise BadRequest("'dimensions' must be an integer between 1 and 8192.", param="dimensions")
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise BadRequest("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
        name, scenario = resolve(model, scenario_spec(request, body))
    except BadRequest as exc:
        return error(400, exc.message, param=exc.param)
    except ScenarioError as exc:
        return error(400, str(exc), param="model")
    outcome = await preflight(request, scenario)
    if outcome is not None:
        return Silent() if outcome == GONE else scenario_error(outcome, scenario)
    if scenario.disconnect_after is not None:
        return Drop()
    data = []
    for index, (item, _) in enumerate(inputs):
        vector = text.embedding(item, dims)
        value: Any = text.embedding_base64(vector) if encoding == "base64" else vector
        data.append({"object": "embedding", "index": index, "embedding": value})
    tokens = sum(count for _, count in inputs)
    return json_response({"object": "list", "data": data, "model": name,
                          "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
                         headers={"x-request-id": text.new_id("req_")})


def models_body() -> dict[str, Any]:
    return {"object": "list",
            "data": [{"id": m, "object": "model", "created": 1700000000, "owned_by": "emulator"} for m in MODELS]}


def model_body(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 1700000000, "owned_by": "emulator"}


def routes() -> list[Route]:
    """Routes of this wire format (``/v1/models`` is shared and dispatched in :mod:`.app`)."""
    return [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
    ]
