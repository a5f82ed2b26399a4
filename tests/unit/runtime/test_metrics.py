"""The metrics interface (``services/runtime/metrics.py``): the version-1 names, types and labels
exactly as documented, no id ever a label, and the values recording functions and scrape-time
readers leave in the registry; the metrics port serves the Prometheus text."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from services.cli import infra
from services.contracts.events import ChatRequested, RateLimitInfo, UsageRecorded
from services.runtime import metrics, metrics_http
from services.runtime.kafka import Subscription
from services.runtime.settings import Settings
from tests.support import eventually
from tests.unit.runtime.test_consumer_pause import A, FakeKafka, blocking, chat, consumer

#: Version 1 of the interface (README "Metrics"): name -> (type, labels). Changing a line here
#: is a breaking change: it needs a new ``METRICS_VERSION``.
V1 = {
    "llmgw_build_info": ("gauge", ["metrics_version", "version", "service"]),
    "llmgw_requests": ("counter", ["operation", "alias", "provider", "outcome"]),
    "llmgw_request_duration_seconds": ("histogram", ["operation", "alias", "provider"]),
    "llmgw_time_to_first_token_seconds": ("histogram", ["alias", "provider"]),
    "llmgw_tokens": ("counter", ["operation", "alias", "provider", "type"]),
    "llmgw_cost_usd": ("counter", ["operation", "alias", "provider"]),
    "llmgw_provider_retries": ("counter", ["alias", "provider"]),
    "llmgw_fallbacks": ("counter", ["alias", "provider", "code"]),
    "llmgw_gateway_overhead_seconds": ("histogram", ["operation", "stream"]),
    "llmgw_rejections": ("counter", ["operation", "code"]),
    "llmgw_ratelimit_remaining_ratio": ("histogram", ["dimension"]),
    "llmgw_budget_remaining_ratio": ("histogram", ["period", "scope"]),
    "llmgw_consumer_lag_records": ("gauge", ["group", "topic", "partition"]),
    "llmgw_consumer_in_flight": ("gauge", ["group", "topic", "partition"]),
    "llmgw_circuit_state": ("gauge", ["alias", "provider", "model"]),
}
IDS = {"tenant", "tenant_id", "user", "user_id", "request", "request_id", "key", "api_key", "client_id", "id"}


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def usage(**kw: object) -> UsageRecorded:
    base: dict[str, object] = dict(
        request_id="r1",
        tenant_id="acme",
        user_id="u7",
        status="ok",
        operation="chat",
        alias="m-metrics",
        provider="p1",
        prompt_tokens=12,
        completion_tokens=5,
        cached_tokens=2,
        cost_usd=0.25,
        total_ms=120.0,
        ttft_ms=40.0,
    )
    return UsageRecorded.model_validate(base | kw)


@pytest.fixture(autouse=True)
def on():
    metrics.enabled = True
    yield
    metrics.enabled = True


class OneConsumer:
    group_id = "g-names"

    def partition_stats(self):
        return [("t", 0, 3, 1)]


class Holder:  # weakly referenced, as a Breakers is
    def __init__(self, circuits):
        self.circuits = circuits


def test_the_names_types_and_labels_are_version_1():
    # one of each, so that every family has samples whose labels can be read
    metrics.BUILD_INFO.labels(metrics.METRICS_VERSION, metrics.VERSION, "test").set(1)
    metrics.executed(usage())
    metrics.retried("a", "p")
    metrics.fell_back("a", "p", "provider_error")
    metrics.overhead("chat", False, 1.0)
    metrics.rejected("chat", "rate_limited")
    metrics.ratelimit_left(RateLimitInfo(limit_requests=1, remaining_requests=1))
    metrics.budget_left([SimpleNamespace(scope="tenant", period="day:2026-12-02", usd=1.0)], {}, {}, 0.1)
    consumer_source, circuits = OneConsumer(), Holder({"a/p/m": SimpleNamespace(state="closed")})
    metrics.watch_consumer(consumer_source)
    metrics.watch_circuits(circuits)
    found = {}
    for m in metrics.REGISTRY.collect():
        if m.name.startswith("llmgw_"):
            found[m.name] = (m.type, sorted({k for s in m.samples for k in s.labels} - {"le"}))
    assert found == {name: (kind, sorted(labels)) for name, (kind, labels) in V1.items()}
    assert metrics.METRICS_VERSION == "1"
    assert value("llmgw_build_info", metrics_version="1", version=metrics.VERSION, service="test") == 1


def test_no_label_can_carry_an_id():
    for name, (_, labels) in V1.items():
        assert not IDS & set(labels), name
    metrics.executed(usage())
    text = metrics.exposition()[0].decode()
    assert "acme" not in text and "u7" not in text and '"r1"' not in text


def test_an_executed_request_counts_its_outcome_tokens_cost_and_timings():
    labels = dict(operation="chat", alias="m-metrics", provider="p1")
    before = {
        "ok": value("llmgw_requests_total", **labels, outcome="ok"),
        "in": value("llmgw_tokens_total", **labels, type="input"),
        "out": value("llmgw_tokens_total", **labels, type="output"),
        "cached": value("llmgw_tokens_total", **labels, type="cached"),
        "cost": value("llmgw_cost_usd_total", **labels),
        "dur": value("llmgw_request_duration_seconds_count", **labels),
        "dur_sum": value("llmgw_request_duration_seconds_sum", **labels),
        "ttft": value("llmgw_time_to_first_token_seconds_count", alias="m-metrics", provider="p1"),
    }
    metrics.executed(usage())
    metrics.executed(
        usage(
            status="error",
            error_code="provider_timeout",
            prompt_tokens=0,
            completion_tokens=0,
            cached_tokens=0,
            cost_usd=0.0,
            ttft_ms=None,
        )
    )
    metrics.executed(usage(status="cancelled", ttft_ms=None))
    assert value("llmgw_requests_total", **labels, outcome="ok") == before["ok"] + 1
    assert value("llmgw_requests_total", **labels, outcome="provider_timeout") >= 1
    assert value("llmgw_requests_total", **labels, outcome="cancelled") >= 1
    assert value("llmgw_tokens_total", **labels, type="input") == before["in"] + 24
    assert value("llmgw_tokens_total", **labels, type="output") == before["out"] + 10
    assert value("llmgw_tokens_total", **labels, type="cached") == before["cached"] + 4
    assert value("llmgw_cost_usd_total", **labels) == pytest.approx(before["cost"] + 0.5)
    assert value("llmgw_request_duration_seconds_count", **labels) == before["dur"] + 3
    assert value("llmgw_request_duration_seconds_sum", **labels) == pytest.approx(before["dur_sum"] + 0.36)
    assert (
        value("llmgw_time_to_first_token_seconds_count", alias="m-metrics", provider="p1")
        == before["ttft"] + 1
    )


def test_retries_fallbacks_overhead_and_rejections():
    r0 = value("llmgw_provider_retries_total", alias="a1", provider="p1")
    f0 = value("llmgw_fallbacks_total", alias="a1", provider="p1", code="provider_error")
    o0 = value("llmgw_gateway_overhead_seconds_count", operation="chat", stream="true")
    b0 = value("llmgw_gateway_overhead_seconds_bucket", operation="chat", stream="true", le="0.005")
    j0 = value("llmgw_rejections_total", operation="chat", code="rate_limited")
    metrics.retried("a1", "p1", 2)
    metrics.fell_back("a1", "p1", "provider_error")
    metrics.overhead("chat", True, 3.2)
    metrics.overhead("chat", True, 40.0)
    metrics.rejected("chat", "rate_limited")
    assert value("llmgw_provider_retries_total", alias="a1", provider="p1") == r0 + 2
    assert value("llmgw_fallbacks_total", alias="a1", provider="p1", code="provider_error") == f0 + 1
    assert value("llmgw_gateway_overhead_seconds_count", operation="chat", stream="true") == o0 + 2
    assert (
        value("llmgw_gateway_overhead_seconds_bucket", operation="chat", stream="true", le="0.005") == b0 + 1
    )
    assert value("llmgw_rejections_total", operation="chat", code="rate_limited") == j0 + 1


def test_remaining_rate_limits_and_budgets_are_ratios_by_kind_never_by_who():
    q0 = value("llmgw_ratelimit_remaining_ratio_bucket", dimension="requests", le="0.25")
    t0 = value("llmgw_ratelimit_remaining_ratio_count", dimension="tokens")
    metrics.ratelimit_left(
        RateLimitInfo(limit_requests=10, remaining_requests=2, limit_tokens=1000, remaining_tokens=900)
    )
    assert value("llmgw_ratelimit_remaining_ratio_bucket", dimension="requests", le="0.25") == q0 + 1
    assert value("llmgw_ratelimit_remaining_ratio_count", dimension="tokens") == t0 + 1

    day = SimpleNamespace(scope="user:u7", period="day:2026-12-02", usd=10.0)
    month = SimpleNamespace(scope="tenant", period="month:2026-12", usd=100.0)
    spent = {("user:u7", "day:2026-12-02"): 6.0}
    reserved = {("user:u7", "day:2026-12-02"): 1.0, ("tenant", "month:2026-12"): 50.0}
    d0 = value("llmgw_budget_remaining_ratio_bucket", period="day", scope="user", le="0.25")
    d1 = value("llmgw_budget_remaining_ratio_bucket", period="day", scope="user", le="0.1")
    m0 = value("llmgw_budget_remaining_ratio_sum", period="month", scope="tenant")
    metrics.budget_left([day, month], spent, reserved, cost=1.0)  # day: 2 of 10 left; month: 49 of 100
    assert value("llmgw_budget_remaining_ratio_bucket", period="day", scope="user", le="0.25") == d0 + 1
    assert value("llmgw_budget_remaining_ratio_bucket", period="day", scope="user", le="0.1") == d1
    assert value("llmgw_budget_remaining_ratio_sum", period="month", scope="tenant") == pytest.approx(
        m0 + 0.49
    )
    assert "u7" not in metrics.exposition()[0].decode()


def test_nothing_is_recorded_when_metrics_are_off():
    labels = dict(operation="chat", alias="m-off", provider="p1", outcome="ok")
    metrics.enabled = False
    metrics.executed(usage(alias="m-off"))
    metrics.rejected("chat", "budget_exceeded_off")
    assert value("llmgw_requests_total", **labels) == 0
    assert value("llmgw_rejections_total", operation="chat", code="budget_exceeded_off") == 0


class Watermarked(FakeKafka):
    def highwater(self, tp: TopicPartition) -> int:
        return len(self.logs[tp])


async def test_consumer_lag_and_in_flight_per_partition_are_read_at_scrape_time():
    gate = {"release": asyncio.Event(), "started": [], "done": []}
    fake = Watermarked({A: [chat(i) for i in range(5)]})
    c = consumer(fake, {"requests": Subscription.of(ChatRequested, blocking(gate))}, max_in_flight=2)
    c.group_id = "g-metrics"
    metrics.watch_consumer(c)
    task = asyncio.create_task(c._run())
    try:
        await eventually(lambda: len(gate["started"]) == 2)
        assert c.partition_stats() == [("requests", 0, 5, 2)]  # none committed yet; two running
        labels = dict(group="g-metrics", topic="requests", partition="0")
        assert value("llmgw_consumer_in_flight", **labels) == 2
        assert value("llmgw_consumer_lag_records", **labels) == 5
        gate["release"].set()
        await eventually(lambda: len(gate["done"]) == 5)
        assert c.partition_stats() == [("requests", 0, 0, 0)]
        assert value("llmgw_consumer_lag_records", **labels) == 0
    finally:
        task.cancel()


def test_circuit_states_are_read_from_their_holder():
    h = Holder(
        {
            "a1/p1/model/with/slashes": SimpleNamespace(state="open"),
            "a2/p2/m2": SimpleNamespace(state="half_open"),
            "a3/p3/m3": SimpleNamespace(state="closed"),
        }
    )
    metrics.watch_circuits(h)
    assert value("llmgw_circuit_state", alias="a1", provider="p1", model="model/with/slashes") == 2
    assert value("llmgw_circuit_state", alias="a2", provider="p2", model="m2") == 1
    assert (
        metrics.REGISTRY.get_sample_value("llmgw_circuit_state", dict(alias="a3", provider="p3", model="m3"))
        == 0
    )
    del h  # a holder gone is no longer read
    assert (
        metrics.REGISTRY.get_sample_value("llmgw_circuit_state", dict(alias="a2", provider="p2", model="m2"))
        is None
    )


async def test_the_metrics_port_serves_the_prometheus_text():
    port = infra.free_port()
    metrics_http.serve("unit", Settings.from_env({"LLMGW_METRICS_PORT": str(port)}))
    assert metrics.enabled

    async def get(path: str) -> tuple[bytes, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\nhost: x\r\n\r\n")
        data = await reader.read()
        writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return head, body

    async with asyncio.timeout(10):  # listening from serve's return: the loop's server accepts
        head, body = await get("/metrics")
    assert head.startswith(b"HTTP/1.1 200") and b"text/plain" in head
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert "llmgw_build_info" in families and "process_cpu_seconds" in families
    assert (await get("/other"))[0].startswith(b"HTTP/1.1 404")


def test_metrics_off_by_switch_turns_recording_off():
    metrics_http.serve("unit-off", Settings.from_env({"LLMGW_METRICS": "0", "LLMGW_METRICS_PORT": "1"}))
    assert not metrics.enabled


def test_an_executors_attempts_count_its_retries_and_fallbacks():
    from services.contracts.errors import ProviderError
    from services.contracts.events import utcnow
    from services.executor import observed
    from services.executor.attempts import Attempts, Tried
    from services.executor.targets import Target

    first = Target(alias="a-obs", provider="p1", kind="openai", base_url="http://x/v1", upstream_model="m1")
    second = Target(alias="a-obs", provider="p2", kind="openai", base_url="http://y/v1", upstream_model="m2")
    attempts = Attempts([first, second])
    attempts.calls = [
        Tried(first, 0, utcnow(), 1.0, ProviderError("503")),
        Tried(first, 0, utcnow(), 1.0, ProviderError("503")),  # the retry
        Tried(second, 1, utcnow(), 1.0),  # the fallback answered
    ]
    r0 = value("llmgw_provider_retries_total", alias="a-obs", provider="p1")
    f0 = value("llmgw_fallbacks_total", alias="a-obs", provider="p1", code="provider_error")
    n0 = value("llmgw_requests_total", operation="chat", alias="a-obs", provider="p2", outcome="ok")
    observed.record(usage(alias="a-obs", provider="p2"), attempts)
    assert value("llmgw_provider_retries_total", alias="a-obs", provider="p1") == r0 + 1
    assert value("llmgw_provider_retries_total", alias="a-obs", provider="p2") == 0
    assert value("llmgw_fallbacks_total", alias="a-obs", provider="p1", code="provider_error") == f0 + 1
    assert (
        value("llmgw_requests_total", operation="chat", alias="a-obs", provider="p2", outcome="ok") == n0 + 1
    )
