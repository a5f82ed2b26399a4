"""Where a usage record goes: a function of the record alone."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.usage_sink.layout import Group, intent_key, object_key, offset_range, source_prefix


def test_date_and_hour_are_the_records_occurred_at_in_utc():
    paris = timezone(timedelta(hours=2))
    assert Group.of("demo", datetime(2025, 3, 1, 1, 30, tzinfo=paris)) == Group("demo", "2025-02-28", "23")
    assert Group.of("demo", datetime(2025, 3, 1, 1, 30)) == Group("demo", "2025-03-01", "01")  # naive: UTC
    assert Group.of("demo", datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC)).prefix() == (
        "usage/tenant=demo/date=2025-12-31/hour=23/"
    )


def test_object_key_names_source_and_offset_range_and_reads_back():
    g = Group("acme", "2025-01-02", "07")
    key = object_key(g, "t1.llm.usage", 11, 120, 4711)
    assert key == (
        "usage/tenant=acme/date=2025-01-02/hour=07/"
        "t1.llm.usage+11+00000000000000000120+00000000000000004711.ndjson"
    )
    assert offset_range(key) == (120, 4711)
    assert sorted([object_key(g, "u", 0, 9, 9), object_key(g, "u", 0, 10, 12)]) == [
        object_key(g, "u", 0, 9, 9),
        object_key(g, "u", 0, 10, 12),
    ]  # zero-padded: name order is offset order
    with pytest.raises(ValueError):
        offset_range("usage/tenant=acme/readme.txt")


def test_a_sources_prefix_is_its_own():
    g = Group("acme", "2025-01-02", "07")
    assert not object_key(g, "llm.usage", 11, 0, 1).startswith(source_prefix(g, "llm.usage", 1))
    assert not object_key(g, "llm.usage-x", 1, 0, 1).startswith(source_prefix(g, "llm.usage", 1))
    assert object_key(g, "llm.usage", 1, 0, 1).startswith(source_prefix(g, "llm.usage", 1))


def test_tenant_names_are_percent_encoded():
    assert (
        Group("a/b=c d", "2025-01-02", "07").prefix() == "usage/tenant=a%2Fb%3Dc%20d/date=2025-01-02/hour=07/"
    )
    assert intent_key("llm.usage", 3) == "usage/_intents/llm.usage+3.json"
