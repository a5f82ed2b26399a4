"""Prometheus metrics: every name the gateway exports, defined here, in one registry.

The names, types and labels are an interface (dashboards and alerts are built on them): they
are versioned by ``METRICS_VERSION``, exported as ``llmgw_build_info{metrics_version}``. Within
one version a metric is never renamed, retyped or given different labels; a change of that kind
is a new version (README "Metrics"). Label values are bounded by the configuration (operation,
alias, provider, model, error code, topic, partition): tenant, user, key and request ids never
become label values (they are in the traces).

Recording is cheap on the hot path: each recording function finds its pre-bound label children
in a dict keyed by the label values (no ``labels(...)`` call, no dict built per request) and
does nothing at all when metrics are off (``LLMGW_METRICS=0``). What is a state rather than an
event (consumer lag and in-flight handlers per partition, circuit states) is read when scraped,
from the objects that hold it (``watch_consumer``, ``watch_circuits``), so it costs nothing
between scrapes.

``metrics_http.serve`` (called by ``service.mark_ready``) sets the build info and serves the
registry on ``LLMGW_METRICS_PORT``; the edge also answers ``GET /metrics`` on its HTTP port
(``exposition``).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from services.contracts.events import UsageRecorded

#: The version of the names below (README "Metrics"): raise it with any breaking change.
METRICS_VERSION = "1"
VERSION = "0.1.0"

# no ``*_created`` series: half the exposition, nothing a dashboard reads (the function has no
# annotations in prometheus_client, hence the ignore)
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

#: Whether recording functions record (``LLMGW_METRICS``; on by default, ``metrics_http.serve`` sets it).
enabled = True

_LATENCY_S = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
_TTFT_S = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 30.0, 60.0)
_DURATION_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
_RATIO = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)

BUILD_INFO = Gauge(
    "llmgw_build_info",
    "Always 1: the version of the metric names (metrics_version), of the gateway, and the service",
    ["metrics_version", "version", "service"],
    registry=REGISTRY,
)
REQUESTS = Counter(
    "llmgw_requests",
    "Requests executed (the executor's outcome of each plan); outcome: ok, cancelled or the error code",
    ["operation", "alias", "provider", "outcome"],
    registry=REGISTRY,
)
DURATION = Histogram(
    "llmgw_request_duration_seconds",
    "From the executor taking a plan up to its outcome (retries and fallbacks included)",
    ["operation", "alias", "provider"],
    buckets=_DURATION_S,
    registry=REGISTRY,
)
TTFT = Histogram(
    "llmgw_time_to_first_token_seconds",
    "The answering provider's time to first token, as the executor measured it",
    ["alias", "provider"],
    buckets=_TTFT_S,
    registry=REGISTRY,
)
TOKENS = Counter(
    "llmgw_tokens",
    "Tokens the providers reported; type: input, output, cached (cached input tokens, part of input)",
    ["operation", "alias", "provider", "type"],
    registry=REGISTRY,
)
COST = Counter(
    "llmgw_cost_usd",
    "Cost in USD of the executed requests, at the configured prices",
    ["operation", "alias", "provider"],
    registry=REGISTRY,
)
RETRIES = Counter(
    "llmgw_provider_retries",
    "Provider calls made again to the same deployment after a retryable failure",
    ["alias", "provider"],
    registry=REGISTRY,
)
FALLBACKS = Counter(
    "llmgw_fallbacks",
    "Deployments given up for the next one of the plan (alias, provider: the one given up; code: why)",
    ["alias", "provider", "code"],
    registry=REGISTRY,
)
OVERHEAD = Histogram(
    "llmgw_gateway_overhead_seconds",
    "Time spent in the gateway, excluding the provider (x-llmgw-overhead-ms; streams: up to the first chunk)",
    ["operation", "stream"],
    buckets=_LATENCY_S,
    registry=REGISTRY,
)
REJECTIONS = Counter(
    "llmgw_rejections",
    "Requests the router refused before execution, by error code (rate_limited, budget_exceeded, ...)",
    ["operation", "code"],
    registry=REGISTRY,
)
RATELIMIT_LEFT = Histogram(
    "llmgw_ratelimit_remaining_ratio",
    "At each admission of a governed tenant: what is left of its tightest rate limit (0..1)",
    ["dimension"],
    buckets=_RATIO,
    registry=REGISTRY,
)
BUDGET_LEFT = Histogram(
    "llmgw_budget_remaining_ratio",
    "At each admission under a budget: what is left of it once the request's reservation is counted (0..1)",
    ["period", "scope"],
    buckets=_RATIO,
    registry=REGISTRY,
)

#: The scrape-time gauges (names, help and labels; ``_Sources`` yields them).
CONSUMER_LAG = "llmgw_consumer_lag_records"
CONSUMER_IN_FLIGHT = "llmgw_consumer_in_flight"
CIRCUIT_STATE = "llmgw_circuit_state"
CIRCUIT_VALUES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


# --- recording (the hot path) ---------------------------------------------------------------


class _Executed:
    """The pre-bound children of one (operation, alias, provider, outcome)."""

    __slots__ = ("requests", "duration", "ttft", "input", "output", "cached", "cost")

    def __init__(self, operation: str, alias: str, provider: str, outcome: str) -> None:
        self.requests = REQUESTS.labels(operation, alias, provider, outcome)
        self.duration = DURATION.labels(operation, alias, provider)
        self.ttft = TTFT.labels(alias, provider)
        self.input = TOKENS.labels(operation, alias, provider, "input")
        self.output = TOKENS.labels(operation, alias, provider, "output")
        self.cached = TOKENS.labels(operation, alias, provider, "cached")
        self.cost = COST.labels(operation, alias, provider)


_executed: dict[tuple[str, str, str, str], _Executed] = {}
_retries: dict[tuple[str, str], Counter] = {}
_fallbacks: dict[tuple[str, str, str], Counter] = {}
_overhead: dict[tuple[str, bool], Histogram] = {}
_rejections: dict[tuple[str, str], Counter] = {}
_ratios: dict[tuple[str, ...], Histogram] = {}


def executed(u: UsageRecorded) -> None:
    """One executed request, from its usage record: its count by outcome (``ok``, ``cancelled``
    or the error code), tokens, cost, duration and time to first token."""
    if not enabled:
        return
    outcome = u.status if u.status != "error" else (u.error_code or "error")
    key = (u.operation, u.alias, u.provider or "", outcome)
    b = _executed.get(key)
    if b is None:
        b = _executed[key] = _Executed(*key)
    b.requests.inc()
    if u.prompt_tokens:
        b.input.inc(u.prompt_tokens)
    if u.completion_tokens:
        b.output.inc(u.completion_tokens)
    if u.cached_tokens:
        b.cached.inc(u.cached_tokens)
    if u.cost_usd:
        b.cost.inc(u.cost_usd)
    if u.total_ms is not None:
        b.duration.observe(u.total_ms / 1000)
    if u.ttft_ms is not None:
        b.ttft.observe(u.ttft_ms / 1000)


def retried(alias: str, provider: str, n: int = 1) -> None:
    """``n`` provider calls made again to the deployment ``alias``/``provider``."""
    if not enabled or not n:
        return
    key = (alias, provider)
    c = _retries.get(key)
    if c is None:
        c = _retries[key] = RETRIES.labels(alias, provider)
    c.inc(n)


def fell_back(alias: str, provider: str, code: str) -> None:
    """The deployment ``alias``/``provider`` was given up (failing with ``code``) for the next."""
    if not enabled:
        return
    key = (alias, provider, code)
    c = _fallbacks.get(key)
    if c is None:
        c = _fallbacks[key] = FALLBACKS.labels(alias, provider, code)
    c.inc()


def overhead(operation: str, stream: bool, ms: float) -> None:
    """The gateway overhead of one edge request (``x-llmgw-overhead-ms``)."""
    if not enabled:
        return
    key = (operation, stream)
    h = _overhead.get(key)
    if h is None:
        h = _overhead[key] = OVERHEAD.labels(operation, "true" if stream else "false")
    h.observe(ms / 1000)


def rejected(operation: str, code: str) -> None:
    """The router refused a request with error ``code``."""
    if not enabled:
        return
    key = (operation, code)
    c = _rejections.get(key)
    if c is None:
        c = _rejections[key] = REJECTIONS.labels(operation, code)
    c.inc()


class RateLimitNumbers(Protocol):
    """``RateLimitInfo``: the binding scope of each dimension at admission."""

    @property
    def limit_requests(self) -> int | None: ...
    @property
    def remaining_requests(self) -> int | None: ...
    @property
    def limit_tokens(self) -> int | None: ...
    @property
    def remaining_tokens(self) -> int | None: ...


def ratelimit_left(info: RateLimitNumbers | None) -> None:
    """What an admitted request left of its tenant's tightest rate limits."""
    if not enabled or info is None:
        return
    if info.limit_requests and info.remaining_requests is not None:
        _ratio(RATELIMIT_LEFT, ("requests",), info.remaining_requests / info.limit_requests)
    if info.limit_tokens and info.remaining_tokens is not None:
        _ratio(RATELIMIT_LEFT, ("tokens",), info.remaining_tokens / info.limit_tokens)


