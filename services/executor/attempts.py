"""Attempts over a plan's deployments, for any operation: retries with back-off, deadlines,
fallback, and the record of what was tried.

``attempt`` calls each deployment in plan order until one answers, and raises the last error
when none does:

* a retryable failure (``retryable``: timeouts, 5xx, 408, 429, lost connections) is retried on
  the same deployment up to its alias's ``retries`` (else the plan's, ``defaults.retries``), after
  a wait (``RetryPolicy.delay_ms``): the provider's ``Retry-After`` / ``retry-after-ms`` when it
  sent one (a wait longer than ``retry_after_max_ms``, or than the time left, gives the deployment
  up instead), else exponential back-off with full jitter;
* any other failure, and a deployment out of retries, moves on to the next deployment;
* every call is bounded by the request's total deadline (``total_ms``, counted from the request's
  ``occurred_at``: time queued counts) and by its provider's ``timeout_s``: a call past its
  provider's timeout is a retryable ``provider_timeout``, so it is retried or falls back while the
  request has time left; once the total deadline has passed nothing more is tried;
* ``max_attempts`` (the gateway's ``defaults.max_attempts`` and the request's, the lower) caps the
  provider calls of the request, every deployment together;
* a deployment whose circuit is open (``breaker.py``) is skipped without a call, and each call's
  outcome is told to its circuit.

It fills an ``Attempts`` record as it goes (every provider call with its time and error), and that
record is all the outcome publisher reads about them: the attempt count, the failed deployments
named in the usage event, the ``fallback_triggered`` audit events, the timings.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, TypeVar

from services.contracts.errors import GatewayError, ProviderError, ProviderTimeout
from services.contracts.events import ExecutionPlanned, FailedAttempt, utcnow
from services.runtime.config import Backoff, Defaults

from .targets import Target
from .watch import RETRY_AFTER_MS

if TYPE_CHECKING:
    from .breaker import Ticket

T = TypeVar("T")


class Final(Exception):
    """Raised by a call whose failure ends the request, retryable or not (a stream that already
    sent chunks: the caller holds part of this answer)."""

    def __init__(self, error: GatewayError):
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True, slots=True)
class Until:
    """When one call must have ended (event-loop time; None: never), and whether that is the
    request's total deadline (else the provider's ``timeout_s``)."""

    at: float | None
    total: bool

    def timed_out(self, target: Target, total_ms: int | None) -> ProviderTimeout:
        if self.total:
            return ProviderTimeout(f"request exceeded total_ms={total_ms}")
        return ProviderTimeout(
            f"{target.provider}: no answer within the provider's timeout_s={target.timeout_s:g}",
            details={"upstream_status": None},
        )


@dataclass(frozen=True, slots=True)
class Deadline:
    """The request's total deadline (event-loop time; None: no limit) and the ``total_ms`` it
    comes from."""

    at: float | None
    total_ms: int | None = None

    @classmethod
    def of(cls, plan: ExecutionPlanned, queued_ms: float) -> Deadline:
        if not plan.total_ms:
            return cls(None)
        return cls(asyncio.get_running_loop().time() + (plan.total_ms - queued_ms) / 1000, plan.total_ms)

    def left(self) -> float:
        """Seconds left (``inf`` without a deadline)."""
        return math.inf if self.at is None else self.at - asyncio.get_running_loop().time()

    def expired(self) -> ProviderTimeout:
        return ProviderTimeout(f"request exceeded total_ms={self.total_ms}")

    def until(self, target: Target) -> Until:
        """A call's deadline: the request's, or ``target.timeout_s`` from now when that comes first."""
        if target.timeout_s is None:
            return Until(self.at, True)
        own = asyncio.get_running_loop().time() + target.timeout_s
        return Until(own, False) if self.at is None or own < self.at else Until(self.at, True)


class Circuits(Protocol):
    """The circuit breakers (``breaker.Breakers``): leave to call a deployment, and each call's end."""

    async def admit(self, target: Target) -> Ticket | ProviderError: ...

    def done(self, ticket: Ticket, error: GatewayError | None, failed: bool) -> None: ...


#: ``call(target, fallback_from, until)`` makes one provider call, ended by ``until``;
#: ``fallback_from`` is the first planned deployment when ``target`` is not it.
Call = Callable[[Target, Target | None, Until], Awaitable[T]]


@dataclass(frozen=True)
class RetryPolicy:
    """How a request's failed calls are retried (see the module docstring)."""

    retries: int = 0
    max_attempts: int | None = None
    backoff: Backoff = field(default_factory=Backoff)
    retry_after_max_ms: float = 30_000.0

    @classmethod
    def of(cls, defaults: Defaults, plan: ExecutionPlanned) -> RetryPolicy:
        caps = [n for n in (defaults.max_attempts, plan.request.max_attempts) if n is not None]
        return cls(plan.retries, min(caps) if caps else None, defaults.backoff, defaults.retry_after_max_ms)

    def delay_ms(self, retry: int, err: GatewayError, rng: random.Random | None = None) -> float | None:
        """The wait before retry ``retry`` (1: the first) of a deployment that failed with ``err``:
        the provider's ``Retry-After`` plus up to 10% (at most ``backoff.initial_ms``) so callers
        told the same time do not all return at once; else a random time up to
        ``min(max_ms, initial_ms * multiplier ** (retry - 1))``. None: the provider asks for longer
        than ``retry_after_max_ms`` (the deployment is given up)."""
        r = rng or _rng
        asked = err.details.get(RETRY_AFTER_MS)
        if isinstance(asked, (int, float)):
            if asked > self.retry_after_max_ms:
                return None
            return float(asked) + r.uniform(0, min(asked * 0.1, self.backoff.initial_ms))
        b = self.backoff
        return r.uniform(0, min(b.max_ms, b.initial_ms * b.multiplier ** (retry - 1)))


