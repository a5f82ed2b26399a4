"""Retries, back-off and deadlines (``services/executor/attempts.py``, ``watch.py``): the policy's
waits, ``Retry-After`` parsing, and the attempt loop over scripted calls."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from services.contracts.errors import ProviderError, ProviderTimeout, ValidationError
from services.executor.attempts import Attempts, Deadline, RetryPolicy, Until, attempt
from services.executor.targets import Target
from services.executor.watch import RETRY_AFTER_MS, retry_after_ms
from services.runtime.config import Backoff

A = Target(alias="a", provider="pa", kind="openai", base_url="http://a", upstream_model="ma", timeout_s=60)
B = Target(alias="b", provider="pb", kind="openai", base_url="http://b", upstream_model="mb", timeout_s=60)
FAST = Backoff(initial_ms=1, max_ms=4, multiplier=2)


def http_error(status: int, **details: object) -> ProviderError:
    return ProviderError(f"HTTP {status}", details={"upstream_status": status, **details})


# --- the policy's waits ----------------------------------------------------------------------


def test_backoff_is_full_jitter_under_an_exponential_cap():
    policy = RetryPolicy(backoff=Backoff(initial_ms=100, max_ms=1000, multiplier=2))
    rng = random.Random(7)
    err = http_error(503)
    for retry, cap in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (9, 1000)]:
        waits = [policy.delay_ms(retry, err, rng) for _ in range(200)]
        assert all(w is not None and 0 <= w <= cap for w in waits)
        assert max(waits) > 0.8 * cap and min(waits) < 0.2 * cap  # spread over the whole range


def test_retry_after_is_honoured_with_a_little_jitter_and_a_ceiling():
    policy = RetryPolicy(backoff=Backoff(initial_ms=100), retry_after_max_ms=5000)
    rng = random.Random(1)
    waits = [policy.delay_ms(1, http_error(429, **{RETRY_AFTER_MS: 2000.0}), rng) for _ in range(100)]
    assert all(w is not None and 2000 <= w <= 2100 for w in waits)  # at least what was asked
    assert policy.delay_ms(3, http_error(429, **{RETRY_AFTER_MS: 0}), rng) == 0
    assert (
        policy.delay_ms(1, http_error(429, **{RETRY_AFTER_MS: 5001}), rng) is None
    )  # give the deployment up


@pytest.mark.parametrize(
    ("headers", "ms"),
    [
        ({"retry-after-ms": "1500"}, 1500.0),
        ({"Retry-After-Ms": "250.5", "Retry-After": "9"}, 250.5),  # the finer one wins
        ({"Retry-After": "3"}, 3000.0),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after-ms": "-5"}, None),
        ({"retry-after-ms": "nan", "retry-after": "2"}, 2000.0),
        ({}, None),
    ],
)
def test_retry_after_headers(headers, ms):
    assert retry_after_ms(headers) == ms


def test_retry_after_as_an_http_date():
    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert retry_after_ms({"Retry-After": later}, now=now.timestamp()) == 7000.0
    earlier = format_datetime(now - timedelta(seconds=7), usegmt=True)
    assert retry_after_ms({"Retry-After": earlier}, now=now.timestamp()) == 0.0


def test_a_policy_takes_the_lower_attempt_limit():
    from services.contracts.events import ChatRequested, Deployment, ExecutionPlanned
    from services.runtime.config import Defaults

    req = ChatRequested(request_id="r", tenant_id="t", model="a", messages=[{"role": "user", "content": "x"}])
    plan = ExecutionPlanned(
        request_id="r",
        tenant_id="t",
        request=req,
        deployments=[Deployment(alias="a", provider="p", upstream_model="m")],
    )
    assert RetryPolicy.of(Defaults(), plan).max_attempts is None
    assert RetryPolicy.of(Defaults(max_attempts=4), plan).max_attempts == 4
    req.max_attempts = 2
    assert RetryPolicy.of(Defaults(max_attempts=4), plan).max_attempts == 2
    assert RetryPolicy.of(Defaults(), plan).max_attempts == 2


# --- the loop --------------------------------------------------------------------------------


class Script:
    """A call that answers from a script per deployment: an exception to raise, or a value."""

    def __init__(self, **by_alias: list[object]):
        self.by_alias = {k: list(v) for k, v in by_alias.items()}
        self.calls: list[tuple[str, str | None, Until]] = []

    async def __call__(self, target: Target, fallback_from: Target | None, until: Until) -> object:
        self.calls.append((target.alias, fallback_from.alias if fallback_from else None, until))
        step = self.by_alias[target.alias].pop(0)
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, float):  # a call that takes this long
            await asyncio.sleep(step)
            return "late"
        return step


async def run(script: Script, policy: RetryPolicy, *targets: Target, total_ms: int | None = None):
    record = Attempts(list(targets))
    deadline = Deadline(asyncio.get_running_loop().time() + total_ms / 1000 if total_ms else None, total_ms)
    try:
        return await attempt(record, policy, deadline, script, rng=random.Random(0)), record
    except Exception as exc:
        return exc, record


async def test_retryable_failures_are_retried_then_the_next_deployment_answers():
    script = Script(a=[http_error(503), http_error(500)], b=["ok"])
    out, record = await run(script, RetryPolicy(retries=1, backoff=FAST), A, B)
    assert out == "ok" and record.count == 3
    assert [(c.target.alias, c.error.code if c.error else None) for c in record.calls] == [
        ("a", "provider_error"),
        ("a", "provider_error"),
        ("b", None),
    ]
    assert [f.alias for f in record.failures()] == ["a"] and script.calls[-1][1] == "a"  # fallback from a
    assert 0 < record.waited_ms <= 1


async def test_a_verdict_on_the_request_is_not_retried_but_falls_back():
    script = Script(a=[http_error(400)], b=["ok"])
    out, record = await run(script, RetryPolicy(retries=3, backoff=FAST), A, B)
    assert out == "ok" and record.count == 2


async def test_an_alias_retries_override_the_plans():
    a3 = Target(
        alias="a",
        provider="pa",
        kind="openai",
        base_url="http://a",
        upstream_model="ma",
        retries=2,
        timeout_s=60,
    )
    script = Script(a=[http_error(503), http_error(503), "ok"])
    out, record = await run(script, RetryPolicy(retries=0, backoff=FAST), a3)
    assert out == "ok" and record.count == 3


async def test_max_attempts_caps_every_deployment_together():
    script = Script(a=[http_error(503)] * 5, b=["ok"])
    out, record = await run(script, RetryPolicy(retries=4, max_attempts=3, backoff=FAST), A, B)
    assert isinstance(out, ProviderError) and record.count == 3  # b never got its turn


async def test_a_retry_after_longer_than_the_ceiling_gives_the_deployment_up_at_once():
    script = Script(a=[http_error(429, **{RETRY_AFTER_MS: 60_000.0})], b=["ok"])
    out, record = await run(script, RetryPolicy(retries=3, retry_after_max_ms=1000, backoff=FAST), A, B)
    assert out == "ok" and record.count == 2 and record.waited_ms == 0


async def test_a_retry_after_is_waited_for():
    script = Script(a=[http_error(429, **{RETRY_AFTER_MS: 80.0}), "ok"])
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    out, record = await run(script, RetryPolicy(retries=1, backoff=FAST), A)
    assert out == "ok" and record.count == 2 and loop.time() - t0 >= 0.08 and record.waited_ms >= 80


async def test_no_wait_beyond_the_deadline_and_nothing_after_it():
    script = Script(a=[http_error(429, **{RETRY_AFTER_MS: 500.0})], b=[0.5])
    out, record = await run(script, RetryPolicy(retries=3, backoff=FAST), A, B, total_ms=200)
    assert record.count == 2 and record.waited_ms == 0  # no time to wait for a: b at once
    assert script.calls[1][2].total  # b's call ends with the request
    assert out == "late"  # (the scripted call does not honour its deadline itself)
    script = Script(a=[0.25, "never"])
    out, record = await run(script, RetryPolicy(retries=3, backoff=FAST), A, total_ms=200)
    assert out == "late" and record.count == 1


async def test_the_deadline_passed_before_any_call():
    script = Script(a=["ok"])
    record = Attempts([A])
    deadline = Deadline(asyncio.get_running_loop().time() - 0.01, 400)
    with pytest.raises(ProviderTimeout, match="total_ms=400"):
        await attempt(record, RetryPolicy(), deadline, script)
    assert record.count == 0 and not script.calls


async def test_a_call_ends_at_its_providers_timeout_or_the_requests_deadline_whichever_first():
    quick = Target(
        alias="q", provider="pq", kind="openai", base_url="http://q", upstream_model="m", timeout_s=0.1
    )
    loop = asyncio.get_running_loop()
    long = Deadline(loop.time() + 10, 10_000)
    own = long.until(quick)
    assert not own.total and own.at is not None and own.at - loop.time() <= 0.1
    assert "timeout_s=0.1" in own.timed_out(quick, 10_000).message
    short = Deadline(loop.time() + 0.05, 50)
    assert short.until(quick).total and "total_ms=50" in short.until(quick).timed_out(quick, 50).message
    assert (
        Deadline(None)
        .until(Target(alias="x", provider="p", kind="openai", base_url="u", upstream_model="m"))
        .at
        is None
    )


async def test_a_gateway_error_of_its_own_is_final_for_that_deployment():
    script = Script(a=[ValidationError("bad")], b=[ValidationError("bad")])
    out, record = await run(script, RetryPolicy(retries=2, backoff=FAST), A, B)
    assert isinstance(out, ValidationError) and record.count == 2
