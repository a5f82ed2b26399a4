"""Anthropic wire format: ``POST /v1/messages`` (and the Anthropic shape of ``GET /v1/models``).

A message answers ``tokens`` words (scenario ``echo``: the last user message's text) in one
``text`` block, JSON, or ``tool_use`` blocks.
``max_tokens`` is required (400 ``invalid_request_error`` otherwise) and cuts text and JSON
answers with ``stop_reason: "max_tokens"`` when below their token count.

Tool use (:func:`plan_tool_uses`, counts as in :mod:`.tools`): custom tools (``type``
absent or ``"custom"``, with ``input_schema``) are called; server tools are not.
``tool_choice`` ``{"type": "none"}`` gives text, ``auto`` (default) the scenario's
``tool``/``tools``, ``any`` / ``{"type": "tool", "name"}`` at least one call (``tool``: only
to that tool, which must be offered); ``disable_parallel_tool_use: true`` at most one.
The answer is one ``{"type": "tool_use", "id": "toolu_...", "name", "input": {...}}`` block
per call, ``stop_reason: "tool_use"``, ``output_tokens`` = the input pieces of all calls.
Structured output through a forced tool (``tool_choice: {"type": "tool", "name": X}``)
thus answers a ``tool_use`` of X whose input conforms to X's ``input_schema``
(``schema_violation=1``: breaks it). Like the real API, a ``tool_result`` whose
``tool_use_id`` is not a ``tool_use`` of the message right before it, or a ``tool_use``
whose result is missing from the next message, is 400 ``invalid_request_error``. A
request whose last message carries tool results gets text unless ``tool_choice`` forces
a tool.

Native structured output (``output_config: {"format": {"type": "json_schema", "schema"}}``,
or the beta's top-level ``output_format``) answers one text block with the JSON of
:func:`~.schemas.example` of the schema (``schema_violation=1``: :func:`~.schemas.violation`).

Media blocks (``image``, ``document``) are checked and noted (see :mod:`.attachments`): a
text answer that is not ``echo`` starts with ``saw application/pdf 1234 bytes``-style notes,
and the call log entry lists them as ``media``.

Usage: the prompt size is ``count_prompt_tokens(messages, system)``; of it
``cache_read_input_tokens = min(cached, prompt)`` and ``input_tokens`` is the
rest (Anthropic's ``input_tokens`` excludes cache reads).

Streams are SSE ``event: <type>\\ndata: <json>\\n\\n`` in the real order:
``message_start`` (empty content, ``output_tokens: 1``), then per content block *i*
(indices 0, 1, ... in order) ``content_block_start`` (``tool_use`` blocks open with
``input: {}``), after the first one ``ping``, one ``content_block_delta`` per piece
(``text_delta``, or ``input_json_delta`` with ``partial_json``) and ``content_block_stop``;
then ``message_delta`` (``stop_reason`` and final ``output_tokens``), ``message_stop``.

Errors are ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
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
    retry_headers,
    scenario_spec,
)
from .scenario import Scenario, ScenarioError, resolve

MODELS = ("claude-emu", "claude-emu-haiku")

_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request (emulated)."),
    401: ("authentication_error", "invalid x-api-key (emulated)"),
    402: ("billing_error", "Billing error (emulated)."),
    403: (
        "permission_error",
        "Your API key does not have permission to use the specified resource (emulated).",
    ),
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
        status,
        ("api_error" if status >= 500 else "invalid_request_error", f"Emulated error (status {status})."),
    )
    request_id = text.new_id("req_")
    body = {
        "type": "error",
        "error": {"type": kind, "message": message or default_message},
        "request_id": request_id,
    }
    return json_response(body, status, {"request-id": request_id, **(headers or {})})


_CHOICE_TYPES = ("auto", "any", "tool", "none")


def check_tool_results(messages: list[Any]) -> bool:
    """Anthropic's rules for tool results; True when the last turn is a user turn holding one.

    Consecutive messages of one role form one turn (the API combines them). Every
    ``tool_result`` block must name (``tool_use_id``) a ``tool_use`` block of the turn right
    before it (an assistant turn), and every ``tool_use`` of an assistant turn followed by
    another turn must get its ``tool_result`` in that next turn. Errors name the original
    ``messages.<i>.content.<j>`` positions.
    """
    turns: list[tuple[Any, int, list[tuple[int, int, dict[str, Any]]]]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        role, content = message.get("role"), message.get("content")
        blocks = (
            [(i, j, b) for j, b in enumerate(content) if isinstance(b, dict)]
            if isinstance(content, list)
            else []
        )
        if turns and turns[-1][0] == role:
            turns[-1][2].extend(blocks)
        else:
            turns.append((role, i, blocks))
    open_ids: list[Any] = []
    owner = -1
    seen: list[Any] = []
    for role, first, blocks in turns:
        seen = []
        if role == "user":
            for i, j, block in blocks:
                if block.get("type") == "tool_result":
                    tool_use_id = block.get("tool_use_id")
                    if tool_use_id not in open_ids:
                        raise BadRequest(
                            f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` "
                            f"blocks: {tool_use_id}. Each `tool_result` block must have a corresponding "
                            "`tool_use` block in the previous message."
                        )
                    seen.append(tool_use_id)
        missing = [str(x) for x in open_ids if x not in seen]
        if missing:
            raise BadRequest(
                f"messages.{owner}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )
        open_ids = []
        if role == "assistant":
            uses = [(i, b.get("id")) for i, _, b in blocks if b.get("type") == "tool_use"]
            open_ids = [tool_use_id for _, tool_use_id in uses]
            owner = uses[0][0] if uses else first
    return bool(seen)


def plan_tool_uses(body: dict[str, Any], scenario: Scenario, after_tool_result: bool) -> list[tools.Call]:
    """The ``tool_use`` blocks this request gets (``tools``, ``tool_choice``, scenario)."""
    offered = body.get("tools")
    choice = body.get("tool_choice")
    if choice is not None and not isinstance(choice, dict):
        raise BadRequest("tool_choice: Input should be a valid dictionary")
    choice = choice or {}
    kind = choice.get("type", "auto")
    if kind not in _CHOICE_TYPES:
        raise BadRequest(
            f"tool_choice: Input tag '{kind}' found using 'type' does not match any of the expected "
            "tags: 'auto', 'any', 'tool', 'none'"
        )
    if not offered:
        return []
    if not isinstance(offered, list):
        raise BadRequest("tools: Input should be a valid list")
    custom = []
    for i, tool in enumerate(offered):
        if not isinstance(tool, dict):
            raise BadRequest(f"tools.{i}: Input should be a valid dictionary")
        if tool.get("type", "custom") != "custom":
            continue  # server / built-in tools: offered, never called by the emulator
        name, schema = tool.get("name"), tool.get("input_schema")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"tools.{i}.custom.name: Field required")
        if not isinstance(schema, dict):
            raise BadRequest(f"tools.{i}.custom.input_schema: Field required")
        custom.append((name, schema))
    if kind == "none":
        return []
    if kind == "tool":
        wanted = choice.get("name")
        custom = [t for t in custom if t[0] == wanted]
        if not custom:
            raise BadRequest(f"tool_choice: tool '{wanted}' was not found in the provided tools")
    count = tools.call_count(
        scenario,
        forced=kind in ("any", "tool"),
        single=choice.get("disable_parallel_tool_use") is True,
        after_tool_result=after_tool_result,
    )
    return tools.make_calls(custom, count, scenario)


def output_schema(body: dict[str, Any]) -> tuple[bool, Any]:
    """``(True, schema)`` for native structured output (``output_config.format``, or the beta's
    ``output_format``: ``{"type": "json_schema", "schema": ...}``), else ``(False, None)``."""
    config = body.get("output_config")
    fmt, where = (config.get("format"), "output_config.format") if isinstance(config, dict) else (None, "")
    if fmt is None:
        fmt, where = body.get("output_format"), "output_format"
    if fmt is None:
        return False, None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise BadRequest(f"{where}.type: Input should be 'json_schema'")
    if not isinstance(fmt.get("schema"), dict):
        raise BadRequest(f"{where}.schema: Field required")
    return True, fmt["schema"]


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
_JSON_DELTA = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"input_json_delta","partial_json":'
)
_DELTA_END = b"}}\n\n"
_PING = _event("ping", {"type": "ping"})
_BLOCK_STOP = _event("content_block_stop", {"type": "content_block_stop", "index": 0})
_MESSAGE_STOP = _event("message_stop", {"type": "message_stop"})


async def messages(request: Request) -> Response:
    """One chat call, logged for ``GET /_emulator/calls`` (kind ``chat``) once it parsed."""
    call: dict[str, Any] = {}
    response = await _messages(request, call)
    return answered(call["entry"], response) if call else response


async def _messages(request: Request, call: dict[str, Any]) -> Response:
    try:
        body = await read_json(request)
        model, msgs, max_tokens = _validate(body)
        name, scenario = resolve(model, scenario_spec(request, body))
        after_tool_result = check_tool_results(msgs)
        calls = plan_tool_uses(body, scenario, after_tool_result)
        structured, schema = output_schema(body)
        notes = attachments.anthropic_notes(msgs)
    except BadRequest as exc:
        return error(400, exc.message)
    except ScenarioError as exc:
        return error(400, str(exc))
    call["entry"] = record_call(request, "chat", name, [text.last_user_text(msgs)])
    if notes:
        call["entry"]["media"] = notes
    outcome = await preflight(request, scenario)
    if outcome is not None:
        return Silent() if outcome == GONE else error(outcome, headers=retry_headers(scenario))
    stream = body.get("stream") is True
    if scenario.disconnect_after is not None and not stream:
        return Drop()

    prompt = text.count_prompt_tokens(msgs, body.get("system"))
    cached = min(scenario.cached, prompt)
    if calls:
        stop_reason = "tool_use"
        blocks: list[dict[str, Any]] = [
            {"type": "tool_use", "id": text.new_id("toolu_"), "name": call.name, "input": call.arguments}
            for call in calls
        ]
        pieces = [call.pieces for call in calls]
    else:
        stop_reason = "end_turn"
        if structured:
            answer = text.argument_pieces(tools.json_answer(schema, scenario))
        else:
            answer = text.answer_pieces(msgs, echo=scenario.echo, tokens=scenario.tokens)
            if not scenario.echo:
                answer = attachments.note_pieces(notes) + answer
        if max_tokens < len(answer):
            answer, stop_reason = answer[:max_tokens], "max_tokens"
        blocks = [{"type": "text", "text": "".join(answer)}]
        pieces = [answer]
    output_tokens = sum(map(len, pieces))
    usage = {
        "input_tokens": prompt - cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }
    message = {
        "id": text.new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": name,
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }
    headers = {"request-id": text.new_id("req_")}
    if stream:
        return _stream(message, pieces, scenario, headers)
    await generation_delay(scenario, output_tokens)
    return json_response(message, headers=headers)


def _delta_prefix(index: int, kind: str) -> bytes:
    if index == 0:
        return _TEXT_DELTA if kind == "text" else _JSON_DELTA
    head = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":' + str(index).encode()
    if kind == "text":
        return head + b',"delta":{"type":"text_delta","text":'
    return head + b',"delta":{"type":"input_json_delta","partial_json":'


def _block_start(index: int, block: dict[str, Any]) -> bytes:
    opened = {**block, "input": {}} if block["type"] == "tool_use" else {"type": "text", "text": ""}
    return _event(
        "content_block_start", {"type": "content_block_start", "index": index, "content_block": opened}
    )


def _block_stop(index: int) -> bytes:
    return (
        _BLOCK_STOP
        if index == 0
        else _event("content_block_stop", {"type": "content_block_stop", "index": index})
    )


def _stream(
    message: dict[str, Any], pieces: list[list[str]], scenario: Scenario, headers: dict[str, str]
) -> Stream:
    """Blocks are indexed 0..n-1; each is start, deltas (one body write per piece), stop; a
    block's stop and the next one's start go out with that next block's first delta."""
    blocks = message["content"]
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    head = [
        _event("message_start", {"type": "message_start", "message": start}),
        _block_start(0, blocks[0]),
        _PING,
    ]
    body: list[bytes] = []
    for index, (block, block_pieces) in enumerate(zip(blocks, pieces, strict=True)):
        prefix = _delta_prefix(index, "text" if block["type"] == "text" else "json")
        events = [prefix + orjson.dumps(piece) + _DELTA_END for piece in block_pieces]
        if index:
            opening = _block_stop(index - 1) + _block_start(index, block)
            if events:
                events[0] = opening + events[0]
            else:
                events = [opening]
        body.extend(events)
    tail = [
        _block_stop(len(blocks) - 1),
        _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        ),
        _MESSAGE_STOP,
    ]
    return Stream(head, body, tail, scenario, "text/event-stream; charset=utf-8", headers)


def models_body() -> dict[str, Any]:
    data = [
        {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in MODELS
    ]
    return {"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]}


def model_body(model_id: str) -> dict[str, Any]:
    return {"type": "model", "id": model_id, "display_name": model_id, "created_at": "2025-01-01T00:00:00Z"}


def routes() -> list[Route]:
    """Routes of this wire format (``/v1/models`` is shared and dispatched in :mod:`.app`)."""
    return [Route("/v1/messages", messages, methods=["POST"])]
