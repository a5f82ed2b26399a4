"""Tool calls and structured (JSON) answers, shared by the three wire formats.

How many tool calls an answer gets (:func:`call_count`): the scenario's
``tools=N`` (``tool=1`` is one), 0 when the request's last message is a tool
result (the model answers the result with text), at least 1 when the request
forces a tool (OpenAI ``"required"`` or a named function, Anthropic ``any`` /
``tool``, even after a tool result, as the real APIs do), at most 1 when
parallel calls are off. Call *i* goes to offered tool ``i % len(tools)`` with
arguments :func:`~.schemas.example` (``seed=i``: strings are ``"tok{i}"``), or,
under ``schema_violation=1``, :func:`~.schemas.violation` (still an object).

Structured answers (:func:`json_answer`) are the compact JSON of
:func:`~.schemas.example` of the requested schema (``schema_violation=1``:
:func:`~.schemas.violation`); a schema-less JSON request (OpenAI
``json_object``, Ollama ``format: "json"``) gets ``{"answer": <tokens words>}``
(``schema_violation=1``: the same words in an array, which is not an object).
Both are streamed and counted in :data:`~.text.ARG_PIECE`-character pieces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from . import schemas, text
from .scenario import Scenario


@dataclass(slots=True)
class Call:
    """One generated tool call."""

    name: str
    arguments: dict[str, Any]
    json: str
    pieces: list[str]


def call_count(
    scenario: Scenario, *, forced: bool = False, single: bool = False, after_tool_result: bool = False
) -> int:
    count = 0 if after_tool_result else scenario.tool_calls
    if forced:
        count = max(count, 1)
    if single:
        count = min(count, 1)
    return count


def make_calls(offered: list[tuple[str, Any]], count: int, scenario: Scenario) -> list[Call]:
    """``count`` calls cycling through ``offered`` (``(name, parameter schema)`` pairs)."""
    calls = []
    for i in range(count if offered else 0):
        name, schema = offered[i % len(offered)]
        if not isinstance(schema, dict):
            arguments: Any = {}
        elif scenario.schema_violation:
            arguments = schemas.violation(schema, i, keep_object=True)
        else:
            arguments = schemas.example(schema, i)
        if not isinstance(arguments, dict):
            arguments = {}
        encoded = text.arguments_json(arguments)
        calls.append(Call(name, arguments, encoded, text.argument_pieces(encoded)))
    return calls


def json_answer(schema: Any, scenario: Scenario) -> str:
    """The JSON text answering a structured-output request (``schema`` None: any JSON object)."""
    if schema is None:
        words = text.completion_text(scenario.tokens)
        value: Any = [words] if scenario.schema_violation else {"answer": words}
    elif scenario.schema_violation:
        value = schemas.violation(schema)
    else:
        value = schemas.example(schema)
    return orjson.dumps(value).decode()
