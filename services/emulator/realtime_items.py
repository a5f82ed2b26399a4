"""Conversation items of the Realtime emulator, and the checks of client payloads. Pure.

Items are kept in GA terms (content parts ``input_text``, ``input_audio``, ``input_image``,
``output_text``, ``output_audio``) and rendered per dialect (beta names the assistant's parts
``text`` and ``audio``). ``conversation.item.create`` may use either dialect's part names. Audio is
not echoed back in items (only transcripts), but its length is kept for the usage.

A payload problem raises :class:`ClientError`, answered by an ``error`` event of type
``invalid_request_error`` whose ``param`` and ``code`` say what was wrong, worded as the API words it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any, Literal

from . import text

Dialect = Literal["ga", "beta"]

_BETA_PARTS = {"output_text": "text", "output_audio": "audio"}
_GA_PARTS = {"text": "output_text", "audio": "output_audio"}


class ClientError(Exception):
    """A client event the API refuses (an ``error`` event of type ``invalid_request_error``)."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array"}
    return "null" if value is None else names.get(type(value), "an object")


def expect(value: Any, kinds: type | tuple[type, ...], param: str, wanted: str) -> Any:
    """``value`` if it is one of ``kinds`` (bool never counts as a number), else a ClientError."""
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in _as_tuple(kinds))
    if not ok:
        raise ClientError(
            f"Invalid type for '{param}': expected {wanted}, but got {_kind(value)} instead.",
            param=param,
            code="invalid_type",
        )
    return value


def _as_tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def one_of(value: Any, allowed: tuple[str, ...], param: str) -> str:
    if value not in allowed:
        listed = ", ".join(f"'{a}'" for a in allowed)
        raise ClientError(
            f"Invalid value: {value!r}. Supported values are: {listed}.", param=param, code="invalid_value"
        )
    return str(value)


def required(body: dict[str, Any], key: str, prefix: str = "") -> Any:
    if key not in body:
        raise ClientError(
            f"Missing required parameter: '{prefix}{key}'.",
            param=f"{prefix}{key}",
            code="missing_required_parameter",
        )
    return body[key]


def check_keys(body: dict[str, Any], allowed: frozenset[str], prefix: str) -> None:
    for key in body:
        if key not in allowed:
            raise ClientError(
                f"Unknown parameter: '{prefix}{key}'.", param=f"{prefix}{key}", code="unknown_parameter"
            )


def decode_audio(value: Any, param: str) -> bytes:
    expect(value, str, param, "a base64-encoded string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ClientError(
            f"Invalid '{param}': expected base64-encoded audio bytes.", param=param, code="invalid_value"
        ) from None


# --- conversation items ---------------------------------------------------------------------------


@dataclass(slots=True)
class Part:
    """One content part, named as in GA (``input_text``, ``input_audio``, ``output_text``, ...)."""

    type: str
    text: str | None = None
    transcript: str | None = None
    audio_bytes: int = 0

    def render(self, dialect: Dialect) -> dict[str, Any]:
        name = _BETA_PARTS.get(self.type, self.type) if dialect == "beta" else self.type
        if self.type in ("input_text", "output_text"):
            return {"type": name, "text": self.text or ""}
        if self.type in ("input_audio", "output_audio"):
            return {"type": name, "transcript": self.transcript}
        return {"type": name}


@dataclass(slots=True)
class Item:
    id: str
    type: str  # message, function_call, function_call_output
    role: str | None = None
    status: str = "completed"
    content: list[Part] = field(default_factory=list)
    name: str | None = None
    call_id: str | None = None
    arguments: str | None = None
    output: str | None = None

    def words(self) -> int:
        """Words of the text the model reads (user audio transcripts are not sent to the model)."""
        if self.type == "function_call":
            return text.count_words(self.arguments)
        if self.type == "function_call_output":
            return text.count_words(self.output)
        count = 0
        for part in self.content:
            count += text.count_words(part.text)
            if part.type == "output_audio":
                count += text.count_words(part.transcript)
        return count

    def audio_bytes(self) -> int:
        return sum(part.audio_bytes for part in self.content)

    def render(self, dialect: Dialect) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "realtime.item",
            "type": self.type,
            "status": self.status,
        }
        if self.type == "message":
            body["role"] = self.role
            body["content"] = [part.render(dialect) for part in self.content]
        elif self.type == "function_call":
            body.update(name=self.name, call_id=self.call_id, arguments=self.arguments)
        else:
            body.update(call_id=self.call_id, output=self.output)
        return body


_ITEM_TYPES = ("message", "function_call", "function_call_output")
_ROLES = ("user", "assistant", "system")
_PARTS_FOR = {
    "user": ("input_text", "input_audio", "input_image"),
    "system": ("input_text",),
    "assistant": ("output_text", "output_audio", "text", "audio"),
}


def parse_item(raw: Any, new_id: str) -> Item:
    """A ``conversation.item.create`` item (either dialect's part names); ``new_id`` if it has none."""
    item = expect(raw, dict, "item", "an object")
    kind = one_of(required(item, "type", "item."), _ITEM_TYPES, "item.type")
    item_id = expect(item.get("id") or new_id, str, "item.id", "a string")
    if kind == "function_call":
        return Item(
            item_id,
            kind,
            name=expect(required(item, "name", "item."), str, "item.name", "a string"),
            call_id=expect(item.get("call_id") or text.new_id("call_"), str, "item.call_id", "a string"),
            arguments=expect(required(item, "arguments", "item."), str, "item.arguments", "a string"),
        )
    if kind == "function_call_output":
        return Item(
            item_id,
            kind,
            call_id=expect(required(item, "call_id", "item."), str, "item.call_id", "a string"),
            output=expect(required(item, "output", "item."), str, "item.output", "a string"),
        )
    role = one_of(required(item, "role", "item."), _ROLES, "item.role")
    parts = expect(required(item, "content", "item."), list, "item.content", "an array")
    return Item(item_id, kind, role=role, content=[_part(p, role, i) for i, p in enumerate(parts)])


def _part(raw: Any, role: str, index: int) -> Part:
    where = f"item.content[{index}]"
    part = expect(raw, dict, where, "an object")
    kind = one_of(required(part, "type", f"{where}."), _PARTS_FOR[role], f"{where}.type")
    kind = _GA_PARTS.get(kind, kind)
    if kind in ("input_text", "output_text"):
        return Part(kind, text=expect(required(part, "text", f"{where}."), str, f"{where}.text", "a string"))
    if kind in ("input_audio", "output_audio"):
        audio = part.get("audio")
        size = 0 if audio is None and kind == "output_audio" else len(decode_audio(audio, f"{where}.audio"))
        transcript = part.get("transcript")
        if transcript is not None:
            expect(transcript, str, f"{where}.transcript", "a string")
        return Part(kind, transcript=transcript, audio_bytes=size)
    return Part(kind)
