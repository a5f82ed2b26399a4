"""What the usage dashboard shows, from usage records (pure): totals, a timeline, and the same
numbers by tenant, model, user and API key, with spend and tokens over time for each.

Rates are of all requests in the window (``errors / requests``, ``rejected / requests``).
Latency percentiles are nearest-rank (the smallest recorded value with at least *p* % of the
values at or below it: always a value some request took) over the ``total_ms`` of successful
requests; ``ttft`` the same over the ``ttft_ms`` of successful streamed ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .usage_view import Record

DIMENSIONS = ("tenant", "model", "user", "key")
#: Bucket widths, the narrowest giving at most ``MAX_BUCKETS`` buckets is used.
STEPS_S = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400)
MAX_BUCKETS = 120
PERCENTILES = (50, 90, 95, 99)
OTHER = "(other)"


def percentile(ordered: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not ordered:
        return None
    return ordered[max(math.ceil(p / 100 * len(ordered)), 1) - 1]


def step_for(since: datetime, until: datetime) -> int:
    span = max((until - since).total_seconds(), 1.0)
    return next((s for s in STEPS_S if span / s <= MAX_BUCKETS), STEPS_S[-1])


@dataclass
class Totals:
    requests: int = 0
    ok: int = 0
    errors: int = 0
    rejected: int = 0
    cancelled: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)

    def add(self, r: Record) -> None:
        self.requests += 1
        if r.outcome == "ok":
            self.ok += 1
            if r.total_ms is not None:
                self.latencies.append(r.total_ms)
            if r.ttft_ms is not None:
                self.ttfts.append(r.ttft_ms)
        elif r.outcome == "rejected":
            self.rejected += 1
        elif r.outcome == "cancelled":
            self.cancelled += 1
        else:
            self.errors += 1
        self.prompt_tokens += r.prompt_tokens
        self.completion_tokens += r.completion_tokens
        self.total_tokens += r.total_tokens
        self.cost_usd += r.cost_usd

    def as_json(self) -> dict[str, Any]:
        lat, ttft = sorted(self.latencies), sorted(self.ttfts)
        n = self.requests
        return {
            "requests": n,
            "ok": self.ok,
            "errors": self.errors,
            "rejected": self.rejected,
            "cancelled": self.cancelled,
            "error_rate": self.errors / n if n else 0.0,
            "rejection_rate": self.rejected / n if n else 0.0,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": round(self.cost_usd, 9),
            **{f"p{p}_ms": percentile(lat, p) for p in PERCENTILES},
            "ttft_p50_ms": percentile(ttft, 50),
            "ttft_p95_ms": percentile(ttft, 95),
        }


def _group(r: Record, dim: str) -> str:
    value: str = getattr(r, dim)
    return value


def summarize(
    records: Iterable[Record],
    since: datetime,
    until: datetime,
    *,
    top_series: int = 8,
    top_groups: int = 50,
) -> dict[str, Any]:
    """The dashboard's numbers for ``records`` (already those of the window and filters).

    ``buckets``: the start of each bucket (UTC, ``bucket_s`` wide, aligned to multiples of it);
    ``timeline``: per bucket, counts, rates, spend, tokens and latency percentiles; ``by``: for
    each dimension its ``top_groups`` largest groups by spend (``more``: how many were left
    out) and ``series``: spend and tokens per bucket of its ``top_series`` largest groups by
    that measure, the rest summed as ``(other)``."""
    step = step_for(since, until)
    first = math.floor(since.timestamp() / step) * step
    n_buckets = max(math.ceil((until.timestamp() - first) / step), 1)
    total = Totals()
    timeline = [Totals() for _ in range(n_buckets)]
    groups: dict[str, dict[str, Totals]] = {d: {} for d in DIMENSIONS}
    spend: dict[str, dict[str, list[float]]] = {d: {} for d in DIMENSIONS}
    tokens: dict[str, dict[str, list[float]]] = {d: {} for d in DIMENSIONS}
    for r in records:
        i = min(max(int((r.at - first) // step), 0), n_buckets - 1)
        total.add(r)
        timeline[i].add(r)
        for d in DIMENSIONS:
            g = _group(r, d)
            groups[d].setdefault(g, Totals()).add(r)
            spend[d].setdefault(g, [0.0] * n_buckets)[i] += r.cost_usd
            tokens[d].setdefault(g, [0.0] * n_buckets)[i] += r.total_tokens
    rows = [t.as_json() for t in timeline]
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "bucket_s": step,
        "buckets": [datetime.fromtimestamp(first + i * step, UTC).isoformat() for i in range(n_buckets)],
        "totals": total.as_json(),
        "timeline": {k: [row[k] for row in rows] for k in _TIMELINE},
        "by": {
            d: {
                **_top_groups(groups[d], top_groups),
                "series": {
                    "cost_usd": _top_series(spend[d], top_series, 9),
                    "total_tokens": _top_series(tokens[d], top_series, 0),
                },
            }
            for d in DIMENSIONS
        },
    }


_TIMELINE = (
    "requests",
    "errors",
    "rejected",
    "cancelled",
    "error_rate",
    "rejection_rate",
    "cost_usd",
    "total_tokens",
    "p50_ms",
    "p95_ms",
    "p99_ms",
)


def _top_groups(groups: dict[str, Totals], n: int) -> dict[str, Any]:
    ranked = sorted(groups.items(), key=lambda kv: (-kv[1].cost_usd, -kv[1].requests, kv[0]))
    return {"groups": [{"key": k, **t.as_json()} for k, t in ranked[:n]], "more": max(len(ranked) - n, 0)}


def _top_series(series: dict[str, list[float]], n: int, digits: int) -> list[dict[str, Any]]:
    ranked = sorted(series.items(), key=lambda kv: (-sum(kv[1]), kv[0]))
    out = [{"key": k, "values": [_round(v, digits) for v in vs]} for k, vs in ranked[:n]]
    if len(ranked) > n:
        rest = [sum(col) for col in zip(*(vs for _, vs in ranked[n:]), strict=True)]
        out.append({"key": OTHER, "values": [_round(v, digits) for v in rest]})
    return out


def _round(v: float, digits: int) -> float | int:
    return round(v, digits) if digits else int(v)
