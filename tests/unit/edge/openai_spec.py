"""OpenAI's published OpenAPI document as JSON Schema validators (shared by unit and e2e tests).

The document is OpenAPI 3.1 but still uses 3.0's ``nullable: true`` in places; those
nodes are rewritten to allow ``null`` before validating. ``$ref``s resolve against the
whole document through a ``referencing`` registry. Loaded once per process (3 MB).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ROOT = Path(__file__).resolve().parents[3]
CANDIDATES = (
    os.environ.get("LLMGW_OPENAI_SPEC", ""),
    str(ROOT / "specs" / "openai" / "openapi.yaml"),
    str(ROOT.parent / "shared" / "specs" / "openai" / "openapi.yaml"),  # CI: shared/ beside the clone
    "/work/shared/specs/openai/openapi.yaml",
)
URI = "urn:openai:openapi"


def spec_path() -> Path | None:
    return next((Path(p) for p in CANDIDATES if p and Path(p).is_file()), None)


def allow_null(node: Any) -> Any:
    """Rewrite OpenAPI 3.0 ``nullable: true`` into JSON Schema, recursively."""
    if isinstance(node, list):
        return [allow_null(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: allow_null(v) for k, v in node.items()}
    if out.pop("nullable", False) is True:
        t = out.get("type")
        if (
            isinstance(t, str)
            and "$ref" not in out
            and not any(k in out for k in ("anyOf", "oneOf", "allOf"))
        ):
            out["type"] = [t, "null"]
            if "enum" in out and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


@functools.cache
def _registry() -> Registry:
    path = spec_path()
    if path is None:
        pytest.skip("OpenAI OpenAPI document not found (set LLMGW_OPENAI_SPEC)")
    with path.open("rb") as f:
        doc = allow_null(yaml.load(f, Loader=yaml.CSafeLoader))
    return Registry().with_resource(URI, Resource.from_contents(doc, default_specification=DRAFT202012))


@functools.cache
def validator(schema: str) -> Draft202012Validator:
    """A validator for ``components.schemas.<schema>``."""
    return Draft202012Validator({"$ref": f"{URI}#/components/schemas/{schema}"}, registry=_registry())


def check(schema: str, instance: Any) -> None:
    """Assert ``instance`` is valid against OpenAI's schema, listing every violation."""
    errors = sorted(validator(schema).iter_errors(instance), key=lambda e: list(e.absolute_path))
    assert not errors, f"not a valid {schema}:\n" + "\n".join(
        f"  at /{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:20]
    )
