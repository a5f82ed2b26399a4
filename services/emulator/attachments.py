"""What media a chat request carried, said back in the answer, so a test sees what a provider got.

Every image, document and audio part of every message, in order, gives one note:

* inline bytes: ``saw <mime> <n> bytes`` (``n`` counts the decoded bytes; Ollama's bare base64
  images get their type from their magic bytes);
* a URL the provider would fetch: ``saw <image|document> url <host>``;
* a provider file id: ``saw file id <id>``.

A text answer (not an ``echo`` answer, not tool calls or JSON) starts with the notes, joined
by ``"; "`` and ended by a newline (:func:`note_pieces`: one piece per word, counted as
completion tokens); the call log entry (``GET /_emulator/calls``) gets them as ``media``.

Like the real APIs, a part no provider takes is a 400: base64 that does not decode, a type
the format does not read (OpenAI: an ``input_audio`` format other than ``wav`` / ``mp3``, a
``file`` that is not a PDF, an unknown image ``detail``; Anthropic: image types other than
jpeg/png/gif/webp, OpenAI-shaped parts), and the gateway's own ``media`` key on any part (it
must never reach a provider).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from .common import BadRequest
from .text import echo_pieces

#: The gateway-internal key of a resolved media part.
MEDIA_KEY = "media"
_DETAILS = ("auto", "low", "high")
_AUDIO_FORMATS = {"wav": "audio/wav", "mp3": "audio/mpeg"}
ANTHROPIC_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_OPENAI_SHAPES = ("image_url", "file", "input_audio", "video_url")
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def note_pieces(notes: list[str]) -> list[str]:
    """The answer pieces that say the notes (none without notes)."""
    return echo_pieces("; ".join(notes) + "\n") if notes else []


def b64_size(data: Any, where: str) -> int:
    """The byte count of strict base64 ``data`` (400 naming ``where`` if it is not base64)."""
    if not isinstance(data, str):
        raise BadRequest(f"Invalid '{where}': expected a base64 string.", param=where)
    try:
        return len(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        raise BadRequest(f"Invalid '{where}': the data is not valid base64.", param=where) from None


def _b64_bytes(data: str) -> bytes:
    return base64.b64decode(data, validate=True)


def _data_url(url: str, where: str) -> tuple[str, int]:
    """``(mime, byte count)`` of a ``data:`` URL."""
    meta, comma, payload = url[5:].partition(",")
    if not comma:
        raise BadRequest(f"Invalid '{where}': malformed data URL.", param=where)
    mime, *flags = meta.split(";")
    if "base64" in flags:
        return mime or "text/plain", b64_size(payload, where)
    return mime or "text/plain", len(unquote_to_bytes(payload))


def _host(url: str, where: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"Invalid '{where}': expected a URL or a base64 data URL.", param=where)
    return parts.hostname


def _no_media_key(part: dict[str, Any], where: str) -> None:
    if MEDIA_KEY in part:
        raise BadRequest(
            f"Additional properties are not allowed ('{MEDIA_KEY}' was unexpected) - '{where}'", param=where
        )


def _contents(messages: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, part)`` of every dict part of every list ``content``, in order."""
    for i, message in enumerate(messages if isinstance(messages, list) else ()):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for j, part in enumerate(content):
                if isinstance(part, dict):
                    yield f"messages.{i}.content.{j}", part


# --- OpenAI chat completions --------------------------------------------------------------------


def openai_notes(messages: Any) -> list[str]:
    """Notes of OpenAI content parts (``image_url``, ``file``, ``input_audio``)."""
    notes = []
    for where, part in _contents(messages):
        _no_media_key(part, where)
        kind = part.get("type")
        if kind == "image_url":
            notes.append(_openai_image(part.get("image_url"), f"{where}.image_url"))
        elif kind == "file":
            notes.append(_openai_file(part.get("file"), f"{where}.file"))
        elif kind == "input_audio":
            notes.append(_openai_audio(part.get("input_audio"), f"{where}.input_audio"))
    return notes


def _openai_image(image: Any, where: str) -> str:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise BadRequest(f"Missing required parameter: '{where}.url'.", param=f"{where}.url")
    detail = image.get("detail") if isinstance(image, dict) else None
    if detail is not None and detail not in _DETAILS:
        raise BadRequest(
            f"Invalid value: '{detail}'. Supported values are: 'auto', 'low', and 'high'.",
            param=f"{where}.detail",
        )
    if url.startswith("data:"):
        mime, size = _data_url(url, f"{where}.url")
        return f"saw {mime} {size} bytes"
    return f"saw image url {_host(url, f'{where}.url')}"


