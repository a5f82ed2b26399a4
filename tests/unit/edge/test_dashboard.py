"""The usage dashboard without a stack: the ledger read as ``llmgw usage report`` reads it, the
numbers it shows, and who may see them (admin key, tenant key, bad key)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.contracts.events import UsageRecorded
from services.edge.api.dashboard import Dashboard
from services.edge.app import EdgeApp
from services.edge.asgi import Route
from services.edge.handlers import ROUTES, openai_errors
from services.edge.usage_stats import percentile, step_for, summarize
from services.edge.usage_view import ObjectCache, outcome, parse, read_records, tenant_prefix
from services.runtime.plugins import Position
from services.runtime.s3 import MemoryObjectStore
from services.usage_sink import layout
from services.usage_sink.ledger import S3UsagePlugin
from services.usage_sink.report import usage_report

from .conftest import AUTH, RESTRICTED_KEY

NOW = datetime(2026, 6, 3, 12, 0, tzinfo=UTC)
ADMIN = {"authorization": "Bearer sk-llmgw-admin"}


class MemoryUsageLedger(MemoryObjectStore):
    """The in-memory twin of ``S3UsageLedger``, opened and closed like it; counts its reads."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0
        self.opened = 0

    async def get(self, key: str) -> Any:
        self.gets += 1
        return await super().get(key)

    async def tenants(self) -> list[str]:
        from urllib.parse import unquote

        return sorted(
            {unquote(k.split("/")[1].removeprefix("tenant=")) for k in self.objects if "/tenant=" in k}
        )

    async def __aenter__(self) -> MemoryUsageLedger:
        self.opened += 1
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass


def usage(i: int, at: datetime, **kw: Any) -> UsageRecorded:
    fields: dict[str, Any] = {
        "tenant_id": "demo",
        "user_id": "ann",
        "status": "ok",
        "alias": "demo-openai",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "cost_usd": 0.25,
        "total_ms": 100.0 + i,
    } | kw
    return UsageRecorded(event_id=f"e{i}", request_id=f"r{i}", occurred_at=at, **fields)


RECORDS = [
    usage(0, NOW - timedelta(days=3)),  # before the window
    usage(1, NOW - timedelta(hours=23, minutes=30), alias="demo-anthropic", api_key="ci key", total_ms=900.0),
    usage(
        2, NOW - timedelta(hours=5), user_id="bob", status="error", error_code="provider_error", cost_usd=0.0
    ),
    usage(3, NOW - timedelta(hours=2), client_id="search", status="error", error_code="rate_limited"),
    usage(4, NOW - timedelta(minutes=1), status="cancelled", error_code="cancelled", cost_usd=0.1),
    usage(5, NOW - timedelta(minutes=1), tenant_id="other team/ä", cost_usd=100.0, user_id="zed"),
    usage(6, NOW + timedelta(minutes=5)),  # after the window
]


async def write(store: MemoryObjectStore, records: list[UsageRecorded], partition: int = 0) -> None:
    """Through the usage sink's own writer: one batch (of one partition) holding every record."""
    plugin = S3UsagePlugin(store, max_records=len(records))
    await asyncio.gather(
        *(plugin.record(r, Position("llm.usage", partition, i)) for i, r in enumerate(records))
    )


@pytest.fixture
async def ledger() -> MemoryUsageLedger:
    store = MemoryUsageLedger()
    await write(store, RECORDS)
    return store


# --- the same ledger as `llmgw usage report` ----------------------------------------------


def test_the_layout_is_the_sinks():
    for tenant in ("demo", "other team/ä", "a+b=c"):
        assert tenant_prefix(tenant) == layout.tenant_prefix(tenant)


async def test_every_tenant_adds_up_to_what_usage_report_counts(ledger):
    since = NOW - timedelta(hours=24)
    for tenant in await ledger.tenants():
        report = await usage_report(ledger, tenant, since=since, until=NOW)
        mine = summarize(await read_records(ledger, [tenant], since, NOW, ObjectCache()), since, NOW)[
            "totals"
        ]
        t = report.total
        assert (mine["requests"], mine["prompt_tokens"], mine["total_tokens"]) == (
            t.requests,
            t.prompt_tokens,
            t.total_tokens,
        )
        assert mine["errors"] + mine["rejected"] + mine["cancelled"] == t.errors
        assert mine["cost_usd"] == pytest.approx(t.cost_usd)
    assert await ledger.tenants() == ["demo", "other team/ä"]


async def test_objects_are_read_once(ledger):
    cache, since = ObjectCache(), NOW - timedelta(days=7)
    first = await read_records(ledger, ["demo"], since, NOW + timedelta(hours=1), cache)
    reads = ledger.gets
    again = await read_records(ledger, ["demo"], since, NOW + timedelta(hours=1), cache)
    assert first == again and len(first) == 6 and ledger.gets == reads > 0


