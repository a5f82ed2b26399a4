"""A usage record's ``failed_attempts``: the deployments that failed before the one that answered
count as failures, so the router's feed needs ``llm.usage`` alone."""

from __future__ import annotations

import pytest

from services.contracts.events import FailedAttempt, UsageRecorded
from services.router.stats import RoutingStats, deployment_key
from services.runtime.codec import encode

NOW = 2_000_000.0
QUICK, NEW = ("fast", "p1", "quick"), ("fast", "p2", "new")


@pytest.fixture
def resolve(routing_config):
    return lambda alias, provider, model: deployment_key(routing_config.models, alias, provider, model)


def answered_after(*failed: tuple[str, str, str, str]) -> bytes:
    return encode(
        UsageRecorded(
            request_id="u",
            tenant_id="t",
            status="ok",
            alias="fast",
            provider="p1",
            model="quick",
            streamed=True,
            ttft_ms=50.0,
            fallback_used=bool(failed),
            failed_attempts=[
                FailedAttempt(alias=a, provider=p, model=m, error_code=c) for a, p, m, c in failed
            ]
            or None,
        )
    )


def test_failed_attempts_make_their_deployment_unusable_and_the_answer_counts_as_success(resolve):
    s = RoutingStats()
    for i in range(3):
        assert s.observe(
            answered_after(("fast", "p2", "new", "provider_error")), int((NOW + i) * 1000), resolve
        )
    assert not s.usable(NEW, now=NOW + 3)
    assert s.usable(QUICK, now=NOW + 3)


def test_only_provider_failures_count_and_unknown_deployments_are_ignored(resolve):
    s = RoutingStats()
    for i in range(3):
        s.observe(
            answered_after(("fast", "p2", "new", "cancelled"), ("ghost", "p9", "x", "provider_error")),
            int((NOW + i) * 1000),
            resolve,
        )
    assert s.usable(NEW, now=NOW + 3)
