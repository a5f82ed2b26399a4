"""Tools in the three accepted formats, normalised to the unified function format before planning.

A chat request's ``params.tools`` may hold, in any mix:

* ``{"type": "gts_ref", "gts_id": "<gts id>"}``: the schema comes from the Type Registry;
* ``{"type": "gts", "schema": {"$id": "gts://<gts id>", "title", "description", ...}}``: inline;
* ``{"type": "function", "function": {"name", "description", "parameters", "strict"}}``: as is.

A GTS schema becomes ``{"type": "function", "function": {"name": <title>, "description":
<description>, "parameters": <the schema without $id, $schema, title and description>}}``
(providers refuse unknown top-level keys in parameters, and the title and description have
their own fields). Other tool types (a provider's built-in tools) pass unchanged. Every
problem is a ``validation_error`` naming ``tools[i]`` (or ``tool_choice``): a malformed or
unknown GTS id, an inline ``$id`` that is not ``gts://<valid id>``, a schema without a title,
a name providers would refuse, two tools of one name, a ``tool_choice`` naming no tool.

``registry_schemas`` is the only I/O (the registry lookups, before planning);
``normalise`` is pure.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

from services.contracts.errors import InternalError, ValidationError
from services.contracts.events import ChatRequested
from services.runtime.types import (
    GTS_URI_PREFIX,
    TypeRegistry,
    TypeRegistryUnavailable,
    UnknownType,
    is_gts_id,
)

#: What OpenAI, Anthropic and Ollama all accept as a function name.
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: Schema keys that do not belong in ``parameters``.
SCHEMA_META = frozenset({"$id", "$schema", "title", "description"})


def referenced(tools: list[dict[str, Any]]) -> list[str]:
    """The well-formed GTS ids of ``gts_ref`` tools, in order, once each."""
    ids: dict[str, None] = {}
    for t in tools:
        if isinstance(t, dict) and t.get("type") == "gts_ref" and is_gts_id(t.get("gts_id")):
            ids[t["gts_id"]] = None
    return list(ids)


async def registry_schemas(tools: list[dict[str, Any]], registry: TypeRegistry) -> dict[str, dict[str, Any]]:
    """The registry's schema of every id ``tools`` references (ids it does not know are left
    out: ``normalise`` names them). A registry that cannot answer is ``internal_error``
    (retryable: the request was fine)."""
    ids = referenced(tools)
    if not ids:
        return {}
    answers = await asyncio.gather(*(registry.get(i) for i in ids), return_exceptions=True)
    found: dict[str, dict[str, Any]] = {}
    for gts_id, answer in zip(ids, answers, strict=True):
        if isinstance(answer, TypeRegistryUnavailable):
            raise InternalError(f"tool {gts_id}: {answer}") from answer
        if isinstance(answer, UnknownType):
            continue
        if isinstance(answer, BaseException):
            raise answer
        found[gts_id] = answer
    return found


def normalise(tools: list[dict[str, Any]], schemas: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """``tools`` in the unified function format; ``schemas`` holds the registry's answers."""
    out: list[dict[str, Any]] = []
    names: set[str] = set()
    for i, t in enumerate(tools):
        param = f"tools[{i}]"
        if not isinstance(t, dict):
            raise ValidationError(f"{param}: must be an object", param=param)
        kind = t.get("type")
        if kind == "gts_ref":
            tool = _from_schema(param, _registered(param, t.get("gts_id"), schemas))
        elif kind == "gts":
            tool = _from_schema(param, _inline(param, t.get("schema")))
        elif kind == "function":
            tool = _function(param, t)
        else:
            out.append(t)  # a provider's own tool type: the provider judges it
            continue
        name = tool["function"]["name"]
        if name in names:
            raise ValidationError(f"{param}: a second tool named {name!r}", param=param)
        names.add(name)
        out.append(tool)
    return out


def check_choice(choice: str | dict[str, Any] | None, tools: list[dict[str, Any]]) -> None:
    """A ``tool_choice`` naming a function must name one of ``tools``."""
    if not isinstance(choice, dict) or choice.get("type") != "function":
        return
    fn = choice.get("function")
    name = fn.get("name") if isinstance(fn, dict) else None
    offered = {
        t["function"]["name"]
        for t in tools
        if t.get("type") == "function" and isinstance(t.get("function"), dict)
    }
    if name not in offered:
        raise ValidationError(
            f"tool_choice names function {name!r}, which is not among the tools ({', '.join(sorted(offered)) or 'none'})",
            param="tool_choice",
        )


def with_tools(req: ChatRequested, schemas: Mapping[str, dict[str, Any]]) -> ChatRequested:
    """``req`` with its tools normalised (a copy; ``req`` is not changed)."""
    assert req.params.tools
    tools = normalise(req.params.tools, schemas)
    check_choice(req.params.tool_choice, tools)
    return req.model_copy(update={"params": req.params.model_copy(update={"tools": tools})})


# --- the formats --------------------------------------------------------------------------------


def _registered(param: str, gts_id: Any, schemas: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    if not is_gts_id(gts_id):
        raise ValidationError(f"{param}: gts_id {gts_id!r} is not a GTS type id {_GRAMMAR}", param=param)
    schema = schemas.get(gts_id)
    if schema is None:
        raise ValidationError(f"{param}: unknown type {gts_id} (not in the type registry)", param=param)
    return schema


def _inline(param: str, schema: Any) -> dict[str, Any]:
    if not isinstance(schema, dict):
        raise ValidationError(f"{param}: schema must be a JSON Schema object", param=param)
    uri = schema.get("$id")
    gts_id = uri[len(GTS_URI_PREFIX) :] if isinstance(uri, str) and uri.startswith(GTS_URI_PREFIX) else None
    if not is_gts_id(gts_id):
        raise ValidationError(
            f"{param}: schema $id {uri!r} is not gts://<GTS type id> {_GRAMMAR}", param=param
        )
    return schema


def _from_schema(param: str, schema: dict[str, Any]) -> dict[str, Any]:
    name = schema.get("title")
    if not isinstance(name, str) or not name:
        raise ValidationError(f"{param}: the schema needs a title (the tool's name)", param=param)
    _check_name(param, name, "title")
    fn: dict[str, Any] = {"name": name}
    if isinstance(schema.get("description"), str):
        fn["description"] = schema["description"]
    fn["parameters"] = {k: v for k, v in schema.items() if k not in SCHEMA_META}
    return {"type": "function", "function": fn}


def _function(param: str, t: dict[str, Any]) -> dict[str, Any]:
    fn = t.get("function")
    if not isinstance(fn, dict):
        raise ValidationError(f"{param}: a function tool needs a function object", param=param)
    name = fn.get("name")
    if not isinstance(name, str):
        raise ValidationError(f"{param}: function.name is required", param=param)
    _check_name(param, name, "function.name")
    if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
        raise ValidationError(f"{param}: function.parameters must be a JSON Schema object", param=param)
    return t


def _check_name(param: str, name: str, what: str) -> None:
    if NAME.fullmatch(name) is None:
        raise ValidationError(
            f"{param}: {what} {name!r} is not a tool name (1-64 letters, digits, '_' or '-')", param=param
        )


_GRAMMAR = "(gts.<vendor>.<package>.<namespace>.<type>.v<MAJOR>[.<MINOR>]~)"