def _openai_file(file: Any, where: str) -> str:
    if not isinstance(file, dict):
        raise BadRequest(f"Missing required parameter: '{where}'.", param=where)
    data, file_id = file.get("file_data"), file.get("file_id")
    if isinstance(data, str) and data:
        if not data.startswith("data:"):
            raise BadRequest(f"Invalid '{where}.file_data': expected a base64 data URL.", param=where)
        mime, size = _data_url(data, f"{where}.file_data")
        if mime != "application/pdf":
            raise BadRequest(
                f"Invalid file data: '{where}.file_data'. Expected a PDF, got {mime}.",
                param=f"{where}.file_data",
            )
        return f"saw {mime} {size} bytes"
    if isinstance(file_id, str) and file_id:
        return f"saw file id {file_id}"
    raise BadRequest(f"Missing required parameter: '{where}.file_data' or '{where}.file_id'.", param=where)


def _openai_audio(audio: Any, where: str) -> str:
    if not isinstance(audio, dict):
        raise BadRequest(f"Missing required parameter: '{where}'.", param=where)
    fmt = audio.get("format")
    if fmt not in _AUDIO_FORMATS:
        raise BadRequest(
            f"Invalid value: '{fmt}'. Supported values are: 'wav' and 'mp3'.", param=f"{where}.format"
        )
    return f"saw {_AUDIO_FORMATS[fmt]} {b64_size(audio.get('data'), f'{where}.data')} bytes"


# --- Anthropic messages -------------------------------------------------------------------------


def anthropic_notes(messages: Any) -> list[str]:
    """Notes of Anthropic ``image`` / ``document`` blocks, also inside ``tool_result`` content."""
    notes: list[str] = []
    for where, block in _contents(messages):
        notes.extend(_anthropic_block(block, where))
    return notes


def _anthropic_block(block: dict[str, Any], where: str) -> Iterable[str]:
    kind = block.get("type")
    if MEDIA_KEY in block:
        raise BadRequest(f"{where}.{kind}.{MEDIA_KEY}: Extra inputs are not permitted")
    if kind in _OPENAI_SHAPES:
        raise BadRequest(
            f"{where}: Input tag '{kind}' found using 'type' does not match any of the expected tags"
        )
    if kind == "tool_result" and isinstance(block.get("content"), list):
        for k, inner in enumerate(block["content"]):
            if isinstance(inner, dict):
                yield from _anthropic_block(inner, f"{where}.content.{k}")
    elif kind in ("image", "document"):
        yield _anthropic_source(kind, block.get("source"), f"{where}.{kind}.source")


def _anthropic_source(kind: str, source: Any, where: str) -> str:
    if not isinstance(source, dict):
        raise BadRequest(f"{where}: Field required")
    src = source.get("type")
    if src == "base64":
        mime = source.get("media_type")
        allowed = ANTHROPIC_IMAGE_TYPES if kind == "image" else ("application/pdf",)
        if mime not in allowed:
            expected = " or ".join(f"'{m}'" for m in allowed)
            raise BadRequest(f"{where}.base64.media_type: Input should be {expected}")
        try:
            size = len(_b64_bytes(source.get("data") or ""))
        except (binascii.Error, ValueError):
            raise BadRequest(f"{where}.base64.data: the data is not valid base64") from None
        return f"saw {mime} {size} bytes"
    if src == "text" and kind == "document":
        if source.get("media_type") != "text/plain" or not isinstance(source.get("data"), str):
            raise BadRequest(f"{where}.text: media_type must be 'text/plain' and data a string")
        return f"saw text/plain {len(source['data'].encode())} bytes"
    if src == "url":
        url = source.get("url")
        parts = urlsplit(url if isinstance(url, str) else "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadRequest(f"{where}.url.url: Input should be a valid URL")
        return f"saw {kind} url {parts.hostname}"
    if src == "file" and isinstance(source.get("file_id"), str):
        return f"saw file id {source['file_id']}"
    if src == "content" and kind == "document":
        return "saw document content"
    raise BadRequest(f"{where}: Input tag '{src}' found using 'type' does not match any of the expected tags")


# --- Ollama chat --------------------------------------------------------------------------------


def sniff_image(body: bytes) -> str:
    """An image's type from its magic bytes (``application/octet-stream`` when unknown)."""
    if body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        return "image/webp"
    return next((mime for magic, mime in _MAGIC if body.startswith(magic)), "application/octet-stream")


def ollama_notes(messages: Any) -> list[str]:
    """Notes of each message's ``images`` (base64 strings, as Ollama takes them)."""
    notes = []
    for i, message in enumerate(messages if isinstance(messages, list) else ()):
        images = message.get("images") if isinstance(message, dict) else None
        if images is None:
            continue
        if not isinstance(images, list):
            raise BadRequest("images must be an array of base64 strings")
        for image in images:
            try:
                body = _b64_bytes(image if isinstance(image, str) else "")
            except (binascii.Error, ValueError):
                raise BadRequest(f"messages[{i}]: illegal base64 data in images") from None
            notes.append(f"saw {sniff_image(body)} {len(body)} bytes")
    return notes
