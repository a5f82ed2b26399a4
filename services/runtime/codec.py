"""Event (de)serialisation: orjson + pydantic, one place."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, TypeAdapter

from services.contracts.events import AnyEvent, Envelope

E = TypeVar("E", bound=BaseModel)

_any: TypeAdapter[Envelope] = TypeAdapter(AnyEvent)


def encode(event: BaseModel) -> bytes:
    return event.__pydantic_serializer__.to_json(event, exclude_none=True)


def decode(raw: bytes, model: type[E]) -> E:
    """Raises pydantic.ValidationError (also for invalid JSON)."""
    return model.model_validate_json(raw)


def decode_any(raw: bytes) -> Envelope:
    return _any.validate_json(raw)
