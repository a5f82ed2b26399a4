"""Deterministic "model output" shared by every wire format.

* Completions are the words ``tok0 tok1 tok2 ...``: token *i* is the piece
  ``"tok{i}"`` (first) or ``" tok{i}"`` (later), one piece per streamed delta,
  so ``completion_tokens == len(completion_pieces(n)) == n``.
* Prompt tokens (:func:`count_prompt_tokens`) are the whitespace-separated words of
  all text content plus 3 per message (and 3 + words for a separate system prompt).
* Tool calls get arguments derived from the tool's JSON schema
  (:func:`tool_arguments`, :mod:`.schemas`), serialised compactly and streamed in
  :data:`ARG_PIECE` character pieces; their completion tokens are the piece count.
  Structured-output (JSON) answers are cut and counted the same way.
* Embeddings are unit vectors derived from SHAKE-128 of the input text.
* Scenario ``echo``: the answer is the last user message's text (:func:`last_user_text`), cut
  into one piece per word with its leading whitespace (:func:`echo_pieces`), so joining the
  pieces gives the text back exactly and ``completion_tokens`` is the word count.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import math
import os
import re
import struct
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import orjson

from . import schemas

PER_MESSAGE = 3
ARG_PIECE = 8

_pieces: list[str] = ["tok0"] + [f" tok{i}" for i in range(1, 1024)]


def completion_pieces(n: int) -> list[str]:
    """The first ``n`` completion pieces (each one token / one streamed delta)."""
    while len(_pieces) < n:
        _pieces.append(f" tok{len(_pieces)}")
    return _pieces[:n]


def completion_text(n: int) -> str:
    """The full completion text of ``n`` tokens (``"tok0 tok1 ..."``)."""
    return "".join(completion_pieces(n))


_WORD = re.compile(r"\s*\S+")


def echo_pieces(text: str) -> list[str]:
    """``text`` as stream pieces: each word with the whitespace before it; whitespace after the
    last word joins the last piece. ``"".join(echo_pieces(t)) == t``; no words, no pieces."""
    pieces = _WORD.findall(text)
    if pieces:
        rest = len(text) - sum(map(len, pieces))
        if rest:
            pieces[-1] += text[-rest:]
    return pieces


def _text_of(content: Any) -> str:
    """A message's text: a string, or its text parts/blocks joined (other parts are skipped)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type", "text") == "text" and isinstance(p.get("text"), str)
        )
    return ""


def last_user_text(messages: Iterable[Any] | None) -> str:
    """The text of the last ``role: "user"`` message (``""`` when there is none), whatever the
    wire format: OpenAI content parts ``{"type": "text"}``, Anthropic text blocks, Ollama strings."""
    found = ""
    for message in messages or ():
        if isinstance(message, dict) and message.get("role") == "user":
            found = _text_of(message.get("content"))
    return found


def answer_pieces(messages: Iterable[Any] | None, *, echo: bool, tokens: int) -> list[str]:
    """The pieces of a text answer: the last user message (``echo``) or ``tokens`` words."""
    return echo_pieces(last_user_text(messages)) if echo else completion_pieces(tokens)


def count_words(text: Any) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def _content_words(content: Any) -> int:
    """Words in a message ``content``: a string or a list of blocks/parts with ``text``.

    Anthropic ``tool_result`` blocks are counted through their nested ``content``.
    """
    if isinstance(content, str):
        return len(content.split())
    words = 0
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict):
                text = block.get("text")
                if isinstance(text, str):
                    words += len(text.split())
                elif "content" in block:
                    words += _content_words(block["content"])
            elif isinstance(block, str):
                words += len(block.split())
    return words


def count_prompt_tokens(messages: Iterable[Any] | None, system: Any = None) -> int:
    """Deterministic prompt size: per message 3 + words of its text content.

    ``messages`` is the OpenAI / Anthropic / Ollama ``messages`` list; ``system``
    is Anthropic's separate system prompt (string or list of text blocks), counted
    as one more message when present. Tools and images are not counted.
    """
    total = 0
    if system:
        total += PER_MESSAGE + _content_words(system)
    for message in messages or ():
        if isinstance(message, dict):
            total += PER_MESSAGE + _content_words(message.get("content"))
    return total


def tool_arguments(parameters: Any, seed: int = 0) -> dict[str, Any]:
    """Tool-call arguments for a tool whose parameter schema is ``parameters`` (see :mod:`.schemas`)."""
    value = schemas.example(parameters, seed) if isinstance(parameters, dict) else {}
    return value if isinstance(value, dict) else {}


def arguments_json(arguments: dict[str, Any]) -> str:
    return orjson.dumps(arguments).decode()


def argument_pieces(arguments_text: str) -> list[str]:
    """``arguments_text`` cut into :data:`ARG_PIECE`-character pieces (at least one)."""
    if not arguments_text:
        return [""]
    return [arguments_text[i : i + ARG_PIECE] for i in range(0, len(arguments_text), ARG_PIECE)]


@lru_cache(maxsize=4096)
def embedding(text: str, dims: int) -> tuple[float, ...]:
    """A deterministic unit vector of ``dims`` floats for ``text``."""
    raw = hashlib.shake_128(text.encode()).digest(2 * dims)
    values = [x / 32767.5 - 1.0 for x in struct.unpack(f"<{dims}H", raw)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return tuple(v / norm for v in values)


def embedding_base64(vector: tuple[float, ...]) -> str:
    """OpenAI's ``encoding_format=base64``: little-endian float32 bytes, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


_prefix = os.urandom(4).hex()
_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    """Process-unique id like ``chatcmpl-1a2b3c4d00000001`` (cheap: no syscall per call)."""
    return f"{prefix}{_prefix}{next(_ids):016x}"
