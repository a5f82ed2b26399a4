"""The executors' circuit breakers (``llm.breakers``) in the router's statistics: an open or
probed circuit makes its deployment unusable (tried last) until its ``until``; closed lifts it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.contracts.events import BreakerChanged
from services.router.handlers import plan
from services.router.stats import RoutingStats, deployment_key

from .conftest import chat

NOW = 2_000_000.0
QUICK = ("fast", "p1", "quick")


@pytest.fixture
def resolve(routing_config):
    return lambda alias, provider, model: deployment_key(routing_config.models, alias, provider, model)


def circuit(state: str, until: float | None = None, model: str = "quick", alias: str = "fast") -> bytes:
    ev = BreakerChanged(
        alias=alias,
        provider="p1",
        model=model,
        state=state,  # type: ignore[arg-type]
        until=datetime.fromtimestamp(until, UTC) if until else None,
        by="executor-x",
    )
    return ev.model_dump_json().encode()


def test_an_open_circuit_is_unusable_until_its_cool_down_ends(resolve):
    s = RoutingStats(clock=lambda: NOW)
    assert s.observe(circuit("open", NOW + 30), int(NOW * 1000), resolve)
    assert not s.usable(QUICK) and s.usable(QUICK, now=NOW + 31)
    assert s.observe(circuit("half_open", NOW + 60), int(NOW * 1000), resolve)
    assert not s.usable(QUICK, now=NOW + 31)  # being probed
    assert s.observe(circuit("closed"), int(NOW * 1000), resolve)
    assert s.usable(QUICK)
    assert not s.observe(
        b'{"type":"llm.breaker.v1","alias":"fast","provider":"p1","state":"weird"}', 0, resolve
    )


def test_routing_tries_a_deployment_with_an_open_circuit_last(routing_config, resolve):
    s = RoutingStats()
    now = datetime.now(UTC).timestamp()
    s.observe(circuit("open", now + 30), int(now * 1000), resolve)
    order = [d.upstream_model for d in plan(chat("fast"), routing_config, stats=s).deployments]
    assert order[-1] == "quick"
