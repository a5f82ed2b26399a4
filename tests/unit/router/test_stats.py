"""Routing statistics: what counts from usage and audit records, the moving averages, the
usable rule, the mapping of reported models to deployments, and the rebuild from records."""

from __future__ import annotations

import random

import orjson
import pytest

from services.router.handlers import plan
from services.router.stats import ALPHA, WINDOW_S, RoutingStats, deployment_key, ewma

from .conftest import audit, chat, usage

NOW = 2_000_000.0
QUICK, SLOW, NEW = ("fast", "p1", "quick"), ("fast", "p1", "slow"), ("fast", "p2", "new")


@pytest.fixture
def resolve(routing_config):
    return lambda alias, provider, model: deployment_key(routing_config.models, alias, provider, model)


def ms(t: float) -> int:
    return int(t * 1000)


def test_ewma():
    assert ewma(None, 100.0) == 100.0
    assert ewma(100.0, 200.0) == pytest.approx(100.0 + ALPHA * 100.0)


def test_what_counts(resolve):
    s = RoutingStats(clock=lambda: NOW)
    assert s.observe(usage("fast", "p1", "quick", ttft_ms=40.0), ms(NOW - 5), resolve)
    assert s.observe(usage("fast", "p1", "quick", ttft_ms=80.0), ms(NOW - 4), resolve)
    assert s.get(QUICK).ttft_ms == pytest.approx(40.0 + ALPHA * 40.0) and s.get(QUICK).response_ms is None
    # a whole answer: its own average (ttft_ms of a whole answer is the provider call)
    assert s.observe(usage("fast", "p1", "quick", streamed=False, ttft_ms=700.0), ms(NOW - 3), resolve)
    assert s.get(QUICK).response_ms == 700.0
    assert s.observe(
        usage("fast", "p1", "slow", streamed=False, ttft_ms=None, total_ms=900.0), ms(NOW), resolve
    )
    assert s.get(SLOW).response_ms == 900.0
    # failures: provider errors and timeouts, from usage and from fallback_triggered audits
    assert s.observe(
        usage("fast", "p2", "new", status="error", error_code="provider_timeout", ttft_ms=None),
        ms(NOW - 2),
        resolve,
    )
    assert s.observe(audit("fast", "p2", "new"), ms(NOW - 1), resolve)
    assert s.get(NEW).outcomes[-1] == (NOW - 1, True)
    # nothing about the deployment: cancelled, a gateway-side error, other audit actions, junk
    for value in (
        usage("fast", "p2", "new", status="cancelled", error_code="cancelled"),
        usage("fast", "p2", "new", status="error", error_code="validation_error"),
        audit("fast", "p2", "new", action="failed"),
        audit("fast", "p2", "new", action="started"),
        audit("fast", "p2", "new", error_code="cancelled"),
        usage("nope", "p1", "quick"),
        usage("fast", "p9", "quick"),
        b"not json",
        b'{"alias": 1}',
    ):
        assert not s.observe(value, ms(NOW), resolve), value
    assert len(s.get(NEW).outcomes) == 2 and s.observed == 6


def test_usable_rule_three_recent_failures_in_a_row(resolve):
    s = RoutingStats(clock=lambda: NOW)
    s.success(QUICK, NOW - 100, streamed=True, ms=10.0)
    s.failure(QUICK, NOW - 30)
    s.failure(QUICK, NOW - 20)
    assert s.usable(QUICK)  # two failures after a success
    s.failure(QUICK, NOW - 10)
    assert not s.usable(QUICK)
    assert s.health(*QUICK) == (False, 10.0)
    # the three failures age out: usable again (tried again)
    assert s.usable(QUICK, now=NOW - 30 + WINDOW_S + 1)
    # one success: usable again
    s.success(QUICK, NOW, streamed=True, ms=10.0)
    assert s.usable(QUICK)
    assert s.usable(("never", "seen", "x")) and s.health("never", "seen", "x") == (True, None)


