"""The embeddings micro-batcher in memory: a fake provider call that records the inputs of each
call, and timers fired by hand (so "within the window" is decided by the test, not by a clock)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, replace

import pytest

from services.contracts.errors import ProviderError, ProviderTimeout
from services.contracts.events import EmbedRequested, Usage
from services.executor.batcher import BatchKey, EmbedBatcher, apportion, size_estimate
from services.executor.providers._embeddings import Embeddings
from services.executor.targets import Target

TARGET = Target(
    alias="emb",
    provider="p1",
    kind="openai",
    base_url="http://p1.test/v1",
    upstream_model="e-1",
    max_batch_inputs=8,
)


class Timers:
    """``call_later`` whose callbacks run when the test says the window is over."""

    def __init__(self) -> None:
        self.pending: list[Handle] = []

    def __call__(self, delay: float, callback) -> Handle:
        handle = Handle(delay, callback)
        self.pending.append(handle)
        return handle

    def fire(self) -> None:
        due, self.pending = self.pending, []
        for h in due:
            if not h.cancelled:
                h.callback()


@dataclass
class Handle:
    delay: float
    callback: object
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class Provider:
    """Answers each input with the "vector" ``vec:<text>`` and 3 tokens per input; refuses (400)
    any call carrying ``BAD``, or fails with ``fail`` when set."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.fail: Exception | None = None

    async def __call__(self, req: EmbedRequested, target: Target) -> Embeddings:
        self.calls.append(list(req.input))
        if self.fail is not None:
            raise self.fail
        if "BAD" in req.input:
            raise ProviderError("p1 returned HTTP 400: input refused", details={"upstream_status": 400})
        n = len(req.input)
        return Embeddings(
            [f"vec:{t}" for t in req.input], Usage(prompt_tokens=3 * n, total_tokens=3 * n), "e-1-v2"
        )


def req(*texts: str, tenant: str = "t1", rid: str | None = None, **fields) -> EmbedRequested:
    return EmbedRequested(
        request_id=rid or f"r-{'-'.join(texts)[:40]}",
        tenant_id=tenant,
        model="emb",
        input=list(texts),
        **fields,
    )


@pytest.fixture
def timers() -> Timers:
    return Timers()


@pytest.fixture
def provider() -> Provider:
    return Provider()


@pytest.fixture
def batcher(provider: Provider, timers: Timers) -> EmbedBatcher:
    return EmbedBatcher(provider, 5, later=timers)


async def answers(jobs):
    return await asyncio.gather(*(j.future for j in jobs), return_exceptions=True)


# --- merging -----------------------------------------------------------------------------------


async def test_requests_within_the_window_share_one_call(batcher, provider, timers):
    jobs = [
        batcher.submit(req("a"), TARGET),
        batcher.submit(req("b", "c"), TARGET),
        batcher.submit(req("d"), TARGET),
    ]
    assert provider.calls == [], "nothing is sent before the window is over"
    timers.fire()
    shares = await answers(jobs)

    assert provider.calls == [["a", "b", "c", "d"]]
    assert [s.vectors for s in shares] == [["vec:a"], ["vec:b", "vec:c"], ["vec:d"]]
    assert [s.usage.units for s in shares] == [{"inputs": 1}, {"inputs": 2}, {"inputs": 1}]
    assert sum(s.usage.prompt_tokens for s in shares) == 12
    assert sum(s.usage.total_tokens for s in shares) == 12
    assert all(s.model == "e-1-v2" and s.calls == 1 for s in shares)


async def test_never_across_tenants(batcher, provider, timers):
    jobs = [
        batcher.submit(req("a", tenant="t1"), TARGET),
        batcher.submit(req("b", tenant="t2"), TARGET),
        batcher.submit(req("c", tenant="t1"), TARGET),
    ]
    timers.fire()
    await answers(jobs)
    assert sorted(provider.calls) == [["a", "c"], ["b"]]


@pytest.mark.parametrize(
    "other",
    [
        {"dimensions": 64},
        {"encoding_format": "base64"},
        {"extra": {"user": "u2"}},
    ],
)
async def test_different_parameters_are_separate_calls(batcher, provider, timers, other):
    jobs = [batcher.submit(req("a"), TARGET), batcher.submit(req("b", **other), TARGET)]
    timers.fire()
    await answers(jobs)
    assert sorted(provider.calls) == [["a"], ["b"]]


