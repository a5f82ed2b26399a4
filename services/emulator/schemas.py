"""Deterministic JSON values for JSON schemas: one that conforms, one that breaks it.

:func:`example` builds a value that satisfies a schema of the kind LLM APIs take
(tool parameters, ``response_format.json_schema.schema``, Ollama ``format``,
Anthropic ``input_schema``): ``type`` (one or a list; ``null`` only when nothing
else is allowed), ``enum`` (first value), ``const``, ``properties`` (every
property is filled, required or not), ``additionalProperties`` /
``minProperties``, ``items`` / ``prefixItems`` / ``minItems`` / ``maxItems``,
``minLength`` / ``maxLength``, ``minimum`` / ``maximum`` (inclusive and
exclusive) / ``multipleOf``, ``format`` (date-time, date, time, email, uri,
uuid, ipv4, ipv6, hostname, duration), ``anyOf`` / ``oneOf`` (first non-null
branch), ``allOf`` (merged) and local ``$ref`` (``#/$defs/X``, ``#/definitions/X``,
``#``), recursion included (past a depth only required properties are filled
and arrays take their minimum length). Not honoured: ``pattern``, ``not``,
``if``/``then``/``else``, ``uniqueItems`` with ``minItems > 1``.

Strings are ``"tok{seed}"`` (``seed`` is the tool call's index, so parallel calls
to one tool get different arguments), integers 1, numbers 1.5, booleans true,
each moved into the schema's bounds.

:func:`violation` returns valid JSON that the schema rejects (checked with
``jsonschema``, imported only on that path): a required property dropped and
another property given a wrong type, else a required property dropped, else
one property with a wrong type, else an unexpected extra property, else (when
the value need not stay an object) a wrong type at the root. A schema that
accepts everything it can be given keeps the conforming value.
"""

from __future__ import annotations

import math
from typing import Any, TypeGuard

MAX_DEPTH = 8

_FORMATS = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "12:00:00Z",
    "email": "tok0@example.com",
    "idn-email": "tok0@example.com",
    "uri": "https://example.com/tok0",
    "iri": "https://example.com/tok0",
    "uri-reference": "https://example.com/tok0",
    "url": "https://example.com/tok0",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "duration": "PT1S",
}
_MISSING = object()


class _Context:
    __slots__ = ("root", "seed")

    def __init__(self, root: Any, seed: int) -> None:
        self.root, self.seed = root, seed

    def resolve(self, schema: Any, depth: int = 0) -> Any:
        """``schema`` with local ``$ref`` and ``allOf`` folded in (siblings of ``$ref`` win)."""
        if not isinstance(schema, dict):
            return schema
        ref = schema.get("$ref")
        if isinstance(ref, str) and depth < MAX_DEPTH:
            target = self.pointer(ref)
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **rest} if isinstance(target, dict) else rest
            schema = self.resolve(schema, depth + 1)
        parts = schema.get("allOf")
        if isinstance(parts, list) and parts and depth < MAX_DEPTH:
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for part in parts:
                part = self.resolve(part, depth + 1)
                if not isinstance(part, dict):
                    continue
                for key, value in part.items():
                    if key == "properties" and isinstance(value, dict):
                        merged["properties"] = {**(merged.get("properties") or {}), **value}
                    elif key == "required" and isinstance(value, list):
                        merged["required"] = list(dict.fromkeys([*(merged.get("required") or []), *value]))
                    else:
                        merged.setdefault(key, value)
            schema = merged
        return schema

    def pointer(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return {}
        node = self.root
        for part in ref[1:].split("/"):
            if not part:
                continue
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict):
                node = node.get(part, {})
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return {}
        return node


