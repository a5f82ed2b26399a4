"""Anthropic Messages request bodies as the gateway's OpenAI-shaped chat request: pure.

Request (``parse_messages``; ``ValidationError`` names the field the way Anthropic does,
``messages.0.content.1.source``):

* ``system`` (a string or text blocks, joined by blank lines) is the first, ``system``, message;
* ``messages``: content strings or blocks. ``text`` -> text parts; ``image`` (``base64`` /
  ``url`` / ``file`` source) -> ``image_url`` parts (a ``data:`` URL, the URL, the file id);
  ``document`` -> ``file`` parts (``base64`` and ``text`` sources as ``file_data`` data URLs,
  ``url`` as the gateway's ``file.url``, ``file`` as ``file_id``; ``title`` is the filename;
  a ``content`` source is its text); ``tool_use`` (assistant) -> ``tool_calls``;
  ``tool_result`` (user) -> a ``tool`` message each, before the rest of that user message
  (images a tool returned follow them as a user message: OpenAI tool messages carry text);
  ``thinking`` / ``redacted_thinking`` blocks of earlier turns are dropped; a single text
  block is sent as a string. ``cache_control`` and ``citations`` are dropped.
* ``max_tokens`` (required), ``temperature`` (0-1), ``top_p``, ``stop_sequences`` -> ``stop``,
  ``tools`` (``name``, ``description``, ``input_schema``) -> function tools (server tools,
  e.g. ``web_search_*``, are refused: not every wire format has them), ``tool_choice``
  ``auto`` / ``any`` / ``tool`` / ``none`` -> ``auto`` / ``required`` / a named function /
  ``none`` (``disable_parallel_tool_use`` -> ``parallel_tool_calls: false``),
  ``metadata.user_id`` -> the request event's ``metadata.user_id`` (gateway side only: the wire
  formats share no field for it), ``stream``.
* Gateway extensions as on chat completions: ``fallbacks``, ``client_id``, ``ttft_ms``,
  ``total_ms``. Any other field (``top_k``, ``thinking``, ``service_tier``, ...) reaches the
  provider unchanged, as ``ChatParams.extra``.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from services.contracts.errors import ValidationError

from .chat import ChatCall, check_gateway_fields

Json = dict[str, Any]

#: Anthropic fields mapped here, never forwarded as they are.
OWN = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "temperature",
        "top_p",
        "stop_sequences",
        "stream",
        "tools",
        "tool_choice",
        "metadata",
    }
)
#: Gateway extensions accepted in the body (as on chat completions; ``metadata`` is Anthropic's here).
GATEWAY = frozenset({"fallbacks", "client_id", "ttft_ms", "total_ms"})
#: Ignored: identity comes from the API key only.
IGNORED = frozenset({"tenant_id", "user_id"})

_CHOICE = {"auto": "auto", "any": "required", "none": "none"}


def _bad(param: str, message: str) -> ValidationError:
    return ValidationError(f"{param}: {message}", param=param)


def _is_int(v: Any) -> bool:
    return type(v) is int


def _is_number(v: Any) -> bool:
    return type(v) in (int, float)


# --- request ------------------------------------------------------------------------------


def parse_messages(body: Json, *, count_only: bool = False) -> ChatCall:
    """Check an Anthropic Messages body and map it; ``count_only``: a ``count_tokens`` body
    (no ``max_tokens``, no sampling)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", "Field required: a non-empty string")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _bad("messages", "Field required: a non-empty list of messages")
    messages = system_messages(body.get("system"))
    for i, m in enumerate(raw):
        messages.extend(message(m, f"messages.{i}"))
    fields: Json = {}
    extra: Json = {}
    if not count_only:
        mt = body.get("max_tokens")
        if not isinstance(mt, int) or isinstance(mt, bool) or mt < 1:
            raise _bad("max_tokens", "Field required: an integer >= 1")
        fields["max_tokens"] = mt
        _sampling(body, fields)
    tools = body.get("tools")
    if tools is not None:
        fields["tools"] = function_tools(tools)
    choice = body.get("tool_choice")
    if choice is not None:
        fields["tool_choice"], parallel = tool_choice(choice)
        if parallel is False:
            extra["parallel_tool_calls"] = False
    meta = body.get("metadata")
    if meta is not None:
        if not isinstance(meta, dict):
            raise _bad("metadata", "must be an object")
        uid = meta.get("user_id")
        if uid is not None and not isinstance(uid, str):
            raise _bad("metadata.user_id", "must be a string")
        if uid:
            fields["metadata"] = {"user_id": uid}
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("stream", f"must be a boolean, got {stream!r}")
    for k, v in body.items():
        if k in GATEWAY:
            if v is not None:
                fields[k] = v
        elif k not in OWN and k not in IGNORED:
            extra[k] = v
    for name in ("ttft_ms", "total_ms"):
        v = body.get(name)
        if v is not None and (not _is_int(v) or v <= 0):
            raise _bad(name, f"must be a positive integer, got {v!r}")
    check_gateway_fields(fields)
    return ChatCall(model, messages, bool(stream) and not count_only, False, fields, extra)