async def test_different_deployments_are_separate_calls(batcher, provider, timers):
    jobs = [batcher.submit(req("a"), TARGET), batcher.submit(req("b"), replace(TARGET, upstream_model="e-2"))]
    timers.fire()
    await answers(jobs)
    assert sorted(provider.calls) == [["a"], ["b"]]


def test_extra_key_order_does_not_split_a_batch():
    a = BatchKey.of(req("a", extra={"x": 1, "y": 2}), TARGET)
    b = BatchKey.of(req("b", extra={"y": 2, "x": 1}), TARGET)
    assert a == b and hash(a) == hash(b)


# --- limits and the window ---------------------------------------------------------------------


async def test_a_full_batch_goes_at_once_the_rest_waits_for_the_window(batcher, provider, timers):
    target = replace(TARGET, max_batch_inputs=3)
    first = batcher.submit(req("a", "b"), target)
    second = batcher.submit(req("c", "d"), target)
    await asyncio.wait_for(first.future, 1)  # sent without the window ending
    assert provider.calls == [["a", "b", "c"]]
    assert not second.future.done(), "its last input waits in the next batch"
    timers.fire()
    share = await second.future
    assert provider.calls == [["a", "b", "c"], ["d"]]
    assert share.vectors == ["vec:c", "vec:d"] and share.calls == 2
    assert (
        share.usage.prompt_tokens == 3 + 3
    )  # its third of the first call (one of three equal inputs), all of the second
    assert (await first.future).usage.prompt_tokens == 6


async def test_a_request_over_the_limit_is_split_across_calls(batcher, provider, timers):
    target = replace(TARGET, max_batch_inputs=3)
    texts = [f"t{i}" for i in range(7)]
    job = batcher.submit(req(*texts), target)
    timers.fire()
    share = await job.future
    assert provider.calls == [texts[0:3], texts[3:6], texts[6:7]]
    assert share.vectors == [f"vec:{t}" for t in texts]
    assert share.usage.prompt_tokens == 21 and share.usage.units == {"inputs": 7}


async def test_window_zero_sends_each_request_at_once(provider):
    b = EmbedBatcher(provider, 0)
    jobs = [b.submit(req("a"), TARGET), b.submit(req("b"), TARGET)]
    await answers(jobs)
    assert provider.calls == [["a"], ["b"]]
    assert b.open_batches == 0


async def test_window_zero_still_splits_at_the_limit(provider):
    b = EmbedBatcher(provider, 0)
    share = await b.embed(req("a", "b", "c"), replace(TARGET, max_batch_inputs=2))
    assert provider.calls == [["a", "b"], ["c"]] and share.vectors == ["vec:a", "vec:b", "vec:c"]


async def test_the_real_window_flushes_by_itself(provider):
    b = EmbedBatcher(provider, 1)
    shares = await asyncio.wait_for(asyncio.gather(b.embed(req("a"), TARGET), b.embed(req("b"), TARGET)), 2)
    assert provider.calls == [["a", "b"]] and [s.vectors for s in shares] == [["vec:a"], ["vec:b"]]


# --- failures ----------------------------------------------------------------------------------


async def test_a_refused_batch_is_retried_one_request_at_a_time(batcher, provider, timers):
    jobs = [
        batcher.submit(req("a"), TARGET),
        batcher.submit(req("x", "BAD"), TARGET),
        batcher.submit(req("c"), TARGET),
    ]
    timers.fire()
    out = await answers(jobs)

    assert provider.calls[0] == ["a", "x", "BAD", "c"]
    assert sorted(provider.calls[1:]) == [["a"], ["c"], ["x", "BAD"]]
    assert out[0].vectors == ["vec:a"] and out[2].vectors == ["vec:c"]
    assert isinstance(out[1], ProviderError) and out[1].details["upstream_status"] == 400
    assert out[0].usage.prompt_tokens == out[2].usage.prompt_tokens == 3, "billed for their own call only"


async def test_a_lone_refused_request_is_not_sent_twice(batcher, provider, timers):
    job = batcher.submit(req("BAD"), TARGET)
    timers.fire()
    [err] = await answers([job])
    assert isinstance(err, ProviderError) and provider.calls == [["BAD"]]


