"""Rate limits over a sliding minute (README "Rate limits and budgets"); pure, no I/O.

A request admitted at time *t* counts in each of its scopes' windows while now < *t* + 60 s:
one request, and its tokens (the reservation until its usage settles it, then the reported
total). A request is admitted when, in every scope with a limit, the window's requests + 1
stay within ``requests_per_min`` and its tokens + the request's reservation within
``tokens_per_min``; a refused request counts nowhere.

``check`` only reads windows; the caller adds the admitted request to them (``Window.add``)
in the same synchronous step, so no other admission can come between the two.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from services.contracts.errors import RateLimited
from services.contracts.events import RateLimitInfo
from services.runtime.config import Rate

#: The window's length in seconds.
WINDOW_S = 60.0


class Counted(Protocol):
    """What a window holds: an admitted request's time and tokens."""

    at: float
    tokens: int


class Window:
    """One scope's admitted requests of the last minute, oldest first, and their token sum.
    Entries leave through ``remove`` (the ledger evicts them when their minute is over)."""

    __slots__ = ("entries", "tokens")

    def __init__(self) -> None:
        self.entries: deque[Counted] = deque()
        self.tokens = 0

    @property
    def requests(self) -> int:
        return len(self.entries)

    def add(self, entry: Counted) -> None:
        self.entries.append(entry)
        self.tokens += entry.tokens

    def remove(self, entry: Counted) -> None:
        if self.entries and self.entries[0] is entry:
            self.entries.popleft()
        else:
            self.entries.remove(entry)
        self.tokens -= entry.tokens

    def reset_s(self, now: float) -> float:
        """Seconds until the oldest request leaves the window (0 when it is empty)."""
        return max(self.entries[0].at + WINDOW_S - now, 0.0) if self.entries else 0.0

    def wait_for_request(self, limit: int, now: float) -> float:
        """Seconds until one more request fits under ``limit`` (``inf``: never)."""
        if limit <= 0:
            return math.inf
        excess = self.requests - limit  # this many must leave, plus one
        if excess < 0:
            return 0.0
        return max(self.entries[excess].at + WINDOW_S - now, 0.0)

    def wait_for_tokens(self, need: int, limit: int, now: float) -> float:
        """Seconds until ``need`` more tokens fit under ``limit`` (``inf``: never, ``need`` is
        over the limit by itself)."""
        if need > limit:
            return math.inf
        over = self.tokens + need - limit
        if over <= 0:
            return 0.0
        for e in self.entries:
            over -= e.tokens
            if over <= 0:
                return max(e.at + WINDOW_S - now, 0.0)
        return 0.0  # (the sum is kept exact: unreachable)


@dataclass(frozen=True, slots=True)
class Scope:
    """One scope a request counts in that has a limit: ``name`` as messages say it
    (``tenant limited``, ``user u1``, ``key 'ci key'``, ``client_id svc-a``)."""

    name: str
    rate: Rate
    window: Window


def check(scopes: list[Scope], tokens: int, now: float) -> RateLimitInfo:
    """The binding numbers once the request is admitted, or ``RateLimited`` naming the scope
    that refuses it (the one it waits longest for), with ``details`` ``retry_after_s``,
    ``scope`` and ``ratelimit`` (the numbers without this request)."""
    worst: tuple[float, Scope, str] | None = None
    for s in scopes:
        rpm, tpm = s.rate.requests_per_min, s.rate.tokens_per_min
        if rpm is not None and s.window.requests + 1 > rpm:
            wait = s.window.wait_for_request(rpm, now)
            if worst is None or wait > worst[0]:
                worst = (wait, s, f"{rpm} requests per minute")
        if tpm is not None and s.window.tokens + tokens > tpm:
            wait = s.window.wait_for_tokens(tokens, tpm, now)
            what = (
                f"{tpm} tokens per minute (this request reserves {tokens})"
                if tokens <= tpm
                else f"{tpm} tokens per minute: this request alone reserves {tokens}"
            )
            if worst is None or wait > worst[0]:
                worst = (wait, s, what)
    if worst is not None:
        wait, s, what = worst
        retry = round(wait, 3) if math.isfinite(wait) else None
        hint = f"; retry in {wait:.1f} s" if retry is not None else "; it can never fit: lower max_tokens"
        raise RateLimited(
            f"rate limit of {what} reached for {s.name}{hint}",
            details={
                "retry_after_s": retry,
                "scope": s.name,
                "ratelimit": info(scopes, 0, 0, now).model_dump(exclude_none=True),
            },
        )
    return info(scopes, 1, tokens, now)


def info(scopes: list[Scope], requests: int, tokens: int, now: float) -> RateLimitInfo:
    """Per dimension, the scope with the least remaining once ``requests`` and ``tokens`` more
    are counted (remaining never below 0)."""
    req: tuple[int, int, Window] | None = None  # (remaining, limit, window)
    tok: tuple[int, int, Window] | None = None
    for s in scopes:
        rpm, tpm = s.rate.requests_per_min, s.rate.tokens_per_min
        if rpm is not None:
            left = max(rpm - len(s.window.entries) - requests, 0)
            if req is None or left < req[0]:
                req = (left, rpm, s.window)
        if tpm is not None:
            left = max(tpm - s.window.tokens - tokens, 0)
            if tok is None or left < tok[0]:
                tok = (left, tpm, s.window)

    def reset_s(w: Window) -> float:
        return round(w.reset_s(now) if w.entries else (WINDOW_S if requests else 0.0), 3)

    return RateLimitInfo.model_construct(
        limit_requests=req[1] if req else None,
        remaining_requests=req[0] if req else None,
        reset_requests_s=reset_s(req[2]) if req else None,
        limit_tokens=tok[1] if tok else None,
        remaining_tokens=tok[0] if tok else None,
        reset_tokens_s=reset_s(tok[2]) if tok else None,
    )