_rng = random.Random()


@dataclass(slots=True)
class Tried:
    """One provider call: when it started, how long it took, how it failed (None: it answered)."""

    target: Target
    index: int  # of the deployment in the plan
    at: datetime
    ms: float
    error: GatewayError | None = None
    skipped: bool = False  # not called: its circuit is open (``error`` says so)


@dataclass
class Attempts:
    """What running one plan did, in order. ``started_at`` / ``t0``: when this executor took
    the plan up (wall clock / ``perf_counter``)."""

    planned: list[Target]
    calls: list[Tried] = field(default_factory=list)
    started_at: datetime = field(default_factory=utcnow)
    t0: float = field(default_factory=time.perf_counter)
    queued_ms: float = 0.0  # from the request's occurred_at to started_at
    waited_ms: float = 0.0  # spent waiting between retries

    @property
    def count(self) -> int:
        """Provider calls made (every deployment together; skipped deployments are not calls)."""
        return sum(not t.skipped for t in self.calls)

    @property
    def last(self) -> Target:
        """The deployment tried last (the first planned when none was)."""
        return self.calls[-1].target if self.calls else self.planned[0]

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.t0) * 1000

    def fallbacks(self) -> list[tuple[Tried, Target]]:
        """Each deployment given up for the next one: its last failed call, and the next tried."""
        out: list[tuple[Tried, Target]] = []
        for prev, nxt in zip(self.calls, self.calls[1:], strict=False):
            if nxt.index != prev.index and prev.error is not None:
                out.append((prev, nxt.target))
        return out

    def failures(self) -> list[FailedAttempt]:
        """The deployments that failed before another was tried (the usage event names them)."""
        return [
            FailedAttempt(
                alias=t.target.alias,
                provider=t.target.provider,
                model=t.target.upstream_model,
                error_code=t.error.code,
            )
            for t, _ in self.fallbacks()
            if t.error is not None and not t.skipped  # (fallbacks() are failed or skipped calls)
        ]


def queued_ms(plan: ExecutionPlanned, record: Attempts) -> float:
    """How long the request waited before this executor took it up: from its ``occurred_at`` (the
    caller's clock; hosts' clocks are assumed to agree) to ``record.started_at``, never negative."""
    return max((record.started_at - plan.request.occurred_at).total_seconds() * 1000, 0.0)


def retryable(err: GatewayError) -> bool:
    """Whether another attempt may succeed: provider failures that say so (timeouts, 5xx, 408,
    429, lost connections); never a provider's 4xx verdict, nor an error of the gateway's own."""
    return isinstance(err, (ProviderError, ProviderTimeout)) and err.retryable


async def attempt(
    record: Attempts,
    policy: RetryPolicy,
    deadline: Deadline,
    call: Call[T],
    circuits: Circuits | None = None,
    rng: random.Random | None = None,
) -> T:
    """Each planned deployment in order until one answers (see the module docstring). A ``Final``
    failure ends the request at once."""
    last: GatewayError | None = None
    first = record.planned[0]
    for i, target in enumerate(record.planned):
        retries = policy.retries if target.retries is None else target.retries
        for k in range(retries + 1):
            if policy.max_attempts is not None and record.count >= policy.max_attempts:
                assert last is not None
                raise last
            if k:
                assert last is not None
                wait = policy.delay_ms(k, last, rng)
                if wait is None or wait / 1000 >= deadline.left():
                    break  # not worth waiting for, or no time for: the next deployment
                record.waited_ms += wait
                await asyncio.sleep(wait / 1000)
            if deadline.left() <= 0:
                raise deadline.expired()
            ticket = await circuits.admit(target) if circuits is not None else None
            if isinstance(ticket, ProviderError):  # its circuit is open: the next deployment
                record.calls.append(Tried(target, i, utcnow(), 0.0, ticket, skipped=True))
                last = ticket
                break
            tried = Tried(target, i, utcnow(), 0.0)
            record.calls.append(tried)
            t0 = time.perf_counter()
            try:
                out = await call(target, first if i else None, deadline.until(target))
            except Final as final:
                tried.error = final.error
                _told(circuits, ticket, final.error)
                raise final.error from None
            except GatewayError as err:
                tried.error = last = err
                _told(circuits, ticket, err)
                if not retryable(err):
                    break
                continue
            finally:
                tried.ms = (time.perf_counter() - t0) * 1000
            _told(circuits, ticket, None)
            return out
    assert last is not None
    raise last


def _told(circuits: Circuits | None, ticket: Ticket | None, error: GatewayError | None) -> None:
    """A call's end, for its circuit: a provider failure counts against the deployment, a verdict
    on the request (a 4xx, a refused answer) or an error of the gateway's own does not."""
    if circuits is not None and ticket is not None:
        circuits.done(ticket, error, error is not None and retryable(error))