def test_the_cache_drops_the_least_recently_used_past_its_bound():
    cache = ObjectCache(max_bytes=100)
    cache.put("a", 60, [])
    cache.put("b", 30, [])
    assert cache.get("a") == []  # a is now the most recent
    cache.put("c", 30, [])
    assert cache.get("b") is None and cache.get("a") == [] and cache.get("c") == [] and cache.bytes == 90


def test_outcomes_follow_the_error_table():
    assert outcome("ok", None) == "ok"
    assert outcome("cancelled", "cancelled") == "cancelled"
    for code in (
        "rate_limited",
        "budget_exceeded",
        "validation_error",
        "request_blocked",
        "response_blocked",
    ):
        assert outcome("error", code) == "rejected", code
    for code in (
        "provider_error",
        "provider_timeout",
        "internal_error",
        "stream_interrupted",
        "new_code",
        None,
    ):
        assert outcome("error", code) == "error", code


def test_a_record_missing_fields_still_counts():
    r = parse(b'{"occurred_at": "2026-06-03T11:00:00", "status": "ok"}')
    assert (r.tenant, r.model, r.user, r.key, r.total_tokens, r.cost_usd, r.total_ms) == (
        "-",
        "-",
        "-",
        "-",
        0,
        0.0,
        None,
    )
    assert r.at == datetime(2026, 6, 3, 11, tzinfo=UTC).timestamp()


# --- the numbers --------------------------------------------------------------------------


def test_nearest_rank_percentiles():
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, p) for p in (50, 90, 95, 99, 100)] == [50.0, 90.0, 95.0, 99.0, 100.0]
    assert percentile([7.0], 99) == 7.0 and percentile([], 50) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0  # always a value some request took


def test_buckets_are_as_narrow_as_fit_120():
    assert step_for(NOW - timedelta(hours=1), NOW) == 60
    assert step_for(NOW - timedelta(hours=6), NOW) == 300
    assert step_for(NOW - timedelta(hours=24), NOW) == 900
    assert step_for(NOW - timedelta(days=7), NOW) == 3 * 3600
    assert step_for(NOW - timedelta(days=30), NOW) == 6 * 3600
    assert step_for(NOW - timedelta(days=31), NOW) == 12 * 3600
    assert step_for(NOW - timedelta(days=365), NOW) == 86400


async def test_summary_by_tenant_model_user_and_key(ledger):
    since = NOW - timedelta(hours=24)
    s = summarize(await read_records(ledger, ["demo", "other team/ä"], since, NOW, ObjectCache()), since, NOW)
    t = s["totals"]
    assert (t["requests"], t["ok"], t["errors"], t["rejected"], t["cancelled"]) == (5, 2, 1, 1, 1)
    assert (t["error_rate"], t["rejection_rate"]) == (0.2, 0.2)
    assert t["cost_usd"] == pytest.approx(0.25 + 0.0 + 0.25 + 0.1 + 100.0)
    assert (t["p50_ms"], t["p99_ms"]) == (105.0, 900.0)  # the two successful requests: 900 and 105 ms
    assert s["bucket_s"] == 900 and len(s["buckets"]) == len(s["timeline"]["requests"]) == 96
    assert sum(s["timeline"]["requests"]) == 5 and s["buckets"][0] == "2026-06-02T12:00:00+00:00"
    tenants = {g["key"]: g["requests"] for g in s["by"]["tenant"]["groups"]}
    assert tenants == {"demo": 4, "other team/ä": 1}
    assert [g["key"] for g in s["by"]["tenant"]["groups"]] == ["other team/ä", "demo"]  # by spend
    assert {g["key"] for g in s["by"]["key"]["groups"]} == {"ci key", "search", "-"}
    assert {g["key"] for g in s["by"]["model"]["groups"]} == {"demo-openai", "demo-anthropic"}
    series = s["by"]["user"]["series"]["cost_usd"]
    assert [x["key"] for x in series] == ["zed", "ann", "bob"]
    assert sum(sum(x["values"]) for x in series) == pytest.approx(t["cost_usd"])


async def test_small_groups_are_summed_as_other():
    store = MemoryUsageLedger()
    await write(
        store,
        [usage(i, NOW - timedelta(minutes=5), user_id=f"u{i}", cost_usd=float(i + 1)) for i in range(5)],
    )
    since = NOW - timedelta(hours=1)
    s = summarize(
        await read_records(store, ["demo"], since, NOW, ObjectCache()), since, NOW, top_series=2, top_groups=3
    )
    series = s["by"]["user"]["series"]["cost_usd"]
    assert [(x["key"], sum(x["values"])) for x in series] == [("u4", 5.0), ("u3", 4.0), ("(other)", 6.0)]
    assert [g["key"] for g in s["by"]["user"]["groups"]] == ["u4", "u3", "u2"] and s["by"]["user"][
        "more"
    ] == 2


