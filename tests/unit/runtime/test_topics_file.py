from pathlib import Path

import yaml

from services.runtime.topics import Topics

ROOT = Path(__file__).resolve().parents[3]


def test_requests_and_usage_are_co_partitioned():
    t = Topics.load(ROOT / "topics.yaml")
    assert t.requests.partitions == t.usage.partitions
    doc = yaml.safe_load((ROOT / "topics.yaml").read_text())["topics"]
    assert doc["requests"]["key"] == doc["usage"]["key"] == "tenant_id"


def test_every_design_topic_is_declared_with_its_fields():
    doc = yaml.safe_load((ROOT / "topics.yaml").read_text())["topics"]
    names = {t["name"] for t in doc.values()}
    assert {
        "llm.requests",
        "llm.exec",
        "llm.chunks",
        "llm.results",
        "llm.usage",
        "llm.audit",
        "llm.control",
        "llm.jobs",
        "llm.dlq",
        "llm.media.in",
        "llm.media.out",
    } <= names
    for role, t in doc.items():
        for field in (
            "name",
            "partitions",
            "key",
            "cleanup_policy",
            "value_schema",
            "producers",
            "consumers",
        ):
            assert field in t, f"{role} lacks {field}"
    assert doc["jobs"]["cleanup_policy"] == "compact"


def test_prefix_applies_to_every_name():
    t = Topics.load(ROOT / "topics.yaml", "x.")
    assert all(s.name.startswith("x.llm.") for s in t)


def test_no_topic_name_is_hardcoded_in_services():
    names = [t.name for t in Topics.load(ROOT / "topics.yaml")]
    for path in (ROOT / "services").rglob("*.py"):
        text = path.read_text()
        for n in names:
            assert f'"{n}"' not in text and f"'{n}'" not in text, f"{path} hardcodes {n}"
