"""The Gemini request, built from the OpenAI-shaped one (see ``gemini.py`` for the mapping):
turns and parts, resolved media (inline or uploaded), tools, ``toolConfig`` and
``generationConfig``; and the tool-call ids the gateway makes for Gemini's calls. Pure."""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Mapping
from typing import Any

import orjson

from services.contracts.errors import CapabilityNotSupported, ValidationError
from services.contracts.events import ChatParams, ChatRequested, MediaRef, Message, ToolCall

from . import _media
from ._gemini_files import UploadedFile
from ._http import tool_arguments

#: The most base64 one request carries inline (Gemini refuses requests over 20 MB); media past it is uploaded.
INLINE_MAX = 18 * 1024 * 1024
#: OpenAI fields with no Gemini counterpart: never sent.
DROPPED = frozenset(
    {
        "parallel_tool_calls",
        "user",
        "store",
        "service_tier",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "stream",
        "stream_options",
        "model",
        "contents",
    }
)
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"})
_AUDIO = {"wav": "audio/wav", "mp3": "audio/mp3"}
#: Ids the gateway made (``call_<n>``): Gemini never saw them, so they are not sent back.
_MADE_ID = re.compile(r"call_\d+")
_SIGNATURE = "~"


def call_id(index: int, given: str | None = None, signature: str | None = None) -> str:
    """A call's id: the provider's, else ``call_<index>``; a thought signature after ``~``."""
    base = given or f"call_{index}"
    return f"{base}{_SIGNATURE}{signature}" if signature else base


def split_call_id(tool_call_id: str) -> tuple[str | None, str | None]:
    """``(id to send back or None, thought signature or None)`` of a tool call id."""
    base, _, signature = tool_call_id.partition(_SIGNATURE)
    return (None if _MADE_ID.fullmatch(base) else base or None), signature or None


# --- request: media ---------------------------------------------------------------------------------


def _inline_candidates(messages: list[Message]) -> list[MediaRef]:
    """Every resolved media part that goes as bytes (not a passed URL, not a text file), in order."""
    out = []
    for m in messages:
        for part in m.content if isinstance(m.content, list) else ():
            kind = _media.part_kind(part)
            ref = _media.part_media(part) if kind is not None else None
            if ref is None or _media.passed_url(part) or (kind == "file" and _media.is_text(ref)):
                continue
            out.append(ref)
    return out


def to_upload(req: ChatRequested, inline_max: int = INLINE_MAX) -> list[MediaRef]:
    """The media to upload before sending ``req``: parts in order go inline while their base64
    fits what is left of ``inline_max``; the others (each media once) are uploaded."""
    left, out, seen = inline_max, [], set()
    for ref in _inline_candidates(req.messages):
        size = len(_media.media_data(ref))
        if size <= left:
            left -= size
        elif ref.media_id not in seen:
            seen.add(ref.media_id)
            out.append(ref)
    return out


def _check_type(ref: MediaRef) -> None:
    mime = ref.mime_type
    if mime.startswith("image/") and mime not in IMAGE_TYPES:
        raise _media.refuse("gemini", f"{mime} images", " (png, jpeg, webp, heic and heif only)")
    if not mime.startswith(("image/", "audio/", "video/")) and mime != _media.PDF:
        raise _media.refuse("gemini", f"{mime} files", " (only images, audio, video, PDF and text files)")


def media_part(part: dict[str, Any], ref: MediaRef, files: Mapping[str, UploadedFile]) -> dict[str, Any]:
    """A resolved media part as a Gemini part (see the module docstring)."""
    if part.get("type") == "file" and _media.is_text(ref):
        return {
            "text": _media.text_part(_media.filename(part, ref, "document.txt"), _media.text_of(ref))["text"]
        }
    _check_type(ref)
    url = _media.passed_url(part)
    if url:
        return {"fileData": {"mimeType": ref.mime_type, "fileUri": url}}
    uploaded = files.get(ref.media_id)
    if uploaded is not None:
        return {"fileData": {"mimeType": uploaded.mime_type, "fileUri": uploaded.uri}}
    return {"inlineData": {"mimeType": ref.mime_type, "data": _media.media_data(ref)}}


