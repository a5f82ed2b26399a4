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

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import gemini_files, text, tools
from .common import (
    BODY_FIELD,
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
from .scenario import Scenario, ScenarioError, resolve

API_VERSION = "v1beta"
MODELS = ("gemini-emu", "gemini-emu-flash")
#: The real API's limit on a request's size (inline media included).
MAX_REQUEST_BYTES = 20 * 1024 * 1024

#: GenerateContentRequest fields (camel case; snake case is read too).
_REQUEST_FIELDS = frozenset(
    {
        "model",
        "contents",
        "tools",
        "toolConfig",
        "safetySettings",
        "systemInstruction",
        "generationConfig",
        "cachedContent",
        "serviceTier",
        "store",
        BODY_FIELD,
    }
)
#: Part fields: exactly one of the data fields, plus metadata.
_PART_DATA = (
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
)
_PART_META = frozenset({"thought", "thoughtSignature", "videoMetadata", "partMetadata", "mediaResolution"})
_MODES = ("AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED")
_JSON = "application/json"


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def get(obj: dict[str, Any], name: str) -> Any:
    """Field ``name`` (camel case) of a request object, or its snake-case spelling."""
    value = obj.get(name)
    return obj.get(_snake(name)) if value is None else value


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def _unknown(obj: dict[str, Any], known: frozenset[str], where: str) -> None:
    for key in obj:
        if _camel(key) not in known:
            raise BadRequest(
                f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': Cannot find field."
            )


# --- the request ------------------------------------------------------------------------------------


@dataclass
class Seen:
    """What the request held: turns as ``{"role", "content": [text parts]}`` (for the shared
    counting helpers), media notes, and whether the last turn answers function calls."""

    turns: list[dict[str, Any]] = field(default_factory=list)
    system: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    after_tool_result: bool = False


def _b64_size(data: Any, where: str) -> int:
    """Decoded size of base64 ``data``, standard or URL-safe (both are valid JSON bytes)."""
    if not isinstance(data, str):
        raise BadRequest(f"Invalid value at '{where}' (TYPE_BYTES), expected a base64 string.")
    padded = data.replace("-", "+").replace("_", "/")
    padded += "=" * (-len(padded) % 4)
    try:
        return len(base64.b64decode(padded, validate=True))
    except (binascii.Error, ValueError):
        raise BadRequest(f"Invalid value at '{where}' (TYPE_BYTES), Base64 decoding failed.") from None


def _family(mime: str) -> str:
    head = mime.split("/", 1)[0]
    return head if head in ("image", "audio", "video") else "document"


def _file_note(request: Request, data: Any, where: str) -> str:
    if not isinstance(data, dict):
        raise BadRequest(f"Invalid value at '{where}': expected an object.")
    uri = get(data, "fileUri")
    if not isinstance(uri, str) or not uri:
        raise BadRequest(f"'{where}.file_uri' is required.")
    mime = get(data, "mimeType")
    if gemini_files.file_id_of(uri) is not None:
        stored = gemini_files.lookup(request, uri)
        if stored is None:
            raise ApiError(403, gemini_files.NOT_THERE.format(id=gemini_files.file_id_of(uri)))
        return f"saw {stored.mime_type} {stored.size} bytes"
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https", "gs") or not parts.hostname:
        raise BadRequest(f"Invalid or unsupported file uri: {uri}")
    return f"saw {_family(mime) if isinstance(mime, str) else 'document'} url {parts.hostname}"


def _part(request: Request, part: Any, where: str, seen: Seen, words: list[dict[str, Any]]) -> str | None:
    """Check one part; note its media; keep its text. Returns its data field's name."""
    if not isinstance(part, dict):
        raise BadRequest(f"Invalid value at '{where}': expected an object.")
    _unknown(part, frozenset(_PART_DATA) | _PART_META, where)
    kinds = [k for k in _PART_DATA if get(part, k) is not None]
    if len(kinds) != 1:
        raise BadRequest(f"'{where}' must hold exactly one of {', '.join(_PART_DATA)}, not {len(kinds)}.")
    kind, value = kinds[0], get(part, kinds[0])
    if kind == "text":
        if not isinstance(value, str):
            raise BadRequest(f"Invalid value at '{where}.text' (TYPE_STRING).")
        if not get(part, "thought"):
            words.append({"type": "text", "text": value})
    elif kind == "inlineData":
        if not isinstance(value, dict) or not isinstance(get(value, "mimeType"), str):
            raise BadRequest(f"'{where}.inline_data.mime_type' is required.")
        size = _b64_size(get(value, "data"), f"{where}.inline_data.data")
        seen.notes.append(f"saw {get(value, 'mimeType')} {size} bytes")
    elif kind == "fileData":
        seen.notes.append(_file_note(request, value, f"{where}.file_data"))
    elif kind in ("functionCall", "functionResponse"):
        if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
            raise BadRequest(f"'{where}.{_snake(kind)}.name' is required.")
        if kind == "functionResponse":
            words.append({"type": "text", "text": orjson.dumps(value.get("response") or {}).decode()})
    return kind


def _turns(request: Request, body: dict[str, Any]) -> Seen:
    seen = Seen()
    system = get(body, "systemInstruction")
    if system is not None:
        if not isinstance(system, dict) or not isinstance(system.get("parts"), list):
            raise BadRequest("Invalid value at 'system_instruction': expected a Content with parts.")
        for j, part in enumerate(system["parts"]):
            _part(request, part, f"system_instruction.parts[{j}]", seen, seen.system)
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise BadRequest("* GenerateContentRequest.contents: contents is not specified")
    calls: list[str] | None = None  # names of the previous turn's function calls
    for i, content in enumerate(contents):
        where = f"contents[{i}]"
        if not isinstance(content, dict):
            raise BadRequest(f"Invalid value at '{where}': expected a Content object.")
        _unknown(content, frozenset({"role", "parts"}), where)
        role = content.get("role") or "user"
        if role not in ("user", "model"):
            raise BadRequest(f"Please use a valid role: user, model. ({where}.role is {role!r})")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise BadRequest(f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.")
        words: list[dict[str, Any]] = []
        kinds = [_part(request, p, f"{where}.parts[{j}]", seen, words) for j, p in enumerate(parts)]
        responses = [
            get(p, "functionResponse")["name"]
            for p, k in zip(parts, kinds, strict=True)
            if k == "functionResponse"
        ]
        if responses:
            if calls is None:
                raise BadRequest(
                    "Please ensure that function response turn comes immediately after a function call turn."
                )
            if sorted(responses) != sorted(calls):
                raise BadRequest(
                    "Please ensure that the number of function response parts is equal to the number of "
                    "function call parts of the function call turn."
                )
        calls = [
            get(p, "functionCall")["name"] for p, k in zip(parts, kinds, strict=True) if k == "functionCall"
        ] or None
        seen.after_tool_result = bool(responses)
        seen.turns.append({"role": "assistant" if role == "model" else "user", "content": words})
    return seen


def _schema(node: Any) -> Any:
    """A Gemini ``Schema`` (OpenAPI subset, upper-case types, ``nullable``) as JSON Schema."""
    if isinstance(node, list):
        return [_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "type" and isinstance(value, str):
            out[key] = value.lower()
        elif key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {k: _schema(v) for k, v in value.items()}
        elif key in ("items", "anyOf", "oneOf", "allOf", "additionalProperties", "prefixItems"):
            out[key] = _schema(value)
        elif key not in ("nullable", "propertyOrdering"):
            out[key] = value
    if node.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _functions(body: dict[str, Any]) -> list[tuple[str, Any]]:
    offered = body.get("tools")
    if offered is None:
        return []
    if not isinstance(offered, list):
        raise BadRequest("Invalid value at 'tools': expected a list of Tool objects.")
    out: list[tuple[str, Any]] = []
    for i, tool in enumerate(offered):
        if not isinstance(tool, dict):
            raise BadRequest(f"Invalid value at 'tools[{i}]': expected a Tool object.")
        declarations = get(tool, "functionDeclarations") or []
        if not isinstance(declarations, list):
            raise BadRequest(f"Invalid value at 'tools[{i}].function_declarations': expected a list.")
        for j, fn in enumerate(declarations):
            name = fn.get("name") if isinstance(fn, dict) else None
            if not isinstance(name, str) or not name:
                raise BadRequest(
                    f"* GenerateContentRequest.tools[{i}].function_declarations[{j}].name: Name cannot be empty."
                )
            schema = get(fn, "parametersJsonSchema")
            out.append((name, schema if schema is not None else _schema(get(fn, "parameters"))))
    return out


def plan_calls(body: dict[str, Any], scenario: Scenario, after_tool_result: bool) -> list[tools.Call]:
    """The function calls this request gets (``tools``, ``toolConfig``, scenario)."""
    functions = _functions(body)
    config = get(body, "toolConfig") or {}
    calling = (get(config, "functionCallingConfig") or {}) if isinstance(config, dict) else {}
    mode = (calling.get("mode") or "AUTO") if isinstance(calling, dict) else "AUTO"
    if mode not in _MODES:
        raise BadRequest(f"Invalid value at 'tool_config.function_calling_config.mode' ({mode!r}).")
    allowed = get(calling, "allowedFunctionNames") if isinstance(calling, dict) else None
    if allowed:
        if mode not in ("ANY", "VALIDATED"):
            raise BadRequest(
                "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: "
                "allowed_function_names should only be set when the mode is ANY or VALIDATED."
            )
        missing = [n for n in allowed if n not in {name for name, _ in functions}]
        if missing:
            raise BadRequest(f"allowed_function_names names undeclared functions: {', '.join(missing)}.")
        functions = [f for f in functions if f[0] in allowed]
    if mode == "NONE" or not functions:
        return []
    count = tools.call_count(scenario, forced=mode == "ANY", after_tool_result=after_tool_result)
    return tools.make_calls(functions, count, scenario)


def _generation(body: dict[str, Any]) -> tuple[int | None, bool, Any]:
    """``(maxOutputTokens, JSON answer, its schema)`` from ``generationConfig``."""
    config = get(body, "generationConfig") or {}
    if not isinstance(config, dict):
        raise BadRequest("Invalid value at 'generation_config': expected an object.")
    limit = get(config, "maxOutputTokens")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise BadRequest("* GenerateContentRequest.generation_config.max_output_tokens: must be positive.")
    mime = get(config, "responseMimeType") or "text/plain"
    json_schema = get(config, "responseJsonSchema")
    if json_schema is None:
        json_schema = config.get("_responseJsonSchema")
    schema = json_schema if json_schema is not None else _schema(get(config, "responseSchema"))
    if schema is not None and mime != _JSON:
        raise BadRequest(
            "* GenerateContentRequest.generation_config.response_mime_type: a response schema needs "
            f"response_mime_type application/json, not {mime!r}."
        )
    return limit, mime == _JSON, schema


def _last_user_text(seen: Seen) -> str:
    return text.last_user_text(seen.turns)


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


async def _read(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_REQUEST_BYTES:
        raise BadRequest(f"Request payload size exceeds the limit: {MAX_REQUEST_BYTES} bytes.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Invalid JSON payload received. {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("Invalid JSON payload received. Expected an object.")
    return body


def _auth(request: Request) -> str | None:
    if request.headers.get("x-goog-api-key"):
        return "header"
    return "query" if request.query_params.get("key") else None


async def _generate(request: Request, model: str, stream: bool, call: dict[str, Any]) -> Response:
    try:
        body = await _read(request)
        _unknown(body, _REQUEST_FIELDS, "")
        name, scenario = resolve(model.removeprefix("models/"), scenario_spec(request, body))
        seen = _turns(request, body)
        calls = plan_calls(body, scenario, seen.after_tool_result)
        limit, structured, schema = _generation(body)
    except BadRequest as exc:
        return error(400, exc.message)
    except ScenarioError as exc:
        return error(400, str(exc))
    entry = call["entry"] = record_call(request, "chat", name, [_last_user_text(seen)])
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
            pieces = text.echo_pieces(_last_user_text(seen))
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