# --- the routes ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = NOW.timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def http(edge_settings, demo_config, pipeline, ledger, clock) -> AsyncIterator[httpx.AsyncClient]:
    dash = Dashboard(lambda edge: ledger, clock=clock)
    routes = [r for r in ROUTES if not r.path.startswith("/dashboard")] + [
        Route("GET", "/dashboard", dash.page, openai_errors, auth=False),
        Route("GET", "/dashboard/data", dash.data, openai_errors, auth=False),
    ]
    app = EdgeApp(edge_settings, demo_config, pipeline=pipeline, routes=routes)
    await app.startup()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge") as client:
        yield client


async def test_the_admin_key_sees_every_tenant(http):
    r = await http.get("/dashboard/data?since=24h", headers=ADMIN)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    doc = r.json()
    assert doc["scope"] == {"admin": True, "tenant": None} and doc["tenants"] == ["demo", "other team/ä"]
    assert doc["totals"]["requests"] == 5
    r = await http.get("/dashboard/data", params={"since": "24h", "tenant": "other team/ä"}, headers=ADMIN)
    assert r.json()["totals"]["requests"] == 1 and r.json()["filters"] == {"tenant": "other team/ä"}


async def test_a_tenant_key_sees_only_its_tenant(http):
    r = await http.get("/dashboard/data?since=24h", headers=AUTH)
    doc = r.json()
    assert (
        r.status_code == 200
        and doc["scope"] == {"admin": False, "tenant": "demo"}
        and doc["tenants"] == ["demo"]
    )
    assert doc["totals"]["requests"] == 4 and [g["key"] for g in doc["by"]["tenant"]["groups"]] == ["demo"]
    r = await http.get("/dashboard/data", params={"tenant": "other team/ä"}, headers=AUTH)
    assert r.status_code == 403 and "only tenant 'demo'" in r.json()["error"]["message"]
    r = await http.get("/dashboard/data?since=24h", headers={"authorization": f"Bearer {RESTRICTED_KEY}"})
    assert r.json()["totals"]["requests"] == 0 and r.json()["tenants"] == ["restricted"]


@pytest.mark.parametrize(
    "headers", [{}, {"authorization": "Bearer sk-wrong"}, {"authorization": "Basic abc"}]
)
async def test_no_key_or_a_bad_key_is_401(http, headers):
    r = await http.get("/dashboard/data", headers=headers)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


async def test_filters_are_exact(http):
    for params, n in (
        ({"user": "bob"}, 1),
        ({"model": "demo-anthropic"}, 1),
        ({"key": "search"}, 1),
        ({"user": "b"}, 0),
    ):
        r = await http.get("/dashboard/data", params={"since": "24h", **params}, headers=ADMIN)
        assert r.json()["totals"]["requests"] == n, params


async def test_answers_are_kept_for_the_ttl_unless_fresh(http, ledger, clock):
    r = await http.get("/dashboard/data?since=24h", headers=ADMIN)
    assert r.headers["x-llmgw-dashboard-cache"] == "miss" and ledger.opened == 1
    await write(ledger, [usage(10, NOW - timedelta(minutes=2), user_id="late")], partition=1)
    r = await http.get("/dashboard/data?since=24h", headers=ADMIN)
    assert r.headers["x-llmgw-dashboard-cache"] == "hit" and r.json()["totals"]["requests"] == 5
    r = await http.get("/dashboard/data?since=24h&fresh=1", headers=ADMIN)
    assert r.headers["x-llmgw-dashboard-cache"] == "miss" and r.json()["totals"]["requests"] == 6
    clock.now += 2.5  # the demo's cache_ttl_s is 2
    r = await http.get("/dashboard/data?since=24h", headers=ADMIN)
    assert r.headers["x-llmgw-dashboard-cache"] == "miss" and ledger.opened == 3


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("since=yesterday", "since"),
        ("since=40d", "since"),
        ("since=2021-01-01&until=2020-01-01", "since"),
        ("until=soon", "until"),
    ],
)
async def test_a_bad_window_is_400(http, query, param):
    r = await http.get(f"/dashboard/data?{query}", headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["param"] == param


async def test_the_page_allows_only_its_own_script_and_style(http):
    r = await http.get("/dashboard")
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    csp = r.headers["content-security-policy"]
    for tag in ("script", "style"):
        [body] = re.findall(rf"<{tag}>(.*?)</{tag}>", r.text, re.S)
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in csp
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "http://" not in r.text.replace("http://www.w3.org/2000/svg", "")  # nothing from elsewhere
