"""Anthropic wire format: ``POST /v1/messages`` (and the Anthropic shape of ``GET /v1/models``).

A message answers ``tokens`` words in one ``text`` block, or, when ``tools`` are
offered, ``tool_choice.type`` is not ``"none"`` and either the scenario has
``tool=1`` or ``tool_choice.type`` is ``"any"``/``"tool"``, one ``tool_use`` block.
``max_tokens`` is required (400 ``invalid_request_error`` otherwise) and cuts the
answer with ``stop_reason: "max_tokens"`` when below ``tokens``.

Usage: the prompt size is ``count_prompt_tokens(messages, system)``; of it
``cache_read_input_tokens = min(cached, prompt)`` and ``input_tokens`` is the
rest (Anthropic's ``input_tokens`` excludes cache reads).

Streams are SSE ``event: <type>\\ndata: <json>\\n\\n`` in the real order:
``message_start`` (empty content, ``output_tokens: 1``), ``content_block_start``,
``ping``, one ``content_block_delta`` per token (``text_delta``; tool calls send
``input_json_delta`` pieces), ``content_block_stop``, ``message_delta``
(``stop_reason`` and final ``output_tokens``), ``message_stop``.

Errors are ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

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

MODELS = ("claude-emu", "claude-emu-haiku")

_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request (emulated)."),
    401: ("authentication_error", "invalid x-api-key (emulated)"),
    402: ("billing_error", "Billing error (emulated)."),
    403: ("permission_error", "Your API key does not have permission to use the specified resource (emulated)."),
    404: ("not_found_error", "Not found (emulated)."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes (emulated)."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your rate limit (emulated)."),
    500: ("api_error", "Internal server error (emulated)."),
    504: ("timeout_error", "Request timed out (emulated)."),
    529: ("overloaded_error", "Overloaded (emulated)."),
}


def error(status: int, message: str | None = None, headers: dict[str, str] | None = None) -> Response:
    """An Anthropic-shaped error response."""
    kind, default_message = _ERRORS.get(
        status, ("api_error" if status >= 500 else "invalid_request_error", f"Emulated error (status {status}).")
    )
    request_id = text.new_id("req_")
    body = {"type": "error", "error": {"type": kind, "message": message or default_message}, "request_id": request_id}
    return json_response(body, status, {"request-id": request_id, **(headers or {})})


def pick_tool(body: dict[str, Any], scenario: Scenario) -> tuple[str, dict[str, Any]] | None:
    """(tool name, input) when this request gets a ``tool_use`` answer."""
    tools = body.get("tools")
    if not tools or not isinstance(tools, list):
        return None
    choice = body.get("tool_choice") or {}
    kind = choice.get("type", "auto") if isinstance(choice, dict) else "auto"
    if kind == "none" or not (scenario.tool or kind in ("any", "tool")):
        return None
    wanted = choice.get("name") if kind == "tool" else None
    named = [t for t in tools if isinstance(t, dict)]
    tool = next((t for t in named if t.get("name") == wanted), named[0] if named else {})
    return tool.get("name", "tool"), text.tool_arguments(tool.get("input_schema"))


def _validate(body: dict[str, Any]) -> tuple[str, list[Any], int]:
    model, messages, max_tokens = body.get("model"), body.get("messages"), body.get("max_tokens")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: Field required")
    if not isinstance(messages, list):
        raise BadRequest("messages: Field required")
    if max_tokens is None:
        raise BadRequest("max_tokens: Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise BadRequest("max_tokens: Input should be a valid integer greater than or equal to 1")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise BadRequest("system: Input should be a valid string or a list of text blocks")
    return model, messages, max_tokens


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


_TEXT_DELTA = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":'
_JSON_DELTA = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
               b'"delta":{"type":"input_json_delta","partial_json":')
_DELTA_END = b"}}\n\n"
_PING = _event("ping", {"type": "ping"})
_BLOCK_STOP = _event("content_block_stop", {"type": "content_block_stop", "index": 0})
_MESSAGE_STOP = _event("message_stop", {"type": "message_stop"})


async def messages(request: Request) -> Response:
    try:
        body = await read_json(request)
        model, msgs, max_tokens = _validate(body)
        name, scenario = resolve(model, scenario_spec(request, body))
    except BadRequest as exc:
        return error(400, exc.message)
    except ScenarioError as exc:
        return error(400, str(exc))
    outcome = await preflight(request, scenario)
    if outcome is not None:
        return Silent() if outcome == GONE else error(outcome, headers=retry_headers(scenario))
    stream = body.get("stream") is True
    if scenario.disconnect_after is not None and not stream:
        return Drop()

    prompt = text.count_prompt_tokens(msgs, body.get("system"))
    cached = min(scenario.cached, prompt)
    call = pick_tool(body, scenario)
    if call is not None:
        pieces = text.argument_pieces(text.arguments_json(call[1]))
        stop_reason = "tool_use"
        block: dict[str, Any] = {"type": "tool_use", "id": text.new_id("toolu_"), "name": call[0], "input": call[1]}
    else:
        count, stop_reason = scenario.tokens, "end_turn"
        if max_tokens < count:
            count, stop_reason = max_tokens, "max_tokens"
        pieces = text.completion_pieces(count)
        block = {"type": "text", "text": "".join(pieces)}
    usage = {"input_tokens": prompt - cached, "cache_creation_input_tokens": 0,
             "cache_read_input_tokens": cached, "output_tokens": len(pieces), "service_tier": "standard"}
    message = {"id": text.new_id("msg_"), "type": "message", "role": "assistant", "model": name,
               "content": [block], "stop_reason": stop_reason, "stop_sequence": None, "usage": usage}
    headers = {"request-id": text.new_id("req_")}
    if stream:
        return _stream(message, pieces, scenario, headers)
    await generation_delay(scenario, len(pieces))
    return json_response(message, headers=headers)


def _stream(message: dict[str, Any], pieces: list[str], scenario: Scenario, headers: dict[str, str]) -> Stream:
    block = message["content"][0]
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    if block["type"] == "tool_use":
        opened = {**block, "input": {}}
        prefix = _JSON_DELTA
    else:
        opened = {"type": "text", "text": ""}
        prefix = _TEXT_DELTA
    head = [
        _event("message_start", {"type": "message_start", "message": start}),
        _event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": opened}),
        _PING,
    ]
    body = [prefix + orjson.dumps(piece) + _DELTA_END for piece in pieces]
    tail = [
        _BLOCK_STOP,
        _event("message_delta", {"type": "message_delta",
                                 "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                 "usage": {"output_tokens": usage["output_tokens"]}}),
        _MESSAGE_STOP,
    ]
    return Stream(head, body, tail, scenario, "text/event-stream; charset=utf-8", headers)


def models_body() -> dict[str, Any]:
    data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in MODELS]
    return {"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]}


def model_body(model_id: str) -> dict[str, Any]:
    return {"type": "model", "id": model_id, "display_name": model_id, "created_at": "2025-01-01T00:00:00Z"}


def routes() -> list[Route]:
    """Routes of this wire format (``/v1/models`` is shared and dispatched in :mod:`.app`)."""
    return [Route("/v1/messages", messages, methods=["POST"])]
