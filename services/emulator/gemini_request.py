"""The Gemini emulator's reading of a ``generateContent`` request: the checks the real API makes
(see :mod:`.gemini_api`), the media notes, the turns' text for the shared counting helpers, the
function calls planned and the ``generationConfig`` that matters."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request

from . import gemini_files, text, tools
from .common import BODY_FIELD, BadRequest
from .gemini_files import ApiError
from .scenario import Scenario

#: The real API's limit on a request's size (inline media included).
MAX_REQUEST_BYTES = 20 * 1024 * 1024

#: GenerateContentRequest fields (camel case; snake case is read too).
REQUEST_FIELDS = frozenset(
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


def check_fields(obj: dict[str, Any], known: frozenset[str], where: str) -> None:
    for key in obj:
        if key not in known and _camel(key) not in known:
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
    check_fields(part, frozenset(_PART_DATA) | _PART_META, where)
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


def read_turns(request: Request, body: dict[str, Any]) -> Seen:
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
        check_fields(content, frozenset({"role", "parts"}), where)
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


def generation(body: dict[str, Any]) -> tuple[int | None, bool, Any]:
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


def last_user_text(seen: Seen) -> str:
    return text.last_user_text(seen.turns)


async def read_body(request: Request) -> dict[str, Any]:
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
