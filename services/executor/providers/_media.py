"""Media in content parts, as adapters see them: the executor has filled every ``MediaRef``'s
``data`` (base64) before an adapter maps the request.

A resolved part keeps its OpenAI shape plus ``part["media"]`` (a ``MediaRef`` dict). The
helpers here read that dict the same way for every adapter: which family a part is
(:func:`part_kind`), its bytes as base64 or a ``data:`` URL, the caller's own URL when the
provider may fetch it (:func:`passed_url`), a text file's text, and the refusals every chat
adapter shares. A part without ``media`` (old callers, unit tests) is left to the adapter's
older mapping.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

from services.contracts.errors import CapabilityNotSupported, ValidationError
from services.contracts.events import MediaRef

PartKind = Literal["image", "file", "audio", "video"]

#: Content part type -> media family (``image`` / ``document`` are the gateway's own
#: spellings of ``image_url`` / ``file``: ``{"type": "image", "image": {"url"}}``).
_KINDS: dict[str, PartKind] = {
    "image_url": "image",
    "image": "image",
    "file": "file",
    "document": "file",
    "input_audio": "audio",
    "video_url": "video",
}
#: Audio mime types -> the ``input_audio.format`` OpenAI takes.
_AUDIO_FORMATS = {
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/vnd.wave": "wav",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
}
PDF = "application/pdf"
#: Where a redacted source URL had its query string (``refs.redact_url``): not sendable.
_REDACTED = "<redacted>"


def part_kind(part: dict[str, Any]) -> PartKind | None:
    """The media family of a content part (None for text and other parts)."""
    kind = part.get("type")
    return _KINDS.get(kind) if isinstance(kind, str) else None


def part_media(part: dict[str, Any]) -> MediaRef | None:
    """The resolved media of a content part, if the media-store resolved one."""
    raw = part.get("media")
    return MediaRef.model_validate(raw) if isinstance(raw, dict) else None


def media_bytes(ref: MediaRef) -> bytes:
    """The bytes of resolved media (``data`` decoded)."""
    return base64.b64decode(media_data(ref))


def media_data(ref: MediaRef) -> str:
    """The base64 of resolved media; a ``RuntimeError`` (an executor bug, not a caller error)
    when the executor did not fill it."""
    if ref.data is None:
        raise RuntimeError(f"media {ref.media_id} reached an adapter without its bytes")
    return ref.data


def data_url(ref: MediaRef) -> str:
    """``data:<mime>;base64,<data>``."""
    return f"data:{ref.mime_type};base64,{media_data(ref)}"


def part_body(part: dict[str, Any]) -> dict[str, Any]:
    """The part's own object (``part["image_url"]``, ``part["file"]``, ...); a bare URL string
    reads as ``{"url": ...}``."""
    body = part.get(str(part.get("type")))
    if isinstance(body, str):
        return {"url": body}
    return body if isinstance(body, dict) else {}


def passed_url(part: dict[str, Any]) -> str | None:
    """The caller's own https URL, when the provider may fetch it instead of getting the bytes.

    Only when the media-store marked the part ``pass_url: true`` (every alias of the plan has
    ``pass_urls``; ``part["media"]["pass_url"]`` counts too) and the part still names an
    ``https:`` URL: its own ``url``, else the media's ``source`` unless redacted (a redacted
    query string cannot be fetched). Otherwise None, and the adapter sends the bytes."""
    raw = part.get("media")
    if not isinstance(raw, dict) or True not in (part.get("pass_url"), raw.get("pass_url")):
        return None
    for url in (part_body(part).get("url"), raw.get("source")):
        if isinstance(url, str) and url.startswith("https://") and _REDACTED not in url:
            return url
    return None


def filename(part: dict[str, Any], ref: MediaRef, default: str) -> str:
    """A file part's name: the caller's ``file.filename``, else the media's, else ``default``."""
    name = part_body(part).get("filename")
    return name if isinstance(name, str) and name else ref.filename or default


def is_text(ref: MediaRef) -> bool:
    """Plain-text media (``text/plain``, ``text/markdown``, ``text/csv``, ...)."""
    return ref.mime_type.startswith("text/")


def text_of(ref: MediaRef) -> str:
    """A text file's text (UTF-8; ``ValidationError`` if it is not)."""
    try:
        return media_bytes(ref).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(
            f"file {ref.filename or ref.media_id} ({ref.mime_type}) is not UTF-8 text", param="messages"
        ) from exc


def text_part(name: str, text: str) -> dict[str, Any]:
    """A document given to the model as text: its name on the first line, then its text."""
    return {"type": "text", "text": f"{name}\n{text}"}


def audio_format(provider: str, ref: MediaRef) -> str:
    """``wav`` or ``mp3`` for ``input_audio``; other audio types are not supported."""
    fmt = _AUDIO_FORMATS.get(ref.mime_type)
    if fmt is None:
        raise CapabilityNotSupported(
            f"{provider} chat takes wav or mp3 audio, not {ref.mime_type}", param="messages"
        )
    return fmt


def refuse(provider: str, what: str, hint: str = "") -> CapabilityNotSupported:
    """The error for a content part ``provider``'s chat API cannot take."""
    return CapabilityNotSupported(f"{provider} chat does not take {what}{hint}", param="messages")


def refuse_video(provider: str) -> CapabilityNotSupported:
    return refuse(provider, "video input", " (only gemini deployments do)")
