"""The schema compatibility check catches each change readers cannot take and passes the
additive ones; ``--base`` reads the base from git."""

import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from services.cli.main import main
from services.contracts import compat
from services.contracts.compat import GitError, compare_schemas, compare_sets, compare_with_revision

ROOT = Path(__file__).resolve().parents[3]


def base() -> dict[str, Any]:
    """An event schema shaped as pydantic writes them: $defs, nullable unions, a
    discriminated union of outputs, arrays of objects, a map."""
    return {
        "$id": "https://llmgw.dev/schemas/llm.x.v1.json",
        "$defs": {
            "Usage": {
                "type": "object",
                "title": "Usage",
                "properties": {
                    "prompt_tokens": {"type": "integer", "default": 0},
                    "units": {"type": "object", "additionalProperties": {"type": "number"}},
                },
            },
            "TextOutput": {
                "type": "object",
                "properties": {"kind": {"const": "text", "type": "string"}, "text": {"type": "string"}},
                "required": ["kind", "text"],
            },
            "EmbeddingsOutput": {
                "type": "object",
                "properties": {
                    "kind": {"const": "embeddings", "type": "string"},
                    "data": {"type": "array", "items": {"$ref": "#/$defs/Embedding"}},
                },
                "required": ["kind", "data"],
            },
            "Embedding": {
                "type": "object",
                "properties": {
                    "index": {"type": "integer"},
                    "embedding": {"type": "array", "items": {"type": "number"}},
                },
                "required": ["index", "embedding"],
            },
        },
        "title": "XRecorded",
        "type": "object",
        "properties": {
            "type": {"const": "llm.x.v1", "default": "llm.x.v1", "type": "string"},
            "request_id": {"type": "string"},
            "status": {"enum": ["ok", "error", "cancelled"], "type": "string"},
            "cost_usd": {"type": "number", "default": 0.0},
            "api_key": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
            "finish_reason": {"anyOf": [{"enum": ["stop", "length"], "type": "string"}, {"type": "null"}]},
            "usage": {"$ref": "#/$defs/Usage"},
            "output": {
                "anyOf": [
                    {
                        "oneOf": [{"$ref": "#/$defs/TextOutput"}, {"$ref": "#/$defs/EmbeddingsOutput"}],
                        "discriminator": {
                            "propertyName": "kind",
                            "mapping": {
                                "text": "#/$defs/TextOutput",
                                "embeddings": "#/$defs/EmbeddingsOutput",
                            },
                        },
                    },
                    {"type": "null"},
                ],
                "default": None,
            },
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["request_id", "status"],
    }


def _props(s: dict[str, Any], *path: str) -> dict[str, Any]:
    node = s
    for p in path:
        node = node[p]
    props: dict[str, Any] = node["properties"]
    return props


def _edit(fn: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    s = base()
    fn(s)
    return s


INCOMPATIBLE = {
    "removed field": (lambda s: _props(s).pop("cost_usd"), "cost_usd: field removed"),
    "removed nested field": (
        lambda s: _props(s, "$defs", "Usage").pop("prompt_tokens"),
        "usage.prompt_tokens: field removed",
    ),
    "removed field of an array item in a union member": (
        lambda s: _props(s, "$defs", "Embedding").pop("index"),
        "output<kind=embeddings>.data[].index: field removed",
    ),
    "retyped field": (
        lambda s: _props(s)["cost_usd"].update(type="string"),
        "cost_usd: retyped from number to string",
    ),
    "integer field became number": (
        lambda s: _props(s, "$defs", "Usage")["prompt_tokens"].update(type="number"),
        "usage.prompt_tokens: retyped from integer to number",
    ),
    "field made nullable": (
        lambda s: _props(s).update(cost_usd={"anyOf": [{"type": "number"}, {"type": "null"}]}),
        "cost_usd: retyped from number to null|number",
    ),
    "null removed from a field": (
        lambda s: _props(s).update(api_key={"type": "string"}),
        "api_key: retyped from null|string to string",
    ),
    "retyped map values": (
        lambda s: _props(s, "$defs", "Usage")["units"]["additionalProperties"].update(type="string"),
        "usage.units.*: retyped from number to string",
    ),
    "retyped array items": (
        lambda s: _props(s)["tags"]["items"].update(type="integer"),
        "tags[]: retyped from string to integer",
    ),
    "field became free-form": (
        lambda s: _props(s).update(request_id={"title": "Request Id"}),
        "request_id: retyped from string to any value",
    ),
    "new required field": (
        lambda s: (_props(s).update(region={"type": "string"}), s["required"].append("region")),
        "region: new required field",
    ),
    "field made required": (lambda s: s["required"].append("cost_usd"), "cost_usd: field made required"),
    "new required field in a nested object": (
        lambda s: s["$defs"]["Embedding"]["required"].append("model"),
        "output<kind=embeddings>.data[].model: new required field",
    ),
    "narrowed enum": (
        lambda s: _props(s)["status"].update(enum=["ok", "error"]),
        'status: enum narrowed, values removed: ["cancelled"]',
    ),
    "narrowed enum inside a nullable union": (
        lambda s: _props(s)["finish_reason"]["anyOf"][0].update(enum=["stop"]),
        'finish_reason: enum narrowed, values removed: ["length"]',
    ),
    "free value became an enum": (
        lambda s: _props(s)["request_id"].update(enum=["a"]),
        'request_id: now restricted to ["a"]',
    ),
    "changed const": (
        lambda s: _props(s, "$defs", "TextOutput")["kind"].update(const="plain"),
        "output: union narrowed, branch kind=text removed",
    ),
    "removed anyOf branch": (
        lambda s: _props(s)["output"]["anyOf"][0]["oneOf"].pop(1),
        "output: union narrowed, branch kind=embeddings removed",
    ),
    "union collapsed to its first member": (
        lambda s: _props(s).update(output={"anyOf": [{"$ref": "#/$defs/TextOutput"}, {"type": "null"}]}),
        "output: union narrowed, branch kind=embeddings removed",
    ),
    "removed $defs member still referenced": (
        lambda s: s["$defs"].pop("Embedding"),
        "$defs member Embedding is removed but still referenced (#/$defs/Embedding)",
    ),
    "unknown fields rejected": (
        lambda s: s.update(additionalProperties=False),
        "(the event): additionalProperties: false added",
    ),
}

COMPATIBLE = {
    "nothing changed": lambda s: None,
    "new optional field": lambda s: _props(s).update(
        region={"anyOf": [{"type": "string"}, {"type": "null"}]}
    ),
    "new optional nested field": lambda s: _props(s, "$defs", "Usage").update(
        cached_tokens={"type": "integer"}
    ),
    "widened enum": lambda s: _props(s)["status"]["enum"].append("timeout"),
    "widened enum in a nullable union": lambda s: _props(s)["finish_reason"]["anyOf"][0]["enum"].append(
        "tool_calls"
    ),
    "enum dropped (any string)": lambda s: _props(s)["status"].pop("enum"),
    "new union member (a new operation)": lambda s: (
        s["$defs"].update(
            ImagesOutput={
                "type": "object",
                "properties": {"kind": {"const": "images", "type": "string"}},
                "required": ["kind"],
            }
        ),
        _props(s)["output"]["anyOf"][0]["oneOf"].append({"$ref": "#/$defs/ImagesOutput"}),
    ),
    "required field became optional": lambda s: s["required"].remove("status"),
    "annotations changed": lambda s: (
        _props(s)["cost_usd"].update(description="in USD", default=1.0, title="Cost"),
        s.update(description="new words"),
    ),
    "renamed $defs member": lambda s: (
        s["$defs"].update(TokenUsage=s["$defs"].pop("Usage")),
        _props(s)["usage"].update({"$ref": "#/$defs/TokenUsage"}),
    ),
    "new $defs member": lambda s: s["$defs"].update(Unused={"type": "string"}),
    "$ref inlined": lambda s: _props(s).update(usage=copy.deepcopy(s["$defs"]["Usage"])),
}


@pytest.mark.parametrize("case", list(INCOMPATIBLE))
def test_catches_each_incompatible_change(case):
    mutate, expected = INCOMPATIBLE[case]
    problems = compare_schemas(base(), _edit(mutate))
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("case", list(COMPATIBLE))
def test_accepts_compatible_changes(case):
    assert compare_schemas(base(), _edit(COMPATIBLE[case])) == []


def test_unused_defs_member_may_go():
    with_unused = _edit(lambda s: s["$defs"].update(Unused={"type": "string"}))
    assert compare_schemas(with_unused, base()) == []


def test_recursive_definitions_are_compared_and_terminate():
    def tree(child_fields: dict[str, Any]) -> dict[str, Any]:
        return {
            "$defs": {
                "Node": {
                    "type": "object",
                    "properties": {
                        **child_fields,
                        "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                    },
                }
            },
            "$ref": "#/$defs/Node",
        }

    old = tree({"name": {"type": "string"}, "size": {"type": "integer"}})
    assert compare_schemas(old, copy.deepcopy(old)) == []
    assert compare_schemas(old, tree({"name": {"type": "string"}})) == ["size: field removed"]


def test_file_sets():
    usage = json.loads((ROOT / "schemas" / "llm.usage.v1.json").read_text())
    live = ["llm.usage.v1"]
    assert compare_sets({"llm.usage.v1.json": usage}, {"llm.usage.v1.json": usage}, live) == []
    # a new type version is a new file: always fine, and the old one may change nothing
    assert (
        compare_sets(
            {"llm.usage.v1.json": usage}, {"llm.usage.v1.json": usage, "llm.usage.v2.json": {}}, live
        )
        == []
    )
    assert compare_sets({"llm.usage.v1.json": usage}, {}, live) == [
        "llm.usage.v1.json: removed, but llm.usage.v1 is still in EVENT_SCHEMAS (its producers and readers still use it)"
    ]
    assert compare_sets({"llm.usage.v1.json": usage}, {}, ["llm.usage.v2"]) == []  # retired first: fine
    cheaper = copy.deepcopy(usage)
    del cheaper["properties"]["cost_usd"]
    assert compare_sets({"llm.usage.v1.json": usage}, {"llm.usage.v1.json": cheaper}, live) == [
        "llm.usage.v1.json: cost_usd: field removed"
    ]


def test_every_real_schema_is_compatible_with_itself_and_a_real_narrowing_is_caught():
    files = compat.current_schemas(ROOT)
    assert len(files) >= 10
    assert compare_sets(files, copy.deepcopy(files), [Path(n).stem for n in files]) == []
    request = copy.deepcopy(files["llm.request.v1.json"])
    request["oneOf"] = [b for b in request["oneOf"] if b["$ref"] != "#/$defs/EmbedRequested"]
    assert compare_schemas(files["llm.request.v1.json"], request) == [
        "(the event): union narrowed, branch operation=embed removed"
    ]
    result = copy.deepcopy(files["llm.result.v1.json"])
    result["$defs"]["Usage"]["properties"]["units"]["additionalProperties"] = {"type": "integer"}
    problems = compare_schemas(files["llm.result.v1.json"], result)
    assert problems and all("units.*: retyped from number to integer" in p for p in problems), problems


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def _write(repo: Path, name: str, schema: dict[str, Any]) -> None:
    (repo / "schemas").mkdir(exist_ok=True)
    (repo / "schemas" / name).write_text(json.dumps(schema, indent=2))


def test_base_revision_is_read_from_git(tmp_path, monkeypatch, capsys):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _write(repo, "llm.x.v1.json", base())
    (repo / "schemas" / "vendor").mkdir()
    (repo / "schemas" / "vendor" / "other.json").write_text("{}")  # not an event schema
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "base")
    rev = _git(repo, "rev-parse", "HEAD")
    live = ["llm.x.v1"]

    assert compat.schemas_at(rev, repo) == {"llm.x.v1.json": base()}
    _write(repo, "llm.x.v2.json", {"type": "object"})  # a new file: fine
    _write(repo, "llm.x.v1.json", _edit(lambda s: _props(s)["status"]["enum"].append("timeout")))
    assert compare_with_revision(rev, repo, live) == []

    _write(repo, "llm.x.v1.json", _edit(lambda s: _props(s).pop("cost_usd")))
    assert compare_with_revision(rev, repo, live) == ["llm.x.v1.json: cost_usd: field removed"]

    monkeypatch.setattr(compat, "ROOT", repo)  # the CLI, on this repository
    assert main(["schemas", "compat", "--base", rev]) == 1
    err = capsys.readouterr().err
    assert f"not backward compatible with {rev}: llm.x.v1.json: cost_usd: field removed" in err
    assert "needs a new type version" in err
    _write(repo, "llm.x.v1.json", base())
    assert main(["schemas", "compat", "--base", "HEAD"]) == 0
    assert "backward compatible with HEAD" in capsys.readouterr().out
    assert main(["schemas", "compat"]) == 2

    with pytest.raises(GitError, match="no commit 'nope'"):
        compare_with_revision("nope", repo, live)
    assert main(["schemas", "compat", "--base", "nope"]) == 1
    assert "no commit 'nope'" in capsys.readouterr().err