class BudgetLimit(Protocol):
    """``budgets.Applicable``: one budget as it applies to one request."""

    @property
    def scope(self) -> str: ...  # tenant, user:<id> or key:<name>
    @property
    def period(self) -> str: ...  # day:YYYY-MM-DD or month:YYYY-MM
    @property
    def usd(self) -> float: ...


def budget_left(
    budgets: Sequence[BudgetLimit],
    spent: Mapping[tuple[str, str], float],
    reserved: Mapping[tuple[str, str], float],
    cost: float,
) -> None:
    """What an admitted request leaves of each budget it falls under, its reservation counted.
    Labelled by the period's kind and the scope's kind only (never who)."""
    if not enabled:
        return
    for b in budgets:
        if b.usd <= 0:
            continue
        where = (b.scope, b.period)
        left = b.usd - spent.get(where, 0.0) - reserved.get(where, 0.0) - cost
        period = b.period.split(":", 1)[0]
        scope = b.scope.split(":", 1)[0]
        _ratio(BUDGET_LEFT, (period, scope), left / b.usd)


def _ratio(hist: Histogram, labels: tuple[str, ...], value: float) -> None:
    key = ("ratelimit" if hist is RATELIMIT_LEFT else "budget", *labels)
    h = _ratios.get(key)
    if h is None:
        h = _ratios[key] = hist.labels(*labels)
    h.observe(min(max(value, 0.0), 1.0))


