"""Per-deployment routing statistics, from what the executors report on Kafka.

A deployment is ``(alias, provider, upstream model)``. What counts, per record:

* ``llm.usage`` (one per executed request, naming the deployment that answered or failed
  last): ``status: ok`` is a success with its times; ``status: error`` with ``error_code``
  ``provider_error`` or ``provider_timeout`` is a failure; anything else (cancelled, a
  gateway-side error such as a structured-output violation) says nothing about the deployment.
  Each entry of its ``failed_attempts`` (a deployment that failed before the next one was
  tried) is a failure of the deployment it names, with the same error codes.
* records of a provider batch say nothing: the ``batch.run``'s (its time is the whole batch's,
  hours maybe) and its items' (``batch_id`` set, no ``total_ms``: not calls of their own; items
  run as ordinary requests have their call's ``total_ms`` and count).
* ``llm.audit`` ``fallback_triggered`` says the same; the router's feed reads only
  ``llm.usage`` (one record per request instead of four), but such records still count here.
* ``llm.breakers`` (``llm.breaker.v1``, the executors' circuit breakers): a deployment whose
  circuit is ``open`` is unusable until its ``until``, one ``half_open`` (being probed) until its
  claim's ``until``; ``closed`` lifts that.

Moving averages are exponentially weighted (``ALPHA`` per observation), two per deployment,
because they measure different things: ``ttft_ms``, the time to first token of streamed
answers, and ``response_ms``, the time of whole (non-streamed) answers (the usage record's
``ttft_ms``, which for a whole answer is the provider call, else its ``total_ms``).

**Usable rule**: a deployment is unusable while its circuit is open or being probed (the
executors skip it meanwhile), or while its last ``K`` (3) outcomes are all failures and the
oldest of those three is less than ``WINDOW_S`` (300 s) old. One success makes it usable again;
so does time (the three failures age out, the circuit's cool-down ends), after which it is tried
again.

Usage records name the model the provider reported, which may differ from the configured
upstream name (``gpt-4o`` answering as ``gpt-4o-2024-08-06``); a ``Resolve`` callback maps a
record to a configured deployment (see ``deployment_key``) and records it cannot map are ignored.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from services.contracts.events import BreakerChanged
from services.runtime.circuits import Circuit
from services.runtime.circuits import apply as apply_circuit
from services.runtime.config import ModelConfig

#: Weight of the newest observation in a moving average.
ALPHA = 0.2
#: Consecutive failures that make a deployment unusable...
K = 3
#: ... when the oldest of them is at most this old (seconds).
WINDOW_S = 300.0
FAILURES = frozenset({"provider_error", "provider_timeout"})
_FALLBACK = b'"fallback_triggered"'
_BREAKER = b'"llm.breaker.v1"'

Key = tuple[str, str, str]
#: (alias, provider, model as recorded) -> the configured deployment, or None to ignore the record.
Resolve = Callable[[str, str, str | None], Key | None]


@dataclass(slots=True)
class DeploymentStats:
    ttft_ms: float | None = None
    response_ms: float | None = None
    #: (unix time s, failed) of the latest outcomes, oldest first
    outcomes: deque[tuple[float, bool]] = field(default_factory=lambda: deque(maxlen=K))
    #: unix time s until which its circuit is open or being probed (None: closed)
    circuit_until: float | None = None
    circuit: str = "closed"


def ewma(avg: float | None, x: float, alpha: float = ALPHA) -> float:
    return x if avg is None else avg + alpha * (x - avg)


class RoutingStats:
    """What the router knows about each deployment. Not thread-safe (one event loop)."""

    def __init__(
        self, *, alpha: float = ALPHA, window_s: float = WINDOW_S, clock: Callable[[], float] = time.time
    ):
        self.alpha = alpha
        self.window_s = window_s
        self._clock = clock
        self._by_key: dict[Key, DeploymentStats] = {}
        self._circuits: dict[str, Circuit] = {}  # by the records' own deployment names
        self.observed = 0  # records that counted

    def get(self, key: Key) -> DeploymentStats | None:
        return self._by_key.get(key)

    def _entry(self, key: Key) -> DeploymentStats:
        s = self._by_key.get(key)
        if s is None:
            s = self._by_key[key] = DeploymentStats()
        return s

    # --- observations -------------------------------------------------------------------

    def success(self, key: Key, at: float, *, streamed: bool, ms: float | None) -> None:
        s = self._entry(key)
        s.outcomes.append((at, False))
        if ms is not None:
            if streamed:
                s.ttft_ms = ewma(s.ttft_ms, ms, self.alpha)
            else:
                s.response_ms = ewma(s.response_ms, ms, self.alpha)

    def failure(self, key: Key, at: float) -> None:
        self._entry(key).outcomes.append((at, True))

    def observe(self, value: bytes, timestamp_ms: int, resolve: Resolve) -> bool:
        """One ``llm.usage`` or ``llm.audit`` record (its JSON value and Kafka timestamp);
        whether it counted. Audit records other than ``fallback_triggered`` are skipped before
        they are parsed; a record that does not parse, or holds a field of the wrong type, is
        ignored (the usage sink dead-letters it): no record stops the statistics."""
        if _BREAKER in value:
            return self._circuit(value, resolve)
        is_audit = b'"llm.audit.v1"' in value
        if is_audit and _FALLBACK not in value:
            return False
        try:
            e = orjson.loads(value)
            alias, provider = e["alias"], e["provider"]
            model = e.get("model")
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return False
        if not (isinstance(alias, str) and isinstance(provider, str) and isinstance(model, str | None)):
            return False
        if e.get("operation") == "batch.run" or (e.get("batch_id") is not None and e.get("total_ms") is None):
            return False  # a provider batch, or an item of one: no call of its own to the deployment
        try:
            return self._observe(e, alias, provider, model, timestamp_ms / 1000, resolve, is_audit)
        except (TypeError, ValueError, AttributeError):  # a field of the wrong type (unhashable, ...)
            return False

    def _observe(
        self,
        e: dict[str, Any],
        alias: str,
        provider: str,
        model: str | None,
        at: float,
        resolve: Resolve,
        is_audit: bool,
    ) -> bool:
        key = resolve(alias, provider, model)
        if key is None:
            return False
        if not is_audit and e.get("failed_attempts"):
            self._earlier_failures(e["failed_attempts"], at, resolve)
        if is_audit or e.get("status") == "error":
            code = e.get("error_code")
            if not isinstance(code, str) or code not in FAILURES:
                return False
            self.failure(key, at)
        elif e.get("status") == "ok":
            streamed = bool(e.get("streamed"))
            ms = e.get("ttft_ms")
            if ms is None and not streamed:
                ms = e.get("total_ms")
            self.success(key, at, streamed=streamed, ms=ms if isinstance(ms, (int, float)) else None)
        else:
            return False
        self.observed += 1
        return True

    def _earlier_failures(self, attempts: object, at: float, resolve: Resolve) -> None:
        """A usage record's ``failed_attempts``: deployments that failed before the one that
        answered, each a failure of its own."""
        for a in attempts if isinstance(attempts, list) else ():
            if (
                isinstance(a, dict)
                and a.get("error_code") in FAILURES
                and isinstance(a.get("alias"), str)
                and isinstance(a.get("provider"), str)
            ):
                key = resolve(a["alias"], a["provider"], a.get("model"))
                if key is not None:
                    self.failure(key, at)

    def _circuit(self, value: bytes, resolve: Resolve) -> bool:
        """One ``llm.breaker.v1`` record: the deployment's circuit, read as the executors read it
        (``services/runtime/circuits.py``: a void probe claim changes nothing)."""
        try:
            ev = BreakerChanged.model_validate_json(value)
        except ValueError:
            return False
        key = resolve(ev.alias, ev.provider, ev.model)
        if key is None:
            return False
        c = apply_circuit(self._circuits, ev)
        s = self._entry(key)
        s.circuit = c.state
        s.circuit_until = None if c.state == "closed" else c.until
        self.observed += 1
        return True

    def rebuild(self, records: Iterable[tuple[int, bytes]], resolve: Resolve) -> int:
        """Replay records (Kafka timestamp in ms, value) in timestamp order, as they happened
        across partitions; how many counted."""
        return sum(self.observe(v, ts, resolve) for ts, v in sorted(records, key=lambda r: r[0]))

    # --- what routing reads ------------------------------------------------------------------

    def usable(self, key: Key, now: float | None = None) -> bool:
        """False while its circuit is open or probed, or while the last ``K`` outcomes are
        failures, the oldest under ``window_s`` old."""
        s = self._by_key.get(key)
        if s is None:
            return True
        now = self._clock() if now is None else now
        if s.circuit_until is not None and now < s.circuit_until:
            return False
        if len(s.outcomes) < K:
            return True
        oldest, _ = s.outcomes[0]
        if not all(failed for _, failed in s.outcomes):
            return True
        return now - oldest > self.window_s

    def average(self, key: Key, streamed: bool) -> float | None:
        """The moving average routing ``fastest`` orders by: time to first token for a
        streamed request, time of the whole answer otherwise; None before any observation."""
        s = self._by_key.get(key)
        if s is None:
            return None
        return s.ttft_ms if streamed else s.response_ms

    def health(self, alias: str, provider: str, model: str) -> tuple[bool, float | None]:
        """``catalog.Health``: (usable, moving average of time to first token)."""
        key = (alias, provider, model)
        s = self._by_key.get(key)
        return self.usable(key), (s.ttft_ms if s else None)


def deployment_key(
    catalog: Mapping[str, ModelConfig], alias: str, provider: str, model: str | None
) -> Key | None:
    """The configured deployment a record names: ``model`` is its upstream model, or the
    alias has one deployment on ``provider``, or exactly one of them is a prefix of the
    reported name or has it as a prefix (``gpt-4o`` / ``gpt-4o-2024-08-06``; the emulator's
    ``gpt-emu@ttfb_ms=300`` answers as ``gpt-emu``). None: not a deployment we have."""
    m = catalog.get(alias)
    if m is None:
        return None
    names = [d.model for d in m.deployments if d.provider == provider]
    if not names:
        return None
    if model in names:
        return alias, provider, model
    if len(names) == 1:
        return alias, provider, names[0]
    if not model:
        return None
    close = [n for n in names if model.startswith(n) or n.startswith(model)]
    return (alias, provider, close[0]) if len(close) == 1 else None