def _url_part(url: str, default_mime: str | None = None) -> dict[str, Any]:
    """A part of a URL the media-store did not resolve: ``data:`` inline, others as ``fileData``."""
    if url.startswith("data:"):
        meta, _, data = url[5:].partition(",")
        mime = meta.split(";", 1)[0] or default_mime or "application/octet-stream"
        return {"inlineData": {"mimeType": mime, "data": data}}
    out: dict[str, Any] = {"fileUri": url}
    guessed = mimetypes.guess_type(url.split("?", 1)[0])[0] or default_mime
    if guessed:
        out["mimeType"] = guessed
    return {"fileData": out}


def _unresolved(part: dict[str, Any], kind: str) -> dict[str, Any]:
    spec = part.get(part.get("type") or "")
    if kind == "audio":
        if not isinstance(spec, dict) or not isinstance(spec.get("data"), str):
            raise ValidationError("input_audio needs data", param="messages")
        fmt = spec.get("format")
        if fmt not in _AUDIO:
            raise CapabilityNotSupported(
                f"gemini input_audio takes wav or mp3, not {fmt!r}", param="messages"
            )
        return {"inlineData": {"mimeType": _AUDIO[fmt], "data": spec["data"]}}
    if kind == "file":
        data = spec.get("file_data") if isinstance(spec, dict) else None
        if isinstance(data, str) and data.startswith("data:"):
            return _url_part(data, _media.PDF)
        raise _media.refuse("gemini", "file parts the gateway did not resolve")
    url = spec.get("url") if isinstance(spec, dict) else spec
    if not isinstance(url, str) or not url:
        raise ValidationError(f"{part.get('type')} part needs a url", param="messages")
    return _url_part(url)


def _part(part: dict[str, Any], files: Mapping[str, UploadedFile]) -> dict[str, Any] | None:
    """One OpenAI content part as a Gemini part (None: nothing to send, an empty text)."""
    if part.get("type") == "text":
        return {"text": part["text"]} if part.get("text") else None
    kind = _media.part_kind(part)
    if kind is None:
        raise _media.refuse("gemini", f"{part.get('type')!r} content parts")
    ref = _media.part_media(part)
    return media_part(part, ref, files) if ref is not None else _unresolved(part, kind)


def _parts(
    content: str | list[dict[str, Any]] | None, files: Mapping[str, UploadedFile]
) -> list[dict[str, Any]]:
    if not content:
        return []
    if isinstance(content, str):
        return [{"text": content}]
    return [p for p in (_part(c, files) for c in content) if p is not None]


# --- request: turns ---------------------------------------------------------------------------------


def _text(content: str | list[dict[str, Any]] | None) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or () if p.get("type") == "text")


def _call_part(tc: ToolCall) -> dict[str, Any]:
    given, signature = split_call_id(tc.id)
    call: dict[str, Any] = {"name": tc.function.name, "args": tool_arguments(tc)}
    if given:
        call["id"] = given
    part: dict[str, Any] = {"functionCall": call}
    if signature:
        part["thoughtSignature"] = signature
    return part


def _result(m: Message, call_names: dict[str, str]) -> dict[str, Any]:
    name = m.name or call_names.get(m.tool_call_id or "")
    if not name:
        raise ValidationError(
            f"tool result {m.tool_call_id!r} answers no tool call of the conversation", param="messages"
        )
    output = _text(m.content)
    try:
        value = orjson.loads(output)
    except orjson.JSONDecodeError:
        value = None
    response: dict[str, Any] = {
        "name": name,
        "response": value if isinstance(value, dict) else {"output": output},
    }
    given, _ = split_call_id(m.tool_call_id or "")
    if given:
        response["id"] = given
    return {"functionResponse": response}


