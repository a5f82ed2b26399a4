"""What the embeddings adapters share: the normalised answer and the vector encodings.

Vectors travel in the encoding the caller asked for. ``base64`` is OpenAI's: the
little-endian float32 bytes of the vector, base64-encoded. A provider that answers in the
requested encoding is passed through unchanged (so a provider's base64 reaches the caller
byte for byte); one that cannot (Ollama answers floats only) is converted here.
"""

from __future__ import annotations

import array
import base64
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.contracts.events import Usage

Vector = list[float] | str


@dataclass
class Embeddings:
    """A whole embeddings answer, normalised: one vector per input, in input order, each in
    the request's ``encoding_format``; ``usage`` as the provider reported it, plus
    ``units["inputs"]``."""

    vectors: list[Vector]
    usage: Usage
    model: str


def to_base64(vector: Sequence[float]) -> str:
    """OpenAI's base64 encoding: little-endian float32, base64."""
    packed = array.array("f", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def from_base64(text: str) -> list[float]:
    """The floats of an OpenAI base64 vector (float32 values, as Python floats)."""
    packed = array.array("f")
    packed.frombytes(base64.b64decode(text, validate=True))
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tolist()


def encoded(value: Any, encoding_format: str) -> Vector:
    """One vector from a provider answer, in ``encoding_format``: unchanged when it already is
    (a list of numbers for ``float``, a string for ``base64``), else converted.
    ``ValueError`` for anything that is neither (a malformed answer)."""
    if isinstance(value, str):
        return value if encoding_format == "base64" else from_base64(value)
    if isinstance(value, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        return to_base64(value) if encoding_format == "base64" else value
    raise ValueError(f"an embedding is neither a list of numbers nor a base64 string: {str(value)[:80]}")


def fitted(vector: list[float], dimensions: int | None) -> list[float]:
    """A float vector longer than ``dimensions`` (a provider that ignored the parameter) cut
    to its first ``dimensions`` values and scaled back to unit length, as OpenAI shortens its
    own embeddings; a vector of the right length or shorter is returned unchanged."""
    if dimensions is None or len(vector) <= dimensions:
        return vector
    head = vector[:dimensions]
    norm = math.sqrt(math.fsum(v * v for v in head))
    return [v / norm for v in head] if norm else head


def embed_usage(prompt_tokens: int, total_tokens: int | None, inputs: int) -> Usage:
    """Embeddings usage: input tokens only (``total_tokens`` is the prompt's unless the
    provider says otherwise), and the number of inputs as ``units["inputs"]``."""
    return Usage(
        prompt_tokens=prompt_tokens, total_tokens=total_tokens or prompt_tokens, units={"inputs": inputs}
    )


def vectors_of(items: list[Any], inputs: int, what: str) -> list[Any]:
    """Check a provider returned one vector per input (``ValueError``: malformed answer)."""
    if not isinstance(items, list) or len(items) != inputs:
        got = len(items) if isinstance(items, list) else type(items).__name__
        raise ValueError(f"{what}: expected {inputs} vectors, got {got}")
    return items