def _kind(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        real = [k for k in kind if k != "null"]
        return real[0] if real else ("null" if kind else None)
    if kind is None:
        if "properties" in schema or "required" in schema or "additionalProperties" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
    return kind


def _number(schema: dict[str, Any], default: float, integer: bool) -> float | int:
    raw_lo, raw_hi = schema.get("minimum"), schema.get("maximum")
    ex_lo, ex_hi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    lo: float | None = raw_lo if _is_num(raw_lo) else None
    hi: float | None = raw_hi if _is_num(raw_hi) else None
    if _is_num(ex_lo):
        bound = math.floor(ex_lo) + 1 if integer else ex_lo + max(abs(ex_lo) * 1e-6, 1e-6)
        lo = bound if lo is None else max(lo, bound)
    if _is_num(ex_hi):
        bound = math.ceil(ex_hi) - 1 if integer else ex_hi - max(abs(ex_hi) * 1e-6, 1e-6)
        hi = bound if hi is None else min(hi, bound)
    value: float = default
    if lo is not None and value < lo:
        value = lo
    if hi is not None and value > hi:
        value = hi
    step = schema.get("multipleOf")
    if _is_num(step) and step > 0:
        value = math.ceil(value / step) * step
        if hi is not None and value > hi:
            value = math.floor(hi / step) * step
    if integer:
        value = math.ceil(value)
        if hi is not None and value > hi:
            value = math.floor(hi)
        return int(value)
    return float(value)


def _is_num(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _string(schema: dict[str, Any], seed: int) -> str:
    fmt = schema.get("format")
    value = _FORMATS.get(fmt, f"tok{seed}") if isinstance(fmt, str) else f"tok{seed}"
    low, high = schema.get("minLength"), schema.get("maxLength")
    if isinstance(low, int) and len(value) < low:
        value += "x" * (low - len(value))
    if isinstance(high, int) and len(value) > high:
        value = value[: max(high, 0)]
    return value


def _build(ctx: _Context, schema: Any, depth: int) -> Any:
    if schema is True or schema is None:
        return f"tok{ctx.seed}"
    if not isinstance(schema, dict):
        return None
    schema = ctx.resolve(schema)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            resolved = [ctx.resolve(b) for b in branches]
            pick = next(
                (b for b in resolved if not (isinstance(b, dict) and b.get("type") == "null")), resolved[0]
            )
            if isinstance(pick, dict):
                rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
                pick = {**rest, **pick}
            return _build(ctx, pick, depth + 1)
    kind = _kind(schema)
    if kind == "object":
        return _object(ctx, schema, depth)
    if kind == "array":
        return _array(ctx, schema, depth)
    if kind == "integer":
        return _number(schema, 1, integer=True)
    if kind == "number":
        return _number(schema, 1.5, integer=False)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema, ctx.seed)


def _object(ctx: _Context, schema: dict[str, Any], depth: int) -> dict[str, Any]:
    properties = schema.get("properties") or {}
    required = schema.get("required") or []
    out: dict[str, Any] = {}
    shallow = depth >= MAX_DEPTH
    if isinstance(properties, dict):
        for name, sub in properties.items():
            if shallow and name not in required:
                continue
            out[name] = _build(ctx, sub, depth + 1)
    extra = schema.get("additionalProperties", True)
    for name in required:
        if isinstance(name, str) and name not in out:
            out[name] = _build(ctx, extra if isinstance(extra, dict) else True, depth + 1)
    wanted = schema.get("minProperties")
    if isinstance(wanted, int) and extra is not False:
        i = 0
        while len(out) < wanted:
            out.setdefault(f"key{i}", _build(ctx, extra if isinstance(extra, dict) else True, depth + 1))
            i += 1
    return out


def _array(ctx: _Context, schema: dict[str, Any], depth: int) -> list[Any]:
    prefix = schema.get("prefixItems")
    items = schema.get("items")
    low = v if isinstance(v := schema.get("minItems"), int) else 0
    high = v if isinstance(v := schema.get("maxItems"), int) else None
    out: list[Any] = []
    if isinstance(prefix, list):
        out = [_build(ctx, sub, depth + 1) for sub in prefix]
    elif isinstance(items, list):  # draft 4..2019 tuple form
        out = [_build(ctx, sub, depth + 1) for sub in items]
        items = schema.get("additionalItems", True)
    count = max(low, 0 if depth >= MAX_DEPTH or out else 1)
    if items is False:
        count = len(out)
    while len(out) < count:
        out.append(_build(ctx, items if items is not None else True, depth + 1))
    if high is not None:
        out = out[:high]
    return out


def example(schema: Any, seed: int = 0) -> Any:
    """A deterministic value that conforms to ``schema`` (see the module docstring)."""
    return _build(_Context(schema, seed), schema, 0)


def _wrong(value: Any) -> Any:
    """A value of another JSON type than ``value``."""
    if isinstance(value, str):
        return 12345
    if value is None:
        return "tok0"
    return "tok0" if not isinstance(value, dict) else ["tok0"]


def _candidates(schema: Any, good: Any, keep_object: bool) -> list[Any]:
    out: list[Any] = []
    if isinstance(good, dict):
        resolved = _Context(schema, 0).resolve(schema)
        required = (
            [r for r in (resolved.get("required") or []) if r in good] if isinstance(resolved, dict) else []
        )
        if required:
            dropped = {k: v for k, v in good.items() if k != required[0]}
            other = next(iter(dropped), None)
            if other is not None:
                out.append({**dropped, other: _wrong(dropped[other])})
            out.append(dropped)
        out.extend({**good, key: _wrong(value)} for key, value in good.items())
        out.append({**good, "emulator_unexpected": "tok0"})
    elif isinstance(good, list):
        if good:
            out.append([_wrong(good[0]), *good[1:]])
        out.append([])
    if not keep_object or not isinstance(good, dict):
        out.extend([_wrong(good), [good], None, "tok0", 12345, True])
    return out


def violation(schema: Any, seed: int = 0, *, keep_object: bool = False) -> Any:
    """Valid JSON that ``schema`` rejects (``keep_object``: stays an object when the conforming
    value is one, as tool arguments must); the conforming value if nothing breaks it."""
    import jsonschema  # only schema_violation pays for the import

    good = example(schema, seed)
    candidates = _candidates(schema, good, keep_object)
    try:
        validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)(
            schema
        )
        for candidate in candidates:
            if not validator.is_valid(candidate):
                return candidate
    except Exception:  # noqa: BLE001 - a schema jsonschema cannot handle: the first candidate breaks it best
        return candidates[0] if candidates else good
    return good