# --- scrape-time state ----------------------------------------------------------------------


class PartitionStats(Protocol):
    """What a consumer tells the scrape (``kafka.Consumer.partition_stats``)."""

    group_id: str

    def partition_stats(self) -> Iterable[tuple[str, int, int | None, int]]:
        """``(topic, partition, lag or None when unknown, handlers in flight)`` per assigned partition."""
        ...


class _Sources(Collector):
    """Reads consumers and circuit states when scraped."""

    def __init__(self) -> None:
        self.consumers: weakref.WeakSet[Any] = weakref.WeakSet()
        self.breakers: weakref.WeakSet[Any] = weakref.WeakSet()

    def describe(self) -> list[Metric]:
        return []  # (nothing at registration: the sources come later)

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            CONSUMER_LAG,
            "Records of the partition not yet handled and committed: high watermark minus the commit point",
            labels=["group", "topic", "partition"],
        )
        busy = GaugeMetricFamily(
            CONSUMER_IN_FLIGHT,
            "Handlers running for records of the partition",
            labels=["group", "topic", "partition"],
        )
        for c in list(self.consumers):
            try:
                stats = list(c.partition_stats())
            except Exception:  # a consumer closing: nothing to say about it (a scrape never fails)
                continue
            for topic, partition, behind, running in stats:
                labels = [c.group_id, topic, str(partition)]
                if behind is not None:
                    lag.add_metric(labels, behind)
                busy.add_metric(labels, running)
        yield lag
        yield busy
        state = GaugeMetricFamily(
            CIRCUIT_STATE,
            "Each deployment's circuit breaker: 0 closed, 1 half open (being probed), 2 open",
            labels=["alias", "provider", "model"],
        )
        for breakers in list(self.breakers):
            for key, circuit in list(breakers.circuits.items()):
                alias, provider, model = (key.split("/", 2) + ["", ""])[:3]
                state.add_metric([alias, provider, model], CIRCUIT_VALUES.get(circuit.state, 0.0))
        yield state


_sources = _Sources()
REGISTRY.register(_sources)


def watch_consumer(consumer: PartitionStats) -> None:
    """Report ``consumer``'s lag and in-flight handlers per partition while it exists."""
    _sources.consumers.add(consumer)


class CircuitHolder(Protocol):
    """``breaker.Breakers``: every deployment's circuit, key ``alias/provider/model``, each with
    a ``state`` (closed, half_open, open)."""

    @property
    def circuits(self) -> Mapping[str, Any]: ...


def watch_circuits(holder: CircuitHolder) -> None:
    """Report ``holder``'s circuit states at every scrape while it exists."""
    _sources.breakers.add(holder)


# --- exposition ---------------------------------------------------------------------------------


def exposition() -> tuple[bytes, str]:
    """The registry in the Prometheus text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
