"""Structured output: the answer to a ``response_format`` request is checked before it is delivered.

``json_schema`` answers must be JSON valid against ``json_schema.schema`` (checked with
``jsonschema``, the draft the schema's ``$schema`` names, 2020-12 otherwise, formats
asserted); ``json_object`` answers must be a JSON object. A violation is
``validation_error`` (``param: response_format``) with ``details.violations`` =
``[{"path": <JSON Pointer into the answer>, "message"}]`` (at most ``MAX_VIOLATIONS``) and
``details.raw`` = the text the model produced. The provider call happened and is billed.

A schema is compiled once: validators are cached by the schema's canonical JSON, so
requests with the same schema share one. An invalid schema is ``validation_error`` before
any provider call.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import jsonschema
import orjson
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator

from services.contracts.errors import ValidationError

MAX_VIOLATIONS = 20
PARAM = "response_format"
#: Finish reasons whose text is checked (a tool-call answer has no text to check).
CHECKED_FINISH = frozenset({"stop", "length"})


class OutputContract:
    """What an answer must be: a JSON object, or JSON valid against a schema."""

    __slots__ = ("kind", "_validator")

    def __init__(self, kind: str, validator: Validator | None):
        self.kind = kind
        self._validator = validator

    def violation(self, text: str | None, finish_reason: str) -> ValidationError | None:
        """The ``validation_error`` of an answer that breaks the contract, else None."""
        raw = text or ""
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            cut = " (the answer was cut at the token limit)" if finish_reason == "length" else ""
            return _error([{"path": "", "message": f"not valid JSON: {exc}{cut}"}], raw)
        if self._validator is None:
            if isinstance(value, dict):
                return None
            return _error([{"path": "", "message": f"{type(value).__name__} is not a JSON object"}], raw)
        errors = sorted(self._validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path])
        if not errors:
            return None
        return _error(
            [{"path": pointer(e.absolute_path), "message": e.message} for e in errors[:MAX_VIOLATIONS]], raw
        )


JSON_OBJECT = OutputContract("json_object", None)


def contract_for(response_format: dict[str, Any] | None) -> OutputContract | None:
    """The contract a ``response_format`` sets (None for text answers); ``ValidationError``
    for a ``json_schema`` without a schema object, or with a schema that is not valid."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return JSON_OBJECT
    if kind != "json_schema":
        return None
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, (dict, bool)):
        raise ValidationError("response_format.json_schema.schema must be a JSON Schema object", param=PARAM)
    return _compiled(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))


@lru_cache(maxsize=256)
def _compiled(schema_json: bytes) -> OutputContract:
    schema = orjson.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise ValidationError(
            f"response_format.json_schema.schema is not a valid JSON Schema: {exc.message}", param=PARAM
        ) from None
    return OutputContract("json_schema", cls(schema, format_checker=cls.FORMAT_CHECKER))


def pointer(path: Iterable[Any]) -> str:
    """RFC 6901 JSON Pointer of a path (``""`` is the whole document)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _error(violations: list[dict[str, str]], raw: str) -> ValidationError:
    first = violations[0]
    where = f" at {first['path']}" if first["path"] else ""
    more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
    return ValidationError(
        f"the model's answer does not match response_format{where}: {first['message']}{more}",
        param=PARAM,
        details={"violations": violations, "raw": raw},
    )