def to_contents(
    messages: list[Message], files: Mapping[str, UploadedFile] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(system instruction parts, contents)``. Consecutive tool results share one user turn;
    a turn left with no parts (an empty message) is not sent (Gemini refuses empty parts)."""
    files = files or {}
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    results: list[dict[str, Any]] | None = None  # the open turn of tool results
    for m in messages:
        if m.role in ("system", "developer"):
            if text := _text(m.content):
                system.append({"text": text})
            continue
        if m.role == "tool":
            if results is None:
                results = []
                contents.append({"role": "user", "parts": results})
            results.append(_result(m, call_names))
            continue
        results = None
        parts = _parts(m.content, files)
        if m.role == "assistant":
            for tc in m.tool_calls or ():
                call_names[tc.id] = tc.function.name
                parts.append(_call_part(tc))
        if parts:
            contents.append({"role": "model" if m.role == "assistant" else "user", "parts": parts})
    return system, contents


# --- request: tools and config ------------------------------------------------------------------------


def tools_of(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Function tools as one ``functionDeclarations`` tool; native (untyped) tools as they are."""
    declarations, native = [], []
    for t in tools:
        if t.get("type") == "function" and isinstance(t.get("function"), dict):
            fn = t["function"]
            declaration: dict[str, Any] = {"name": fn["name"]}
            if fn.get("description"):
                declaration["description"] = fn["description"]
            if fn.get("parameters"):
                declaration["parametersJsonSchema"] = fn["parameters"]
            declarations.append(declaration)
        elif "type" not in t:
            native.append(t)
        else:
            raise CapabilityNotSupported(
                f"gemini takes function tools, not {t['type']!r} tools", param="tools"
            )
    return ([{"functionDeclarations": declarations}] if declarations else []) + native


def tool_config(choice: str | dict[str, Any]) -> dict[str, Any]:
    """``tool_choice`` as ``toolConfig``."""
    names: list[Any] | None = None
    if isinstance(choice, str):
        modes = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
        if choice not in modes:
            raise ValidationError(
                f"tool_choice {choice!r} is not auto, none or required", param="tool_choice"
            )
        mode = modes[choice]
    elif choice.get("type") == "function":
        mode, names = "ANY", [(choice.get("function") or {}).get("name")]
    elif choice.get("type") == "allowed_tools":
        spec = choice.get("allowed_tools") or {}
        mode = "ANY" if spec.get("mode") == "required" else "VALIDATED"
        names = [(t.get("function") or {}).get("name") or t.get("name") for t in spec.get("tools") or ()]
    else:
        raise ValidationError(
            f"tool_choice of type {choice.get('type')!r} is not supported", param="tool_choice"
        )
    config: dict[str, Any] = {"mode": mode}
    if names:
        config["allowedFunctionNames"] = names
    return {"functionCallingConfig": config}


def generation_config(params: ChatParams, extra: dict[str, Any]) -> dict[str, Any]:
    """``generationConfig``: ``extra["generationConfig"]``, then the typed params over it."""
    given = extra.pop("generationConfig", None) or {}
    if not isinstance(given, dict):
        raise ValidationError("generationConfig must be an object", param="generationConfig")
    config: dict[str, Any] = dict(given)
    fallback = extra.pop("max_completion_tokens", None)
    max_tokens = params.max_tokens or fallback
    for name, value in (
        ("temperature", params.temperature),
        ("topP", params.top_p),
        ("maxOutputTokens", max_tokens),
        ("stopSequences", params.stop),
        ("seed", params.seed),
        ("presencePenalty", params.presence_penalty),
        ("frequencyPenalty", params.frequency_penalty),
    ):
        if value is not None:
            config[name] = value
    rf = params.response_format or {}
    if rf.get("type") in ("json_schema", "json_object"):
        config["responseMimeType"] = "application/json"
        schema = (rf.get("json_schema") or {}).get("schema") if rf.get("type") == "json_schema" else None
        if isinstance(schema, dict):
            config["responseJsonSchema"] = schema
    return config