def _sampling(body: Json, fields: Json) -> None:
    for name, top in (("temperature", 1.0), ("top_p", 1.0)):
        v = body.get(name)
        if v is None:
            continue
        if not _is_number(v) or not 0 <= v <= top:
            raise _bad(name, f"must be a number from 0 to {top:g}, got {v!r}")
        fields[name] = v
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _bad("stop_sequences", "must be a list of strings")
        if stops:
            fields["stop"] = stops


def system_messages(system: Any) -> list[Json]:
    """``system`` as zero or one OpenAI ``system`` message."""
    if system is None:
        return []
    if isinstance(system, str):
        text = system
    elif isinstance(system, list):
        texts = []
        for j, b in enumerate(system):
            if not isinstance(b, dict) or b.get("type") != "text" or not isinstance(b.get("text"), str):
                raise _bad(f"system.{j}", "system blocks must be text blocks {type: text, text}")
            texts.append(b["text"])
        text = "\n\n".join(texts)
    else:
        raise _bad("system", "must be a string or a list of text blocks")
    return [{"role": "system", "content": text}] if text else []


def message(m: Any, at: str) -> list[Json]:
    """One Anthropic message as OpenAI messages (a user message with tool results is several)."""
    if not isinstance(m, dict):
        raise _bad(at, "must be an object {role, content}")
    role = m.get("role")
    if role not in ("user", "assistant"):
        raise _bad(f"{at}.role", f"must be 'user' or 'assistant', got {role!r}")
    content = m.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list) or not content:
        raise _bad(f"{at}.content", "must be a string or a non-empty list of content blocks")
    blocks: list[Json] = []
    for j, b in enumerate(content):
        if not isinstance(b, dict) or not isinstance(b.get("type"), str):
            raise _bad(f"{at}.content.{j}", "a content block is an object with a type")
        blocks.append(b)
    if role == "assistant":
        return [assistant(blocks, f"{at}.content")]
    return user(blocks, f"{at}.content")


def assistant(blocks: list[Json], at: str) -> Json:
    texts: list[str] = []
    calls: list[Json] = []
    for j, b in enumerate(blocks):
        kind = b["type"]
        if kind == "text":
            texts.append(_text(b, f"{at}.{j}"))
        elif kind == "tool_use":
            tid, name = b.get("id"), b.get("name")
            if not isinstance(tid, str) or not tid or not isinstance(name, str) or not name:
                raise _bad(f"{at}.{j}", "a tool_use block needs an id and a name")
            args = b.get("input", {})
            if not isinstance(args, dict):
                raise _bad(f"{at}.{j}.input", "must be an object")
            calls.append(
                {
                    "id": tid,
                    "type": "function",
                    "function": {"name": name, "arguments": orjson.dumps(args).decode()},
                }
            )
        elif kind not in ("thinking", "redacted_thinking"):
            raise _bad(f"{at}.{j}.type", f"an assistant message cannot hold a {kind!r} block here")
    out: Json = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        out["tool_calls"] = calls
    return out


def user(blocks: list[Json], at: str) -> list[Json]:
    """Tool results first (one ``tool`` message each), then the user's other blocks."""
    tools: list[Json] = []
    returned: list[Json] = []  # the images and documents tool results carried
    parts: list[Json] = []
    for j, b in enumerate(blocks):
        where = f"{at}.{j}"
        if b["type"] == "tool_result":
            text, media = tool_result(b, where)
            tools.append({"role": "tool", "tool_call_id": b["tool_use_id"], "content": text})
            returned.extend(media)
        else:
            parts.append(part(b, where))
    out = tools
    if returned:
        out.append({"role": "user", "content": returned})
    if parts or not tools:
        single = len(parts) == 1 and parts[0]["type"] == "text"
        out.append({"role": "user", "content": parts[0]["text"] if single else parts})
    return out


def tool_result(b: Json, at: str) -> tuple[str, list[Json]]:
    """(the result's text, the images and documents it returned)."""
    if not isinstance(b.get("tool_use_id"), str) or not b["tool_use_id"]:
        raise _bad(f"{at}.tool_use_id", "Field required")
    content = b.get("content")
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise _bad(f"{at}.content", "must be a string or a list of content blocks")
    texts: list[str] = []
    media: list[Json] = []
    for k, c in enumerate(content):
        where = f"{at}.content.{k}"
        kind = c.get("type") if isinstance(c, dict) else None
        if kind == "text":
            texts.append(_text(c, where))
        elif kind in ("image", "document"):
            media.append(part(c, where))
        else:
            raise _bad(where, f"a tool result holds text, image or document blocks, not {kind!r}")
    return "\n".join(texts), media


