"""Realtime session summaries in the usage ledger: where they live, one per session whoever writes
first, listed by ``usage sessions`` and never summed by ``usage report``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiokafka.structs import ConsumerRecord

from services.cli.output import sessions_table
from services.contracts.events import RealtimeSessionSummarized, SessionUsage, Usage, UsageRecorded
from services.runtime.plugins import NoopUsagePlugin, Position, TenantPlugins, UsagePlugin
from services.runtime.s3 import MemoryObjectStore
from services.usage_sink.handlers import record_session
from services.usage_sink.layout import session_key
from services.usage_sink.ledger import S3UsagePlugin
from services.usage_sink.report import usage_report
from services.usage_sink.sessions import list_sessions

START = datetime(2025, 6, 3, 23, 59, 58, tzinfo=UTC)
TURN = Usage(
    prompt_tokens=40,
    completion_tokens=20,
    total_tokens=60,
    cached_tokens=8,
    units={"input_audio_tokens": 30.0, "output_audio_tokens": 15.0},
)


def summary(
    by: str = "executor",
    *,
    turns: int = 2,
    session: str = "s1",
    tenant: str = "demo",
    start: datetime = START,
) -> RealtimeSessionSummarized:
    usage = SessionUsage()
    for _ in range(turns):
        usage = usage.plus(TURN, 0.5)
    return RealtimeSessionSummarized(
        request_id=session,
        tenant_id=tenant,
        user_id="ann",
        alias="demo-realtime",
        api_key="demo",
        usage=usage,
        started_at=start,
        ended_at=start + timedelta(seconds=5),  # the next day: the object is dated by its start
        close_code=1000 if by == "executor" else 1011,
        ended_by=by,  # type: ignore[arg-type]
    )


def rec(offset: int = 0) -> ConsumerRecord:
    return ConsumerRecord("llm.realtime.sessions", 0, offset, 0, 0, b"s1", b"", None, 0, 0, [])


def plugins(store: MemoryObjectStore, noop_tenant: str | None = None) -> TenantPlugins[UsagePlugin]:
    default = S3UsagePlugin(store, max_records=10, max_wait_s=0.01)
    by_tenant: dict[str, UsagePlugin] = {noop_tenant: NoopUsagePlugin()} if noop_tenant else {}
    return TenantPlugins(default, by_tenant, {})


def test_a_summary_lives_apart_from_usage_records_dated_by_its_start():
    key = session_key("ten/ant", START, "sess/1")
    assert key == "usage/_sessions/tenant=ten%2Fant/date=2025-06-03/sess%2F1.json"
    assert not key.startswith("usage/tenant=")  # what usage report and the dashboard list


def test_session_usage_sums_its_turns():
    usage = SessionUsage().plus(TURN, 0.25).plus(TURN, 0.5)
    assert (usage.turns, usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (2, 80, 40, 16)
    assert usage.units == {"input_audio_tokens": 60.0, "output_audio_tokens": 30.0}
    assert usage.cost_usd == 0.75
    assert usage.wire() == {
        "turns": 2,
        "input_tokens": 80,
        "output_tokens": 40,
        "cached_tokens": 16,
        "cost_usd": 0.75,
        "input_audio_tokens": 60,
        "output_audio_tokens": 30,
    }


async def test_the_executors_summary_wins_whichever_arrives_first():
    for order in (("gateway", "executor"), ("executor", "gateway")):
        store = MemoryObjectStore()
        ps = plugins(store)
        for i, by in enumerate(order):
            await record_session(ps, summary(by, turns=2 if by == "executor" else 1), rec(i))
        keys = await store.keys("usage/_sessions/")
        assert keys == [session_key("demo", START, "s1")]
        stored = RealtimeSessionSummarized.model_validate_json((await store.get(keys[0])).body)
        assert (stored.ended_by, stored.usage.turns, stored.close_code) == ("executor", 2, 1000), order


async def test_a_lost_sessions_summary_is_kept_and_a_redelivery_writes_nothing_new():
    store = MemoryObjectStore()
    ps = plugins(store)
    await record_session(ps, summary("gateway", turns=1), rec(0))
    await record_session(ps, summary("gateway", turns=1), rec(0))  # redelivered
    keys = await store.keys("usage/_sessions/")
    assert len(keys) == 1
    stored = RealtimeSessionSummarized.model_validate_json((await store.get(keys[0])).body)
    assert (stored.ended_by, stored.usage.turns) == ("gateway", 1)


async def test_a_tenant_whose_usage_plugin_keeps_no_sessions_is_skipped():
    store = MemoryObjectStore()
    await record_session(plugins(store, noop_tenant="quiet"), summary(tenant="quiet"), rec())
    assert await store.keys("usage/") == []


async def test_sessions_are_listed_and_never_summed_by_the_usage_report():
    store = MemoryObjectStore()
    ps = plugins(store)
    plugin = ps.default
    for i in range(2):  # the session's two billable turns
        turn = UsageRecorded(
            request_id=f"s1/{i}",
            tenant_id="demo",
            status="ok",
            operation="realtime",
            alias="demo-realtime",
            prompt_tokens=40,
            completion_tokens=20,
            total_tokens=60,
            cost_usd=0.5,
            occurred_at=START,
        )
        await plugin.record(turn, Position("llm.usage", 0, i))
    await record_session(ps, summary("executor"), rec())
    await record_session(ps, summary("executor", session="s0", start=START - timedelta(days=3)), rec(1))
    window = {"since": START - timedelta(hours=1), "until": START + timedelta(hours=1)}
    report = await usage_report(store, "demo", **window)
    assert (report.total.requests, report.total.prompt_tokens, report.total.cost_usd) == (2, 80, 1.0)
    listing = (await list_sessions(store, "demo", **window)).as_json()
    assert [s["request_id"] for s in listing["sessions"]] == ["s1"]  # s0 started before the window
    assert listing["total"] == {
        "sessions": 1,
        "turns": 2,
        "prompt_tokens": 80,
        "completion_tokens": 40,
        "cached_tokens": 16,
        "total_tokens": 120,
        "cost_usd": 1.0,
    }
    assert (listing["total"]["prompt_tokens"], listing["total"]["cost_usd"]) == (
        report.total.prompt_tokens,
        report.total.cost_usd,
    )
    table = sessions_table(listing).splitlines()
    assert table[1].split()[:2] == ["started", "session"]
    assert "s1" in table[2] and table[2].split()[-2:] == ["1,000", "executor"]
    assert table[-1].split()[:3] == ["1", "sessions", "2"]
