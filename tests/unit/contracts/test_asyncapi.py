"""asyncapi.yaml: current, valid AsyncAPI 3.0, and faithful to topics.yaml, schemas/ and the code
that writes headers."""

import asyncio
import copy
import functools
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka.structs import ConsumerRecord
from jsonschema import Draft7Validator, Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from services.cli.main import main
from services.contracts import asyncapi
from services.contracts.events import ChatRequested, UsageRecorded
from services.runtime import telemetry
from services.runtime.codec import encode
from services.runtime.kafka import DeadLetters

ROOT = Path(__file__).resolve().parents[3]
TOPICS = yaml.safe_load((ROOT / "topics.yaml").read_text())["topics"]
VENDOR = ROOT / "schemas" / "vendor" / "asyncapi-3.0.0.json"
DOC_URI = "urn:llmgw:asyncapi"


@functools.cache
def _asyncapi_validator() -> Draft7Validator:
    schema = json.loads(VENDOR.read_text())
    assert schema["title"] == "AsyncAPI 3.0.0 schema."
    return Draft7Validator(schema)


def _violations(doc: dict[str, Any]) -> list[str]:
    errors = sorted(_asyncapi_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [f"/{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in errors]


def _violated_paths(doc: dict[str, Any]) -> set[str]:
    """Where the document is invalid, the causes under each oneOf / if-then included."""
    out: set[str] = set()
    todo = list(_asyncapi_validator().iter_errors(doc))
    while todo:
        e = todo.pop()
        out.add("/" + "/".join(map(str, e.absolute_path)))
        todo += e.context or []
    return out


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return asyncapi.document()


def _payload_validator(doc: dict[str, Any], component: str) -> Draft202012Validator:
    """A validator for one payload, its $refs resolved inside the document (as a tool would)."""
    registry: Registry = Registry().with_resource(
        DOC_URI, Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    return Draft202012Validator({"$ref": f"{DOC_URI}#/components/schemas/{component}"}, registry=registry)


def test_the_committed_document_is_current():
    assert asyncapi.check_document() == []


def test_the_document_is_valid_asyncapi_3(doc):
    assert doc["asyncapi"] == "3.0.0"
    assert _violations(doc) == []


def test_the_validator_rejects_what_asyncapi_does_not_allow(doc):
    """The vendored schema checks bindings and schema objects, not just the top level."""
    bad = copy.deepcopy(doc)
    bad["channels"]["requests"]["bindings"]["kafka"]["topicConfiguration"]["cleanup.policy"] = "delete"
    bad["components"]["schemas"]["llm.usage.v1"]["discriminator"] = {"propertyName": "status"}
    bad["operations"]["edge.send.requests"]["action"] = "publish"  # AsyncAPI 2's verb
    found = _violated_paths(bad)
    assert "/channels/requests/bindings/kafka/topicConfiguration/cleanup.policy" in found
    assert "/components/schemas/llm.usage.v1/discriminator" in found
    assert "/operations/edge.send.requests/action" in found
    assert _violations(doc) == []


def test_every_topic_is_a_channel_with_its_kafka_configuration(monkeypatch):
    monkeypatch.setenv("LLMGW_TOPIC_PREFIX", "staging.")  # the contract names topics without it
    doc = asyncapi.document()
    assert set(doc["channels"]) == set(TOPICS)
    for role, topic in TOPICS.items():
        ch = doc["channels"][role]
        assert ch["address"] == topic["name"]
        kafka = ch["bindings"]["kafka"]
        assert kafka["partitions"] == topic["partitions"]
        cfg = kafka["topicConfiguration"]
        assert cfg["cleanup.policy"] == [topic["cleanup_policy"]]
        assert cfg.get("retention.ms") == topic.get("retention_ms")
        for k, v in (topic.get("config") or {}).items():
            assert str(cfg[k]) == str(v)
        if "max.message.bytes" in (topic.get("config") or {}):
            assert isinstance(cfg["max.message.bytes"], int)
    assert doc["channels"]["ledger"]["bindings"]["kafka"]["topicConfiguration"]["cleanup.policy"] == [
        "compact"
    ]


def test_messages_carry_the_key_and_their_payload_schema(doc):
    for role, topic in TOPICS.items():
        files = re.findall(r"schemas/[\w.\-]+\.json", str(topic["value_schema"]))
        messages = doc["channels"][role]["messages"]
        if files:
            assert list(messages) == [Path(f).stem for f in files]
        for type_, m in messages.items():
            key = m["bindings"]["kafka"]["key"]
            assert topic["key"] in key["description"] or role == "dlq", (role, key)
            if (ROOT / "schemas" / f"{type_}.json").exists():
                assert m["payload"] == {"$ref": f"#/components/schemas/{type_}"}
                assert m["headers"] == {"$ref": "#/components/schemas/TraceHeaders"}
    assert list(doc["channels"]["replies"]["messages"]) == ["llm.chunk.v1", "llm.result.v1"]


def test_every_schema_file_is_embedded_with_its_defs(doc):
    comps = doc["components"]["schemas"]
    used = {
        Path(f).stem
        for t in TOPICS.values()
        for f in re.findall(r"schemas/[\w.\-]+\.json", str(t["value_schema"]))
    }
    for type_ in used:
        path = ROOT / "schemas" / f"{type_}.json"
        if not path.exists():
            continue
        schema = json.loads(path.read_text())
        assert "$id" not in comps[type_] and "$defs" not in comps[type_]
        for name in schema.get("$defs", {}):
            assert f"{type_}.{name}" in comps
    text = json.dumps(comps)
    assert "#/$defs/" not in text  # every reference re-pointed into the document


def test_payloads_validate_real_events_and_reject_wrong_ones(doc):
    usage = orjson.loads(
        encode(UsageRecorded(request_id="r", tenant_id="t", status="ok", alias="a", cost_usd=0.5))
    )
    v = _payload_validator(doc, "llm.usage.v1")
    assert list(v.iter_errors(usage)) == []
    assert list(v.iter_errors({**usage, "cost_usd": "cheap"}))
    assert list(v.iter_errors({**usage, "status": "maybe"}))

    chat = ChatRequested(
        request_id="r", tenant_id="t", model="m", messages=[{"role": "user", "content": "x"}]
    )
    req = orjson.loads(encode(chat))
    v = _payload_validator(doc, "llm.request.v1")
    assert list(v.iter_errors(req)) == []
    assert list(v.iter_errors({**req, "messages": [{"role": "user", "content": 7}]}))


def test_operations_are_the_producers_and_consumers_of_topics_yaml(doc):
    want = set()
    for role, topic in TOPICS.items():
        want |= {(str(s), "send", role) for s in topic["producers"]}
        want |= {(str(s), "receive", role) for s in topic["consumers"]}
    got = set()
    for op_id, op in doc["operations"].items():
        role = op["channel"]["$ref"].removeprefix("#/channels/")
        got.add((op["tags"][0]["name"], op["action"], role))
        channel_messages = doc["channels"][role]["messages"]
        assert [m["$ref"] for m in op["messages"]] == [
            f"#/channels/{role}/messages/{m}" for m in channel_messages
        ]
        assert re.fullmatch(r"[\w\d.\-_]+", op_id)
    assert got == want
    assert doc["operations"]["usage_sink.receive.usage"]["action"] == "receive"
    assert doc["operations"]["edge.send.requests"]["action"] == "send"


class _CapturingPublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]] = []

    async def send_raw(self, topic, value, *, key, partition=None, headers=None):
        self.sent.append((topic, value, key, headers or []))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


async def test_dead_letter_headers_are_the_ones_dead_letters_writes(doc):
    pub = _CapturingPublisher()
    record = ConsumerRecord("llm.exec", 3, 41, 0, 0, b"k", b"{not json", None, 9, 1, [("traceparent", b"x")])
    await DeadLetters(pub, "llm.dlq", "executor").send(record, "undecodable")
    ((_, value, key, headers),) = pub.sent
    dlq = doc["components"]["schemas"]["DeadLetterHeaders"]
    assert [k for k, _ in headers] == dlq["required"] == list(dlq["properties"])
    for k, v in headers:
        schema = dlq["properties"][k]
        assert list(Draft202012Validator(schema).iter_errors(v.decode())) == [], k
    (message,) = doc["channels"]["dlq"]["messages"].values()
    assert message["contentType"] == "application/octet-stream"
    assert message["headers"] == {"$ref": "#/components/schemas/DeadLetterHeaders"}
    assert value == b"{not json" and key == b"k"


def test_traceparent_header_matches_what_producers_send(doc):
    schema = doc["components"]["schemas"]["TraceHeaders"]["properties"]["traceparent"]
    with telemetry.producing("test"):
        ((name, value),) = telemetry.inject()
    assert name == "traceparent"
    assert re.fullmatch(schema["pattern"], value.decode())
    assert not re.fullmatch(schema["pattern"], "not-a-trace")


def test_check_names_each_difference(tmp_path):
    path = tmp_path / "asyncapi.yaml"
    assert asyncapi.check_document(path) == [f"{path} is missing (run `llmgw asyncapi`)"]
    asyncapi.write_document(path)
    assert asyncapi.check_document(path) == []
    text = path.read_text()
    changed = yaml.load(text, Loader=yaml.CSafeLoader)
    changed["channels"]["requests"]["bindings"]["kafka"]["partitions"] = 24
    del changed["channels"]["usage"]
    path.write_text(yaml.dump(changed, Dumper=yaml.CSafeDumper, sort_keys=False))
    drift = "\n".join(asyncapi.check_document(path))
    assert "/channels/requests/bindings/kafka/partitions: the file has 24, generated 12" in drift
    assert "/channels/usage: generated, not in the file" in drift
    path.write_text(text.replace("# Generated", "# Edited by hand; generated", 1))
    assert "formatting or comments" in asyncapi.check_document(path)[0]


def test_cli_writes_and_checks(tmp_path, capsys):
    out = tmp_path / "asyncapi.yaml"
    assert main(["asyncapi", "--output", str(out)]) == 0
    assert out.read_text() == asyncapi.render()
    assert main(["asyncapi", "--check", "--output", str(out)]) == 0
    out.write_text(out.read_text().replace("address: llm.usage\n", "address: llm.usage.old\n"))
    capsys.readouterr()
    assert main(["asyncapi", "--check", "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert '/channels/usage/address: the file has "llm.usage.old", generated "llm.usage"' in err


def test_embed_rewrites_references_in_keyword_positions_only():
    schema = {
        "$id": "https://llmgw.dev/schemas/llm.x.v1.json",
        "$defs": {"A": {"type": "object", "properties": {"$ref": {"type": "string"}}}},
        "properties": {
            "discriminator": {"type": "string"},  # a field named like a keyword
            "a": {"$ref": "#/$defs/A", "default": {"$ref": "#/$defs/A"}},
            "u": {
                "oneOf": [{"$ref": "#/$defs/A"}],
                "discriminator": {"propertyName": "k", "mapping": {"a": "#/$defs/A"}},
            },
        },
    }
    out = asyncapi.embed("llm.x.v1", schema)
    assert set(out) == {"llm.x.v1", "llm.x.v1.A"}
    props = out["llm.x.v1"]["properties"]
    assert props["discriminator"] == {"type": "string"}
    assert props["a"] == {"$ref": "#/components/schemas/llm.x.v1.A", "default": {"$ref": "#/$defs/A"}}
    assert props["u"]["x-discriminator"] == {
        "propertyName": "k",
        "mapping": {"a": "#/components/schemas/llm.x.v1.A"},
    }
    assert "discriminator" not in props["u"]
    assert out["llm.x.v1.A"]["properties"] == {"$ref": {"type": "string"}}
    with pytest.raises(ValueError, match="not a \\$defs member"):
        asyncapi.embed("llm.x.v1", {"properties": {"a": {"$ref": "other.json#/A"}}})