def part(b: Json, at: str) -> Json:
    """A user content block as an OpenAI content part."""
    kind = b["type"]
    if kind == "text":
        return {"type": "text", "text": _text(b, at)}
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": _image_url(b.get("source"), f"{at}.source")}}
    if kind == "document":
        return document(b, at)
    if kind == "tool_use":
        raise _bad(f"{at}.type", "tool_use blocks belong in assistant messages")
    raise _bad(f"{at}.type", f"unsupported content block type {kind!r}")


def _text(b: Json, at: str) -> str:
    text = b.get("text")
    if not isinstance(text, str):
        raise _bad(f"{at}.text", "Field required: a string")
    return text


def _source(source: Any, at: str) -> Json:
    if not isinstance(source, dict) or not isinstance(source.get("type"), str):
        raise _bad(at, "Field required: an object with a type")
    return source


def _field(source: Json, name: str, at: str) -> str:
    v = source.get(name)
    if not isinstance(v, str) or not v:
        raise _bad(f"{at}.{name}", "Field required: a non-empty string")
    return v


def _image_url(source: Any, at: str) -> str:
    s = _source(source, at)
    kind = s["type"]
    if kind == "base64":
        return f"data:{_field(s, 'media_type', at)};base64,{_field(s, 'data', at)}"
    if kind == "url":
        return _field(s, "url", at)
    if kind == "file":
        return _field(s, "file_id", at)
    raise _bad(f"{at}.type", f"an image source is base64, url or file, not {kind!r}")


def document(b: Json, at: str) -> Json:
    s = _source(b.get("source"), f"{at}.source")
    title = b.get("title") if isinstance(b.get("title"), str) and b.get("title") else None
    kind = s["type"]
    at = f"{at}.source"
    if kind == "base64":
        media_type = _field(s, "media_type", at)
        url = f"data:{media_type};base64,{_field(s, 'data', at)}"
        return _file(
            {"file_data": url}, title or ("document.pdf" if media_type.endswith("/pdf") else "document")
        )
    if kind == "text":
        data = s.get("data")
        if not isinstance(data, str):
            raise _bad(f"{at}.data", "Field required: a string")
        media_type = (
            s["media_type"] if isinstance(s.get("media_type"), str) and s["media_type"] else "text/plain"
        )
        encoded = base64.b64encode(data.encode()).decode()
        return _file({"file_data": f"data:{media_type};base64,{encoded}"}, title or "document.txt")
    if kind == "url":
        return _file({"url": _field(s, "url", at)}, title)
    if kind == "file":
        return _file({"file_id": _field(s, "file_id", at)}, title)
    if kind == "content":
        content = s.get("content")
        if isinstance(content, str):
            text = content
        elif isinstance(content, list):
            text = "\n".join(
                _text(c, f"{at}.content.{k}") for k, c in enumerate(content) if isinstance(c, dict)
            )
        else:
            raise _bad(f"{at}.content", "must be a string or a list of text blocks")
        return {"type": "text", "text": f"{title}\n{text}" if title else text}
    raise _bad(f"{at}.type", f"a document source is base64, text, url, file or content, not {kind!r}")


def _file(body: Json, filename: str | None) -> Json:
    if filename:
        body["filename"] = filename
    return {"type": "file", "file": body}


def function_tools(tools: Any) -> list[Json]:
    """Anthropic client tools as OpenAI function tools."""
    if not isinstance(tools, list):
        raise _bad("tools", "must be a list of tools")
    out = []
    for i, t in enumerate(tools):
        at = f"tools.{i}"
        if not isinstance(t, dict):
            raise _bad(at, "a tool is an object {name, description, input_schema}")
        kind = t.get("type")
        if kind not in (None, "custom"):
            raise _bad(
                f"{at}.type", f"server tool {kind!r} is not supported by the gateway: define a client tool"
            )
        name = t.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(f"{at}.name", "Field required: a non-empty string")
        schema = t.get("input_schema")
        if not isinstance(schema, dict):
            raise _bad(f"{at}.input_schema", "Field required: a JSON Schema object")
        fn: Json = {"name": name, "parameters": schema}
        desc = t.get("description")
        if desc is not None:
            if not isinstance(desc, str):
                raise _bad(f"{at}.description", "must be a string")
            fn["description"] = desc
        if isinstance(t.get("strict"), bool):
            fn["strict"] = t["strict"]
        out.append({"type": "function", "function": fn})
    return out


def tool_choice(choice: Any) -> tuple[str | Json, bool | None]:
    """(OpenAI ``tool_choice``, ``parallel_tool_calls`` when ``disable_parallel_tool_use`` says so)."""
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        raise _bad("tool_choice", "must be an object {type: auto | any | tool | none}")
    kind = choice["type"]
    parallel = False if choice.get("disable_parallel_tool_use") is True else None
    if kind in _CHOICE:
        return _CHOICE[kind], parallel
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise _bad("tool_choice.name", "Field required for tool_choice type 'tool'")
        return {"type": "function", "function": {"name": name}}, parallel
    raise _bad("tool_choice.type", f"must be auto, any, tool or none, got {kind!r}")
