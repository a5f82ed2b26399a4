"""Backward compatibility of the event schemas for their readers (``llmgw schemas compat``).

Readers of ``llm.usage``, ``llm.audit`` and every other topic are written against a schema
and read records written against later ones (and, within retention, earlier ones). So, for
each ``schemas/*.json`` of a base revision and the current one (``$ref``s into ``$defs``
resolved, nested objects, arrays, maps and unions compared recursively), a change fails when:

* a field is removed;
* a field is retyped (its set of JSON types changes, ``null`` included);
* a field becomes required, or a new field is required;
* an enum (or ``const``) loses values, or a free value becomes an enum;
* a union (``anyOf`` / ``oneOf``) loses a branch;
* a ``$defs`` member is removed while a ``$ref`` still points at it;
* ``additionalProperties: false`` appears where unknown fields were allowed;
* a schema file is removed while its type is still in ``EVENT_SCHEMAS``.

Additive changes pass: a new optional field, new enum values, a new union branch (a new
operation), a new schema file. A change readers cannot take is a new ``type`` version: a new
file (``llm.usage.v2.json``), the old one kept unchanged for as long as its type is produced.
A required field made optional passes when its type stays (producers write every field that
is not ``None``: one that may now be ``None`` has gained ``null``, a retype). Annotations
(``title``, ``description``, ``default``, ``examples``) and value constraints (``minimum``,
``pattern``, ``format`` ...) are not compared.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
_JSON_TYPES = ("null", "boolean", "object", "array", "number", "string", "integer")


class GitError(RuntimeError):
    """The base revision, or its ``schemas/``, could not be read with git."""


def compare_with_revision(
    base: str, root: Path | None = None, live_types: Iterable[str] | None = None
) -> list[str]:
    """Every incompatible change from ``schemas/`` at git revision ``base`` to ``schemas/`` in
    the working tree of ``root`` (the project by default). Empty when every change is safe."""
    root = root or ROOT
    if live_types is None:
        from .events import EVENT_SCHEMAS

        live_types = EVENT_SCHEMAS
    return compare_sets(schemas_at(base, root), current_schemas(root), live_types)


def schemas_at(rev: str, root: Path) -> dict[str, Any]:
    """``schemas/*.json`` (top level) at git revision ``rev``: file name -> parsed schema."""
    if _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False) is None:
        raise GitError(f"git: no commit {rev!r} in {root}")
    listing = _git(root, "ls-tree", "--name-only", rev, "schemas/") or ""
    out: dict[str, Any] = {}
    for path in listing.splitlines():
        name = path.removeprefix("schemas/")
        if name.endswith(".json") and "/" not in name:
            text = _git(root, "show", f"{rev}:{path}") or ""
            try:
                out[name] = json.loads(text)
            except json.JSONDecodeError as exc:
                raise GitError(f"{rev}:{path} is not JSON: {exc}") from exc
    return out


def current_schemas(root: Path) -> dict[str, Any]:
    return {p.name: json.loads(p.read_text()) for p in sorted((root / "schemas").glob("*.json"))}


def compare_sets(base: Mapping[str, Any], current: Mapping[str, Any], live_types: Iterable[str]) -> list[str]:
    """Incompatible changes between two sets of schema files (name -> schema), each line
    prefixed with the file name. New files are always fine."""
    live = set(live_types)
    problems: list[str] = []
    for name in sorted(base):
        if name not in current:
            type_ = name.removesuffix(".json")
            if type_ in live:
                problems.append(
                    f"{name}: removed, but {type_} is still in EVENT_SCHEMAS (its producers and "
                    "readers still use it)"
                )
            continue
        problems += [f"{name}: {p}" for p in compare_schemas(base[name], current[name])]
    return problems


def compare_schemas(base: Any, current: Any) -> list[str]:
    """Incompatible changes from one schema to the next, each as ``where: what``; ``where``
    is the instance path (``usage.units.*``, ``messages[].role``, ``<ChatRequested>`` for a
    union branch)."""
    cmp = _Comparison(_Side(base), _Side(current))
    for ref in cmp.current.dangling():
        name = ref.rsplit("/", 1)[-1]
        if cmp.base.target(ref) is not None:
            cmp.problems.append(f"$defs member {name} is removed but still referenced ({ref})")
        else:
            cmp.problems.append(f"$ref {ref} points at nothing")
    cmp.compare(base, current, "")
    return cmp.problems


@dataclass
class _Side:
    """One schema document, resolving its local ``$ref``s."""

    doc: Any

    def target(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return None
        node = self.doc
        for part in ref[1:].split("/")[1:]:
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def resolve(self, node: Any) -> tuple[Any, str | None]:
        """The node a ``$ref`` (chain) points at, with annotations beside the ``$ref`` kept,
        a single-member ``allOf`` folded in, and the name of the last ``$defs`` member on the
        way (None when it was not a reference); ``None`` as the node when it dangles."""
        name = None
        for _ in range(64):
            if not isinstance(node, dict):
                return node, name
            if "$ref" in node:
                ref = node["$ref"]
                target = self.target(ref)
                if target is None:
                    return None, ref.rsplit("/", 1)[-1]
                name = ref.rsplit("/", 1)[-1]
                rest = {k: v for k, v in node.items() if k != "$ref"}
                node = {**target, **rest} if rest and isinstance(target, dict) else target
            elif isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
                rest = {k: v for k, v in node.items() if k != "allOf"}
                inner, inner_name = self.resolve(node["allOf"][0])
                if not isinstance(inner, dict):
                    return inner, inner_name or name
                node, name = {**inner, **rest}, inner_name or name
            else:
                return node, name
        raise ValueError("a $ref chain longer than 64 links (a cycle of bare references?)")

    def dangling(self) -> list[str]:
        found: list[str] = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                ref = node.get("$ref")
                if isinstance(ref, str) and self.target(ref) is None and ref not in found:
                    found.append(ref)
                for k, v in node.items():
                    if k not in ("enum", "const", "default", "examples"):
                        walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(self.doc)
        return found


@dataclass
class _Branch:
    node: Any
    name: str | None  # the $defs member it was referenced as
    label: str = ""


@dataclass
class _Comparison:
    base: _Side
    current: _Side
    problems: list[str] = field(default_factory=list)
    _seen: set[tuple[str, str]] = field(default_factory=set)

    def compare(self, base: Any, current: Any, where: str) -> None:
        b, b_name = self.base.resolve(base)
        c, c_name = self.current.resolve(current)
        if b is None or c is None:  # a dangling base ref: nothing to hold to; a current one: reported
            return
        if b_name and c_name:  # each pair of definitions is compared once (and recursion ends)
            if (b_name, c_name) in self._seen:
                return
            self._seen.add((b_name, c_name))
        if b is False:
            return  # base allowed nothing: no reader has seen a value
        if _is_any(b) or _is_any(c):
            if not (_is_any(b) and _is_any(c)):
                self.problems.append(f"{_at(where)}: retyped from {_describe(b)} to {_describe(c)}")
            return
        if c is False:
            self.problems.append(f"{_at(where)}: no value is allowed any more")
            return
        if _is_union(b) or _is_union(c):
            self._compare_unions(b, c, where)
        else:
            self._compare_nodes(b, c, where)

    def _compare_nodes(self, b: dict[str, Any], c: dict[str, Any], where: str) -> None:
        bt, ct = _types(b), _types(c)
        if bt is not None and ct is not None and bt != ct:
            self.problems.append(f"{_at(where)}: retyped from {_join(bt)} to {_join(ct)}")
            return
        self._compare_values(b, c, where)
        if "object" in (bt or ct or set()) or "properties" in b or "properties" in c:
            self._compare_objects(b, c, where)
        if "array" in (bt or ct or set()) or "items" in b or "items" in c:
            self._compare_arrays(b, c, where)

    def _compare_values(self, b: dict[str, Any], c: dict[str, Any], where: str) -> None:
        bv, cv = _values(b), _values(c)
        if cv is None:
            return  # no enum now: every value is accepted
        if bv is None:
            self.problems.append(f"{_at(where)}: now restricted to {_short(cv)} (any value was allowed)")
            return
        removed = [v for v in bv if v not in cv]
        if removed:
            self.problems.append(f"{_at(where)}: enum narrowed, values removed: {_short(removed)}")

    def _compare_objects(self, b: dict[str, Any], c: dict[str, Any], where: str) -> None:
        bp: dict[str, Any] = b.get("properties") or {}
        cp: dict[str, Any] = c.get("properties") or {}
        for name, sub in bp.items():
            if name not in cp:
                self.problems.append(f"{_at(_field(where, name))}: field removed")
            else:
                self.compare(sub, cp[name], _field(where, name))
        was_required = set(b.get("required") or ())
        for name in c.get("required") or ():
            if name not in was_required:
                what = "field made required" if name in bp else "new required field"
                self.problems.append(f"{_at(_field(where, name))}: {what}")
        ba, ca = b.get("additionalProperties", True), c.get("additionalProperties", True)
        if ca is False and ba is not False:
            self.problems.append(f"{_at(where)}: additionalProperties: false added (unknown fields rejected)")
        elif isinstance(ba, dict) and isinstance(ca, dict):
            self.compare(ba, ca, _field(where, "*"))

    def _compare_arrays(self, b: dict[str, Any], c: dict[str, Any], where: str) -> None:
        bi, ci = b.get("items"), c.get("items")
        if isinstance(bi, dict) and isinstance(ci, dict):
            self.compare(bi, ci, f"{where}[]")
        elif isinstance(bi, dict) and ci is None and not c.get("prefixItems"):
            return  # items no longer constrained: a reader gets what it knew and more
        bpi, cpi = b.get("prefixItems") or [], c.get("prefixItems") or []
        for i, (x, y) in enumerate(zip(bpi, cpi, strict=False)):
            self.compare(x, y, f"{where}[{i}]")

    def _compare_unions(self, b: Any, c: Any, where: str) -> None:
        bb, cb = self._branches(self.base, b), self._branches(self.current, c)
        bt, ct = _union_types(bb), _union_types(cb)
        if bt is not None and ct is not None and bt != ct:
            self.problems.append(f"{_at(where)}: retyped from {_join(bt)} to {_join(ct)}")
            return
        prop = _discriminator(bb)  # the base's, so that both sides are labelled alike
        for branch in (*bb, *cb):
            branch.label = _label(branch, prop)
        nested = len([x for x in bb if _types(x.node) == frozenset(["object"])]) > 1
        for branch in bb:
            match = self._match(branch, cb, where)
            if match is None:
                self.problems.append(f"{_at(where)}: union narrowed, branch {branch.label} removed")
            else:
                self.compare(branch.node, match.node, f"{where}<{branch.label}>" if nested else where)

    def _match(self, branch: _Branch, candidates: list[_Branch], where: str) -> _Branch | None:
        """The current branch that stands for a base one: the one of the same label (a
        discriminator value, a definition's name, a JSON type), else any of the same type that
        takes it without a problem (a renamed definition)."""
        same = [c for c in candidates if c.label == branch.label]
        if same:
            return same[0]
        for c in candidates:
            if _types(branch.node) != _types(c.node):
                continue
            trial = _Comparison(self.base, self.current)
            trial.compare(branch.node, c.node, where)
            if not trial.problems:
                return c
        return None

    def _branches(self, side: _Side, node: Any, name: str | None = None) -> list[_Branch]:
        """The union's members, nested unions flattened, references resolved."""
        resolved, ref_name = side.resolve(node)
        members = resolved.get("anyOf") or resolved.get("oneOf") if isinstance(resolved, dict) else None
        if not isinstance(members, list):
            return [_Branch(resolved, ref_name or name)]
        return [b for m in members for b in self._branches(side, m)]


def _is_union(node: Any) -> bool:
    return isinstance(node, dict) and (
        isinstance(node.get("anyOf"), list) or isinstance(node.get("oneOf"), list)
    )


def _const(node: Any, prop: str) -> Any:
    sub = (node.get("properties") or {}).get(prop) if isinstance(node, dict) else None
    values = _values(sub) if isinstance(sub, dict) else None
    return values[0] if values is not None and len(values) == 1 else _NO_CONST


_NO_CONST = object()


def _discriminator(branches: list[_Branch]) -> str | None:
    """The field whose constant tells the object members of a union apart (``operation``,
    ``kind``), if there is one."""
    objects = [b.node for b in branches if isinstance(b.node, dict) and b.node.get("properties")]
    if len(objects) < 2:
        return None
    common: set[str] = set.intersection(*(set(map(str, o["properties"])) for o in objects))
    for prop in sorted(common):
        values = [_const(o, prop) for o in objects]
        if _NO_CONST not in values and len({json.dumps(v) for v in values}) == len(values):
            return prop
    return None


def _label(branch: _Branch, prop: str | None) -> str:
    if prop is not None and (value := _const(branch.node, prop)) is not _NO_CONST:
        return f"{prop}={value}"
    if branch.name:
        return branch.name
    types = _types(branch.node)
    return _join(types) if types else json.dumps(branch.node, sort_keys=True)[:60]


def _types(node: Any) -> frozenset[str] | None:
    """The JSON types a (non-union) node allows; ``None`` when it does not say."""
    if not isinstance(node, dict):
        return None
    t = node.get("type")
    if isinstance(t, str):
        return frozenset([t])
    if isinstance(t, list):
        return frozenset(str(x) for x in t)
    if "properties" in node or "additionalProperties" in node:
        return frozenset(["object"])
    if "items" in node or "prefixItems" in node:
        return frozenset(["array"])
    values = _values(node)
    if values is not None:
        return frozenset(_json_type(v) for v in values)
    return None


def _union_types(branches: list[_Branch]) -> frozenset[str] | None:
    out: set[str] = set()
    for b in branches:
        t = _types(b.node)
        if t is None:
            return None
        out |= t
    return frozenset(out)


def _values(node: dict[str, Any]) -> list[Any] | None:
    if "const" in node:
        return [node["const"]]
    enum = node.get("enum")
    return list(enum) if isinstance(enum, list) else None


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, dict):
        return "object"
    return "array" if isinstance(v, list) else "string"


def _field(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _at(where: str) -> str:
    return where or "(the event)"


def _join(types: frozenset[str]) -> str:
    return "|".join(sorted(types, key=lambda t: _JSON_TYPES.index(t) if t in _JSON_TYPES else 99))


def _is_any(node: Any) -> bool:
    """True for a schema that accepts every value (``{}``, ``true``, annotations only)."""
    if node is True:
        return True
    return isinstance(node, dict) and not (node.keys() & _STRUCTURE)


_STRUCTURE = {"type", "enum", "const", "properties", "additionalProperties", "items", "prefixItems"}
_STRUCTURE |= {"anyOf", "oneOf", "allOf", "not", "$ref", "patternProperties", "required"}


def _describe(node: Any) -> str:
    if _is_any(node):
        return "any value"
    if _is_union(node):
        return "a union"
    types = _types(node)
    return _join(types) if types else "a constrained value"


def _short(values: Any) -> str:
    text = json.dumps(values)
    return text if len(text) <= 120 else text[:117] + "..."


def _git(root: Path, *args: str, check: bool = True) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=False, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitError(f"git {' '.join(args)}: {exc}") from exc
    if done.returncode != 0:
        if not check:
            return None
        raise GitError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout
