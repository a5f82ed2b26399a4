"""OpenAI wire format: ``POST /v1/chat/completions``, ``POST /v1/embeddings``, ``GET /v1/models``.

Chat completions answer ``tokens`` words (scenario ``echo``: the last user message; see
:mod:`.text`), tool calls, or JSON.
``max_completion_tokens`` / ``max_tokens`` below the answer's token count cut text and
JSON answers with ``finish_reason: "length"``. ``usage.prompt_tokens`` is
:func:`~services.emulator.text.count_prompt_tokens` of ``messages``.

Tool calls (:func:`plan_tool_calls`, counts as in :mod:`.tools`): only ``type: "function"``
tools are called; ``tool_choice`` is ``"none"`` (text), ``"auto"`` (the scenario's
``tool``/``tools``), ``"required"`` or ``{"type": "function", "function": {"name"}}``
(at least one call; named: only to that function) or ``{"type": "allowed_tools", ...}``
(only those, ``mode`` auto/required); ``parallel_tool_calls: false`` gives at most one.
The message then has ``content: null``, ``tool_calls: [{"id": "call_...", "type":
"function", "function": {"name", "arguments": "<compact JSON>"}}, ...]`` and
``finish_reason: "tool_calls"``; completion tokens are the argument pieces of all calls.
Like the real API: ``tool_choice`` without ``tools``, an empty ``tools``, a named
function that is not offered, a ``role: "tool"`` message that answers no call of the
assistant message it follows, and an assistant ``tool_calls`` message whose calls are not
all answered by the following tool messages are 400s; ``strict: true`` functions need
strict schemas (see below). A request whose last message is a tool result gets text
unless ``tool_choice`` forces a call.

Structured output (:func:`response_format`): ``{"type": "json_schema", "json_schema":
{"name", "schema", "strict"}}`` answers the JSON of :func:`~.schemas.example` of the
schema (``schema_violation=1``: :func:`~.schemas.violation`); ``{"type": "json_object"}``
answers ``{"answer": "<tokens words>"}`` and, like OpenAI, needs the word "json" in the
messages. With ``strict: true`` the schema must be OpenAI-strict (root an object, every
object ``additionalProperties: false`` and all its properties ``required``), else 400
``Invalid schema for response_format '<name>': In context=(...), ...``.

Media parts (``image_url``, ``file``, ``input_audio``) are checked and noted (see
:mod:`.attachments`): a text answer that is not ``echo`` starts with ``saw image/png 1234
bytes``-style notes, and the call log entry lists them as ``media``.

Streams are SSE ``data: {chat.completion.chunk}`` events: a first chunk with
``delta: {"role": "assistant", "content": ""}``, one chunk per token (the last
one carries ``finish_reason``), then, with ``stream_options.include_usage``, a
``choices: []`` chunk holding ``usage`` (every other chunk has ``usage: null``),
then ``data: [DONE]``. JSON answers stream as content pieces. Tool calls stream, per
call *i*, a delta ``{"tool_calls": [{"index": i, "id", "type": "function", "function":
{"name", "arguments": ""}}]}`` (the first also has ``role``), then its argument pieces
``{"tool_calls": [{"index": i, "function": {"arguments": piece}}]}``; a last chunk with an
empty delta carries ``finish_reason: "tool_calls"``.

Embeddings: ``input`` is a string, strings, a token array or token arrays; more than
``max_inputs`` (default 2048) inputs is 400 ``Too many inputs. The max number of inputs is
N. ...`` (``param: "input"``); an input equal to ``fail_input`` is 400 ``Invalid
'input[i]': ...``. Vectors are :func:`~.text.embedding` of each input's text, so a batch
and single calls agree. Each call is logged for ``GET /_emulator/calls`` (:mod:`.app`).

Errors are ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import re
import time
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
    refused_input,
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


def error(
    status: int,
    message: str | None = None,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """An OpenAI-shaped error response."""
    kind, default_code, default_message = _ERRORS.get(
        status,
        (
            "server_error" if status >= 500 else "invalid_request_error",
            None,
            f"Emulated error (status {status}).",
        ),
    )
    body = {
        "error": {
            "message": message or default_message,
            "type": kind,
            "param": param,
            "code": code or default_code,
        }
    }
    return json_response(body, status, headers)


def scenario_error(status: int, scenario: Scenario) -> Response:
    return error(status, headers=retry_headers(scenario))


_TOOL_CHOICES = ("none", "auto", "required")
_SCHEMA_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def _object_type(node: dict[str, Any]) -> bool:
    kind = node.get("type")
    return kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in node


def _strict_node(node: Any, context: tuple[str, ...]) -> str | None:
    if not isinstance(node, dict):
        return None
    if _object_type(node):
        if node.get("additionalProperties") is not False:
            return f"In context={context}, 'additionalProperties' is required to be supplied and to be false."
        properties = node.get("properties") or {}
        required = node.get("required") or []
        missing = [name for name in properties if name not in required]
        if missing:
            return (
                f"In context={context}, 'required' is required to be supplied and to be an array including "
                f"every key in properties. Missing '{missing[0]}'."
            )
        for name, sub in properties.items():
            if problem := _strict_node(sub, (*context, "properties", name)):
                return problem
    if problem := _strict_node(node.get("items"), (*context, "items")):
        return problem
    for i, sub in enumerate(node.get("anyOf") or ()):
        if problem := _strict_node(sub, (*context, "anyOf", str(i))):
            return problem
    for key in ("$defs", "definitions"):
        for name, sub in (node.get(key) or {}).items():
            if problem := _strict_node(sub, (*context, key, name)):
                return problem
    return None


def strict_problem(schema: Any) -> str | None:
    """What OpenAI's strict mode rejects in ``schema`` (root not an object, an object without
    ``additionalProperties: false`` or with a property missing from ``required``), or None."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        got = schema.get("type") if isinstance(schema, dict) else None
        return f"schema must be a JSON Schema of 'type: \"object\"', got 'type: \"{got}\"'."
    return _strict_node(schema, ())