def test_reported_models_map_to_configured_deployments(routing_config):
    m = routing_config.models
    assert deployment_key(m, "fast", "p1", "quick") == QUICK
    assert deployment_key(m, "fast", "p2", "anything") == NEW  # the alias's only deployment on p2
    assert deployment_key(m, "fast", "p1", "quick-2024-08-06") == QUICK  # a dated name of the upstream
    assert deployment_key(m, "fast", "p1", "other") is None  # two on p1, neither matches
    assert deployment_key(m, "cheap", "p1", "mid-2024") == ("cheap", "p1", "mid")
    assert deployment_key(m, "cheap", "p2", "mid") == ("cheap", "p2", "mid-too")  # the only one it prefixes
    assert deployment_key(m, "nope", "p1", "quick") is None
    assert deployment_key(m, "fast", "p9", "quick") is None
    emulated = {
        "e": routing_config.models["fast"].model_copy(
            update={
                "deployments": [
                    d.model_copy(update={"model": n})
                    for d, n in zip(
                        routing_config.models["fast"].deployments,
                        ["slow-emu@ttfb_ms=300", "quick-emu", "x"],
                        strict=True,
                    )
                ]
            }
        )
    }
    # the emulator answers "slow-emu@ttfb_ms=300" as "slow-emu"
    assert deployment_key(emulated, "e", "p1", "slow-emu") == ("e", "p1", "slow-emu@ttfb_ms=300")


def test_rebuilt_from_records_in_any_order_equals_what_was_observed_live(routing_config, resolve):
    rng = random.Random(7)
    records = []
    for i in range(60):
        dep, mean = rng.choice([("slow", 300.0), ("quick", 30.0), ("new", 90.0)])
        records.append(
            (
                ms(NOW - 600 + i),
                usage("fast", "p2" if dep == "new" else "p1", dep, ttft_ms=mean * rng.uniform(0.8, 1.2)),
            )
        )
    records += [(ms(NOW - 5 + i), audit("fast", "p1", "quick")) for i in range(3)]
    live = RoutingStats(clock=lambda: NOW)
    for ts, value in records:
        live.observe(value, ts, resolve)
    # a restarted router reads the partitions one after another: the records arrive out of order
    shuffled = records[:]
    rng.shuffle(shuffled)
    rebuilt = RoutingStats(clock=lambda: NOW)
    assert rebuilt.rebuild(shuffled, resolve) == len(records)
    for key in (QUICK, SLOW, NEW):
        assert rebuilt.get(key).ttft_ms == pytest.approx(live.get(key).ttft_ms)
        assert rebuilt.usable(key) == live.usable(key)
    assert not rebuilt.usable(QUICK)
    order = [
        d.upstream_model for d in plan(chat("fast", stream=True), routing_config, stats=rebuilt).deployments
    ]
    assert order == ["new", "slow", "quick"]  # quick is fastest but failing now: last
    # a router that starts empty would have planned in configuration order
    assert [
        d.upstream_model
        for d in plan(chat("fast", stream=True), routing_config, stats=RoutingStats()).deployments
    ] == ["slow", "quick", "new"]


def test_a_malformed_record_naming_a_deployment_is_ignored_and_stops_nothing(resolve):
    """Records that name a known deployment but hold a field of the wrong type (as the chaos
    suite sends them to llm.usage): ignored, none raises (a raise stopped the statistics feed,
    and a restarted router replaying the last hour could not start)."""
    s = RoutingStats(clock=lambda: NOW)
    known = {"alias": "fast", "provider": "p1", "model": "quick"}
    for doc in (
        known | {"status": "error", "error_code": ["provider_error"]},  # unhashable
        known | {"status": "error", "error_code": {"code": 1}},
        known | {"model": ["quick"], "status": "ok"},
        known | {"status": "ok", "failed_attempts": [{"alias": "fast", "provider": "p1", "model": [1]}]},
        known | {"status": "ok", "failed_attempts": 5, "ttft_ms": "fast"},
        [known],
    ):
        s.observe(orjson.dumps(doc), ms(NOW), resolve)  # no exception
    assert s.observe(usage("fast", "p1", "quick", ttft_ms=40.0), ms(NOW), resolve)  # and it goes on
