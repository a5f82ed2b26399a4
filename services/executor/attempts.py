"""Attempts over a plan's deployments, for any operation: retries, fallback, and the record of
what was tried.

``attempt`` calls each deployment in plan order, retrying a retryable failure ``retries``
times, until one answers; it raises the last error when none does. It fills an ``Attempts``
record as it goes (every provider call with its time and error), and that record is all the
outcome publisher reads about them: the attempt count, the failed deployments named in the
usage event, the ``fallback_triggered`` audit events, the timings.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from services.contracts.errors import GatewayError, ProviderError, ProviderTimeout
from services.contracts.events import FailedAttempt, utcnow

from .targets import Target

T = TypeVar("T")


class Final(Exception):
    """Raised by a call whose failure ends the request, retryable or not (a stream that already
    sent chunks: the caller holds part of this answer)."""

    def __init__(self, error: GatewayError):
        super().__init__(error.message)
        self.error = error


#: ``call(target, fallback_from)`` makes one provider call; ``fallback_from`` is the first planned
#: deployment when ``target`` is not it.
Call = Callable[[Target, Target | None], Awaitable[T]]


@dataclass(slots=True)
class Tried:
    """One provider call: when it started, how long it took, how it failed (None: it answered)."""

    target: Target
    index: int  # of the deployment in the plan
    at: datetime
    ms: float
    error: GatewayError | None = None


@dataclass
class Attempts:
    """What running one plan did, in order. ``started_at`` / ``t0``: when this executor took
    the plan up (wall clock / ``perf_counter``)."""

    planned: list[Target]
    calls: list[Tried] = field(default_factory=list)
    started_at: datetime = field(default_factory=utcnow)
    t0: float = field(default_factory=time.perf_counter)

    @property
    def count(self) -> int:
        """Provider calls made (every deployment together)."""
        return len(self.calls)

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
            if t.error is not None  # (always: fallbacks() are failed calls)
        ]


def retryable(err: GatewayError) -> bool:
    """Whether another attempt may succeed: provider failures that say so (timeouts, 5xx, 408,
    429, lost connections); never a provider's 4xx verdict, nor an error of the gateway's own."""
    return isinstance(err, (ProviderError, ProviderTimeout)) and err.retryable


async def attempt(record: Attempts, retries: int, call: Call[T]) -> T:
    """Each planned deployment in order until one answers (``retries`` more calls of a
    retryable failure first). A non-retryable failure moves on to the next deployment; a
    ``Final`` one ends the request."""
    last: GatewayError | None = None
    first = record.planned[0]
    for i, target in enumerate(record.planned):
        for _ in range(retries + 1):
            tried = Tried(target, i, utcnow(), 0.0)
            record.calls.append(tried)
            t0 = time.perf_counter()
            try:
                return await call(target, first if i else None)
            except Final as final:
                tried.error = final.error
                raise final.error from None
            except GatewayError as err:
                tried.error = last = err
                if not retryable(err):
                    break
            finally:
                tried.ms = (time.perf_counter() - t0) * 1000
    assert last is not None
    raise last