def check_tool_messages(messages: list[Any]) -> bool:
    """OpenAI's rules for tool results; True when the last message is one.

    A ``role: "tool"`` message must answer (by ``tool_call_id``) a call of the assistant
    message with ``tool_calls`` it follows (other tool messages may sit between), and every
    such call must be answered before the next non-tool message (or the end).
    """
    open_ids: list[Any] | None = None
    answered: set[Any] = set()
    owner = -1
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if open_ids is None:
                raise BadRequest(
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                    "message with 'tool_calls'.",
                    param=f"messages.[{i}].role",
                )
            if call_id not in open_ids:
                raise BadRequest(
                    f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in 'tool_calls' of "
                    "previous message.",
                    param=f"messages.[{i}].tool_call_id",
                )
            answered.add(call_id)
            continue
        if open_ids is not None:
            _all_answered(open_ids, answered, owner)
            open_ids = None
        if role == "assistant" and message.get("tool_calls"):
            calls = message["tool_calls"]
            open_ids = [c.get("id") for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []
            answered, owner = set(), i
    if open_ids is not None:
        _all_answered(open_ids, answered, owner)
    last = messages[-1] if messages else None
    return isinstance(last, dict) and last.get("role") == "tool"


def _all_answered(open_ids: list[Any], answered: set[Any], owner: int) -> None:
    missing = [str(x) for x in open_ids if x not in answered]
    if missing:
        raise BadRequest(
            "An assistant message with 'tool_calls' must be followed by tool messages responding to "
            "each 'tool_call_id'. The following tool_call_ids did not have response messages: "
            + ", ".join(missing),
            param=f"messages.[{owner}].role",
        )


def offered_functions(tools_value: Any) -> list[tuple[str, Any]]:
    """(name, parameters) of the ``function`` tools of an OpenAI/Ollama ``tools`` list (400 if malformed)."""
    if not isinstance(tools_value, list):
        raise BadRequest(
            f"Invalid type for 'tools': expected an array, but got {type(tools_value).__name__} instead.",
            param="tools",
        )
    functions = []
    for i, tool in enumerate(tools_value):
        if not isinstance(tool, dict):
            raise BadRequest(f"Invalid type for 'tools[{i}]': expected an object.", param=f"tools[{i}]")
        if tool.get("type", "function") != "function":
            continue  # custom / built-in tools: offered, never called by the emulator
        function = tool.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(function, dict) or not isinstance(name, str) or not name:
            raise BadRequest(
                f"Missing required parameter: 'tools[{i}].function.name'.", param=f"tools[{i}].function.name"
            )
        parameters = function.get("parameters")
        if function.get("strict") is True and (problem := strict_problem(parameters)):
            raise BadRequest(
                f"Invalid schema for function '{name}': {problem}", param=f"tools[{i}].function.parameters"
            )
        functions.append((name, parameters))
    return functions


def plan_tool_calls(body: dict[str, Any], scenario: Scenario, after_tool_result: bool) -> list[tools.Call]:
    """The tool calls this request gets (``tools``, ``tool_choice``, ``parallel_tool_calls``, scenario)."""
    offered, choice = body.get("tools"), body.get("tool_choice")
    if offered is None or offered == []:
        if offered == []:
            raise BadRequest(
                "Invalid 'tools': empty array. Expected an array with minimum length 1, but got an "
                "empty array instead.",
                param="tools",
            )
        if choice is not None:
            raise BadRequest(
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
                param="tool_choice",
            )
        return []
    functions = offered_functions(offered)
    mode = "auto"
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICES:
            raise BadRequest(
                f"Invalid value: '{choice}'. Supported values are: 'none', 'auto', and 'required'.",
                param="tool_choice",
            )
        mode = choice
    elif isinstance(choice, dict) and choice.get("type") == "function":
        wanted = (choice.get("function") or {}).get("name")
        functions = [f for f in functions if f[0] == wanted]
        if not functions:
            raise BadRequest(
                f"Invalid value for 'tool_choice': no function named '{wanted}' was specified in the "
                "'tools' parameter.",
                param="tool_choice",
            )
        mode = "required"
    elif isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        spec = v if isinstance(v := choice.get("allowed_tools"), dict) else {}
        names = {
            (t.get("function") or {}).get("name") or t.get("name")
            for t in spec.get("tools") or ()
            if isinstance(t, dict)
        }
        functions = [f for f in functions if f[0] in names]
        mode = spec.get("mode", "auto")
        if mode not in ("auto", "required"):
            raise BadRequest(
                f"Invalid value: '{mode}'. Supported values are: 'auto' and 'required'.",
                param="tool_choice.allowed_tools.mode",
            )
    elif choice is not None:
        raise BadRequest(
            "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or an object naming "
            "a function.",
            param="tool_choice",
        )
    if mode == "none":
        return []
    count = tools.call_count(
        scenario,
        forced=mode == "required",
        single=body.get("parallel_tool_calls") is False,
        after_tool_result=after_tool_result,
    )
    return tools.make_calls(functions, count, scenario)


def _mentions_json(messages: list[Any]) -> bool:
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            if "json" in content.lower():
                return True
        elif isinstance(content, list):
            for part in content:
                if (
                    isinstance(part, dict)
                    and isinstance(part.get("text"), str)
                    and "json" in part["text"].lower()
                ):
                    return True
    return False


def response_format(body: dict[str, Any], messages: list[Any]) -> tuple[bool, Any]:
    """``(True, schema or None)`` when ``response_format`` asks for JSON, else ``(False, None)``."""
    fmt = body.get("response_format")
    if fmt is None:
        return False, None
    if not isinstance(fmt, dict):
        raise BadRequest("Invalid type for 'response_format': expected an object.", param="response_format")
    kind = fmt.get("type")
    if kind == "text":
        return False, None
    if kind == "json_object":
        if not _mentions_json(messages):
            raise BadRequest(
                "'messages' must contain the word 'json' in some form, to use 'response_format' of "
                "type 'json_object'.",
                param="messages",
            )
        return True, None
    if kind != "json_schema":
        raise BadRequest(
            f"Invalid value: '{kind}'. Supported values are: 'json_object', 'json_schema', and 'text'.",
            param="response_format.type",
        )
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict):
        raise BadRequest(
            "Missing required parameter: 'response_format.json_schema'.", param="response_format.json_schema"
        )
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(
            "Missing required parameter: 'response_format.json_schema.name'.",
            param="response_format.json_schema.name",
        )
    if not _SCHEMA_NAME.fullmatch(name):
        raise BadRequest(
            "Invalid 'response_format.json_schema.name': string does not match pattern. Expected a "
            "string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
            param="response_format.json_schema.name",
        )
    schema = spec.get("schema")
    if spec.get("strict") is True and (problem := strict_problem(schema)):
        raise BadRequest(f"Invalid schema for response_format '{name}': {problem}", param="response_format")
    return True, schema if isinstance(schema, dict) else None