@pytest.mark.parametrize(
    "failure",
    [
        ProviderError("p1 returned HTTP 503: busy", details={"upstream_status": 503}),
        ProviderError("p1 returned HTTP 429: slow down", details={"upstream_status": 429}),
        ProviderTimeout("p1: upstream timed out"),
    ],
)
async def test_a_failure_not_about_the_request_fails_every_request_once(batcher, provider, timers, failure):
    provider.fail = failure
    jobs = [batcher.submit(req("a"), TARGET), batcher.submit(req("b"), TARGET)]
    timers.fire()
    out = await answers(jobs)
    assert provider.calls == [["a", "b"]], "no per-request retries: the caller's retry policy decides"
    assert all(type(e) is type(failure) and e.message == failure.message for e in out)
    assert out[0] is not out[1], "each request raises its own exception"


async def test_a_split_request_fails_when_one_of_its_calls_fails(batcher, provider, timers):
    target = replace(TARGET, max_batch_inputs=2)
    job = batcher.submit(req("a", "b", "BAD"), target)
    timers.fire()
    [err] = await answers([job])
    assert isinstance(err, ProviderError)
    assert provider.calls == [["a", "b"], ["BAD"]]


# --- cancellation ------------------------------------------------------------------------------


async def test_a_cancelled_request_leaves_its_open_batch(batcher, provider, timers):
    leaving = asyncio.create_task(batcher.embed(req("gone"), TARGET))
    staying = batcher.submit(req("kept"), TARGET)
    await asyncio.sleep(0)  # one loop turn: the task submits its request
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    timers.fire()
    share = await staying.future
    assert provider.calls == [["kept"]] and share.vectors == ["vec:kept"]


async def test_a_batch_everyone_left_is_never_sent(batcher, provider, timers):
    task = asyncio.create_task(batcher.embed(req("gone"), TARGET))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert batcher.open_batches == 0 and all(h.cancelled for h in timers.pending)
    timers.fire()
    assert provider.calls == []


# --- usage shares ------------------------------------------------------------------------------


def test_apportion_adds_up_exactly_and_follows_the_weights():
    rng = random.Random(7)
    for _ in range(500):
        weights = [rng.randint(0, 50) for _ in range(rng.randint(1, 12))]
        total = rng.randint(0, 10_000)
        parts = apportion(total, weights)
        assert sum(parts) == total and all(p >= 0 for p in parts)
        whole = sum(weights)
        if whole:
            for p, w in zip(parts, weights, strict=True):
                assert abs(p - total * w / whole) < 1  # never off by a whole token or more
    assert apportion(10, [1, 1, 1]) == [4, 3, 3]
    assert apportion(7, [0, 0]) == [4, 3]
    assert apportion(5, []) == []


async def test_shares_follow_input_sizes(batcher, timers):
    """The provider's tokens are split by each request's size estimate, not evenly."""

    async def provider(r: EmbedRequested, target: Target) -> Embeddings:
        return Embeddings(["v"] * len(r.input), Usage(prompt_tokens=101, total_tokens=101), "m")

    b = EmbedBatcher(provider, 5, later=timers)
    long_text, short_text = "word " * 200, "hi"
    jobs = [b.submit(req(long_text, rid="long"), TARGET), b.submit(req(short_text, rid="short"), TARGET)]
    timers.fire()
    long_share, short_share = await answers(jobs)
    assert long_share.usage.prompt_tokens + short_share.usage.prompt_tokens == 101
    expected = apportion(101, [size_estimate(long_text), size_estimate(short_text)])
    assert [long_share.usage.prompt_tokens, short_share.usage.prompt_tokens] == expected
    assert long_share.usage.prompt_tokens > 95


async def test_the_tail_of_a_split_request_and_another_request_share_a_call(batcher, provider, timers):
    """The last inputs of a split request wait in the open batch, and the next request joins them."""
    target = replace(TARGET, max_batch_inputs=2)
    first = batcher.submit(req("a", "b", "c"), target)
    second = batcher.submit(req("d"), target)
    timers.fire()
    one, two = await answers([first, second])
    assert provider.calls == [["a", "b"], ["c", "d"]]
    assert one.vectors == ["vec:a", "vec:b", "vec:c"] and two.vectors == ["vec:d"]
