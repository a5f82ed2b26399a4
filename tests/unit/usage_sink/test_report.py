"""``llmgw usage report``: the window, the groups, and totals read back from what the ledger wrote."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from services.contracts.events import UsageRecorded
from services.runtime.plugins import Position
from services.runtime.s3 import MemoryObjectStore
from services.usage_sink.ledger import S3UsagePlugin
from services.usage_sink.report import parse_since, usage_report

NOW = datetime(2025, 6, 3, 12, 0, tzinfo=UTC)


def test_since_is_a_duration_back_from_now_or_an_iso_date():
    assert parse_since("24h", NOW) == NOW - timedelta(hours=24)
    assert parse_since("30m", NOW) == NOW - timedelta(minutes=30)
    assert parse_since("7d", NOW) == NOW - timedelta(days=7)
    assert parse_since("2025-06-01", NOW) == datetime(2025, 6, 1, tzinfo=UTC)
    assert parse_since("2025-06-01T10:00:00+02:00", NOW) == datetime(2025, 6, 1, 8, tzinfo=UTC)
    with pytest.raises(ValueError, match="neither a duration"):
        parse_since("yesterday", NOW)


def u(
    i: int,
    at: datetime,
    *,
    tenant="demo",
    alias="demo-openai",
    user="ann",
    client=None,
    status="ok",
    prompt=10,
    completion=5,
    cost=0.25,
) -> UsageRecorded:
    return UsageRecorded(
        event_id=f"e{i}",
        request_id=f"r{i}",
        tenant_id=tenant,
        user_id=user,
        client_id=client,
        status=status,
        alias=alias,
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cost_usd=cost,
        occurred_at=at,
    )


RECORDS = [
    u(0, NOW - timedelta(days=3)),  # outside --since 48h
    u(1, NOW - timedelta(hours=47, minutes=59), alias="demo-anthropic", client="billing"),
    u(2, NOW - timedelta(hours=30), user="bob", client="billing", status="error", completion=0, cost=0.0),
    u(3, NOW - timedelta(hours=2), client="search", cost=0.5),
    u(4, NOW - timedelta(minutes=1), alias="demo-anthropic"),
    u(5, NOW - timedelta(minutes=1), tenant="other", cost=100.0),  # another tenant: never counted
    u(6, NOW + timedelta(minutes=5)),  # after until
]


@pytest.fixture
async def store() -> MemoryObjectStore:
    store = MemoryObjectStore()
    plugin = S3UsagePlugin(store, max_records=1000)
    tasks = [
        asyncio.create_task(plugin.record(r, Position("llm.usage", i % 3, i))) for i, r in enumerate(RECORDS)
    ]
    await asyncio.sleep(0)
    plugin.flush()
    await asyncio.gather(*tasks)
    return store


async def test_totals_of_the_tenant_within_the_window(store):
    report = await usage_report(store, "demo", since=NOW - timedelta(hours=48), until=NOW)
    t = report.total
    assert (t.requests, t.errors, t.prompt_tokens, t.completion_tokens, t.total_tokens) == (4, 1, 40, 15, 55)
    assert t.cost_usd == pytest.approx(1.0)
    assert report.groups == {}
    assert "TOTAL" not in report.table() and report.table().splitlines()[-1].split()[:2] == ["demo", "4"]


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        ("model", {"demo-openai": (2, 0.5), "demo-anthropic": (2, 0.5)}),
        ("user", {"ann": (3, 1.0), "bob": (1, 0.0)}),
        ("key", {"billing": (2, 0.25), "search": (1, 0.5), "-": (1, 0.25)}),
        ("day", {"2025-06-01": (1, 0.25), "2025-06-02": (1, 0.0), "2025-06-03": (2, 0.75)}),
    ],
)
async def test_groups(store, by, expected):
    report = await usage_report(store, "demo", since=NOW - timedelta(hours=48), until=NOW, by=by)
    assert {k: (v.requests, round(v.cost_usd, 6)) for k, v in report.groups.items()} == expected
    doc = report.as_json()
    assert doc["by"] == by and doc["total"]["requests"] == 4
    assert sum(g["requests"] for g in doc["groups"]) == 4
    assert report.table().splitlines()[-1].startswith("TOTAL")


async def test_another_tenant_sees_only_its_own(store):
    report = await usage_report(store, "other", since=NOW - timedelta(days=30), until=NOW)
    assert report.total.requests == 1 and report.total.cost_usd == 100.0
    empty = await usage_report(store, "nobody", since=NOW - timedelta(days=30), until=NOW)
    assert empty.total.requests == 0


async def test_unknown_grouping_is_refused(store):
    with pytest.raises(ValueError, match="--by must be one of"):
        await usage_report(store, "demo", since=NOW - timedelta(hours=1), until=NOW, by="colour")


def test_by_key_names_the_api_key_and_falls_back_to_the_client_id():
    from services.usage_sink.report import group_key

    assert group_key({"api_key": "billing key", "client_id": "billing"}, "key", NOW) == "billing key"
    assert group_key({"client_id": "billing"}, "key", NOW) == "billing"
    assert group_key({}, "key", NOW) == "-"