def _max_tokens(body: dict[str, Any]) -> int | None:
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise BadRequest("max_tokens must be a positive integer.", param="max_tokens")
    return limit


async def chat_completions(request: Request) -> Response:
    """One chat call, logged for ``GET /_emulator/calls`` (kind ``chat``) once it parsed."""
    call: dict[str, Any] = {}
    response = await _chat_completions(request, call)
    return answered(call["entry"], response) if call else response


async def _chat_completions(request: Request, call: dict[str, Any]) -> Response:
    try:
        body = await read_json(request)
        model, messages = body.get("model"), body.get("messages")
        if not isinstance(model, str) or not model:
            raise BadRequest("you must provide a model parameter", param="model")
        if not isinstance(messages, list):
            raise BadRequest("Missing required parameter: 'messages'.", param="messages")
        limit = _max_tokens(body)
        name, scenario = resolve(model, scenario_spec(request, body))
        after_tool_result = check_tool_messages(messages)
        calls = plan_tool_calls(body, scenario, after_tool_result)
        structured, schema = response_format(body, messages)
        notes = attachments.openai_notes(messages)
    except BadRequest as exc:
        return error(400, exc.message, param=exc.param)
    except ScenarioError as exc:
        return error(400, str(exc), param="model")
    call["entry"] = record_call(request, "chat", name, [text.last_user_text(messages)])
    if notes:
        call["entry"]["media"] = notes
    outcome = await preflight(request, scenario)
    if outcome is not None:
        return Silent() if outcome == GONE else scenario_error(outcome, scenario)
    stream = body.get("stream") is True
    if scenario.disconnect_after is not None and not stream:
        return Drop()

    prompt = text.count_prompt_tokens(messages)
    if calls:
        pieces = [piece for call in calls for piece in call.pieces]
        finish = "tool_calls"
    else:
        finish = "stop"
        if structured:
            pieces = text.argument_pieces(tools.json_answer(schema, scenario))
        else:
            pieces = text.answer_pieces(messages, echo=scenario.echo, tokens=scenario.tokens)
            if not scenario.echo:
                pieces = attachments.note_pieces(notes) + pieces
        if limit is not None and limit < len(pieces):
            pieces, finish = pieces[:limit], "length"
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": len(pieces),
        "total_tokens": prompt + len(pieces),
        "prompt_tokens_details": {"cached_tokens": min(scenario.cached, prompt), "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    cid = text.new_id("chatcmpl-")
    headers = {"x-request-id": text.new_id("req_")}
    tool_calls = [
        {
            "id": text.new_id("call_"),
            "type": "function",
            "function": {"name": call.name, "arguments": call.json},
        }
        for call in calls
    ]
    if stream:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return _stream(cid, name, pieces, finish, usage, calls, tool_calls, include_usage, scenario, headers)

    await generation_delay(scenario, len(pieces))
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if calls else "".join(pieces),
        "refusal": None,
        "annotations": [],
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    return json_response(
        {
            "id": cid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": name,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        },
        headers=headers,
    )


_SENTINEL = "\u2063emulator-piece\u2063"


def _stream(
    cid: str,
    name: str,
    pieces: list[str],
    finish: str,
    usage: dict[str, Any],
    calls: list[tools.Call],
    tool_calls: list[dict[str, Any]],
    include_usage: bool,
    scenario: Scenario,
    headers: dict[str, str],
) -> Stream:
    base: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": name,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        data = {
            **base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if include_usage:
            data["usage"] = None
        return b"data: " + orjson.dumps(data) + b"\n\n"

    if not calls:
        head = [chunk({"role": "assistant", "content": "", "refusal": None})]
        before, _, after = chunk({"content": _SENTINEL}).rpartition(orjson.dumps(_SENTINEL))
        body = [before + orjson.dumps(piece) + after for piece in pieces[:-1]]
        if pieces:
            body.append(chunk({"content": pieces[-1]}, finish))
        tail = [] if pieces else [chunk({}, finish)]
    else:
        # Like OpenAI: each call opens with index, id, type and name (empty arguments), then its
        # argument pieces; a last chunk with an empty delta carries finish_reason.
        def opening(index: int) -> dict[str, Any]:
            call = tool_calls[index]
            return {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }

        head = [chunk({"role": "assistant", "content": None, "refusal": None, "tool_calls": [opening(0)]})]
        body = []
        for index, call in enumerate(calls):
            args = [
                chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                for piece in call.pieces
            ]
            if index:
                args[0] = chunk({"tool_calls": [opening(index)]}) + args[0]
            body.extend(args)
        tail = [chunk({}, finish)]
    if include_usage:
        tail.append(b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n")
    tail.append(b"data: [DONE]\n\n")
    return Stream(head, body, tail, scenario, "text/event-stream; charset=utf-8", headers)


MAX_EMBEDDING_INPUTS = 2048


def _embedding_inputs(value: Any) -> list[tuple[Any, str, int]]:
    """(input as sent, text, tokens) per input: a string, a list of strings, a token array or a list of
    token arrays (a token array's text is its ids joined by spaces)."""
    if isinstance(value, str):
        return [(value, value, text.count_words(value))]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) for v in value):
            return [(value, " ".join(map(str, value)), len(value))]
        out: list[tuple[Any, str, int]] = []
        for item in value:
            if isinstance(item, str):
                out.append((item, item, text.count_words(item)))
            elif isinstance(item, list) and item and all(isinstance(v, int) for v in item):
                out.append((item, " ".join(map(str, item)), len(item)))
            else:
                break
        else:
            return out
    raise BadRequest(
        "'input' must be a string, an array of strings or an array of token arrays.", param="input"
    )


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
    entry = record_call(request, "embeddings", name, [raw for raw, _, _ in inputs])
    return answered(entry, await _embed(request, name, scenario, inputs, dims, encoding))


async def _embed(
    request: Request,
    name: str,
    scenario: Scenario,
    inputs: list[tuple[Any, str, int]],
    dims: int,
    encoding: str,
) -> Response:
    outcome = await preflight(request, scenario)
    if outcome is not None:
        return Silent() if outcome == GONE else scenario_error(outcome, scenario)
    if scenario.disconnect_after is not None:
        return Drop()
    limit = scenario.max_inputs or MAX_EMBEDDING_INPUTS
    if len(inputs) > limit:
        return error(
            400,
            f"Too many inputs. The max number of inputs is {limit}. Please split your request into "
            f"batches of {limit} inputs or fewer.",
            param="input",
        )
    refused = refused_input([item for _, item, _ in inputs], scenario)
    if refused is not None:
        return error(
            400,
            f"Invalid 'input[{refused}]': the emulator refuses this input (scenario fail_input).",
            param="input",
        )
    data = []
    for index, (_, item, _) in enumerate(inputs):
        vector = text.embedding(item, dims)
        value: Any = text.embedding_base64(vector) if encoding == "base64" else vector
        data.append({"object": "embedding", "index": index, "embedding": value})
    tokens = sum(count for _, _, count in inputs)
    return json_response(
        {
            "object": "list",
            "data": data,
            "model": name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        },
        headers={"x-request-id": text.new_id("req_")},
    )


def models_body() -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": 1700000000, "owned_by": "emulator"} for m in MODELS],
    }


def model_body(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 1700000000, "owned_by": "emulator"}


def routes() -> list[Route]:
    """Routes of this wire format (``/v1/models`` is shared and dispatched in :mod:`.app`)."""
    return [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
    ]
