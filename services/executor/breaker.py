"""Circuit breaking: a deployment that keeps failing is skipped for a cool-down, then one request
probes it before it carries traffic again.

The state lives on ``llm.breakers`` (compacted, one partition, key ``alias/provider/model``):
every executor reads it whole at start, before it serves, and follows it (``runtime.tail``), so
all executors skip the same deployments. Per deployment (its alias's ``breaker``, else
``defaults.breaker``):

A deployment whose breaker is not ``enabled`` is always called and never counted.

* **closed**: calls go through. An executor counts the consecutive failed calls it sees (timeouts,
  5xx, 408, 429, lost connections: ``attempts.retryable``); at ``failures`` it writes ``open``
  with ``until`` = now + ``cooldown_s``. A success resets its count.
* **open**: until ``until`` the deployment is skipped (no call; the attempts go on with the next
  deployment, or the request fails with ``provider_error`` saying the circuit is open).
* **probe**: the first request to reach the deployment after ``until`` writes a ``half_open``
  claim (key ``alias/provider/model#probe``: compaction keeps the state records apart from the
  claims) and waits until it has read the log back to it: the first claim after the ``open`` wins
  (``services/runtime/circuits.py``, the reading every reader of the log shares),
  and only its request calls the provider; the others skip it meanwhile. The probe's success
  writes ``closed``; its failure writes ``open`` again for another cool-down. A claim whose probe
  never reports (its executor died, the request was cancelled) lapses after ``cooldown_s``, and
  the next request claims again.

Counts of failures are this process's own (they start at 0 after a restart); the transitions are
Kafka's, so a restarted executor skips what was open before, and probes what has cooled down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from services.contracts.errors import GatewayError, ProviderError
from services.contracts.events import BreakerChanged, CircuitState, new_id
from services.runtime import metrics
from services.runtime.circuits import Circuit, apply, record_key
from services.runtime.config import BreakerConfig
from services.runtime.kafka import DeadLetters, Publisher, validation_reason
from services.runtime.tail import Malformed, Tail
from services.runtime.topics import Topics

from .targets import Target

log = logging.getLogger(__name__)
#: How long a probe claim waits for its read-back before the request skips the deployment (s).
CLAIM_WAIT_S = 5.0


def key_of(target: Target) -> str:
    return f"{target.alias}/{target.provider}/{target.upstream_model}"


@dataclass(frozen=True, slots=True)
class Ticket:
    """Leave to call a deployment: ``probe`` when the call is its circuit's one probe."""

    target: Target
    probe: bool = False


class Breakers:
    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topics: Topics,
        publisher: Publisher,
        instance: str,
        defaults: BreakerConfig,
        clock: Callable[[], float] = time.time,
    ):
        self.topic = topics.breakers.name
        self.publisher = publisher
        self.instance = instance
        self.defaults = defaults
        self.clock = clock
        self.circuits: dict[str, Circuit] = {}
        self._failures: dict[str, int] = {}  # this process's consecutive failures per deployment
        self._claiming: set[str] = set()
        self._pending: set[asyncio.Future[None]] = set()
        self.tail = Tail(
            bootstrap_servers,
            self.topic,
            self.apply,
            partitions=range(topics.breakers.partitions),
            start_at="beginning",
            client_id=f"{instance}-breakers",
            fetch_max_wait_ms=100,
            dead_letters=DeadLetters(publisher, topics.dlq.name, f"{instance}-breakers"),
        )

    async def start(self) -> None:
        """Read the whole log (every deployment's last state) before returning, then follow it."""
        await self.tail.start()
        await self.tail.caught_up()
        metrics.watch_circuits(self)
        opened = sorted(k for k, c in self.circuits.items() if c.state != "closed")
        log.info(
            "circuit breakers read back: %d deployments, not closed: %s", len(self.circuits), opened or "none"
        )

    async def aclose(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=2.0)
        await self.tail.aclose()

    # --- the log --------------------------------------------------------------------------

    def apply(self, record: ConsumerRecord) -> None:
        """One record of ``llm.breakers``, in log order (the tail's handler)."""
        if not record.value:
            return  # a tombstone
        try:
            ev = BreakerChanged.model_validate_json(record.value)
        except ValidationError as exc:
            raise Malformed(f"BreakerChanged: {validation_reason(exc)}") from exc
        apply(self.circuits, ev)

    async def _write(self, target: Target, state: CircuitState, **fields: Any) -> asyncio.Future[Any]:
        """Enqueue one transition of ``target``; its ack future."""
        ev = BreakerChanged(
            alias=target.alias,
            provider=target.provider,
            model=target.upstream_model,
            state=state,
            by=self.instance,
            occurred_at=datetime.fromtimestamp(self.clock(), UTC),  # the clock claims are judged by
            **fields,
        )
        return await self.publisher.publish(self.topic, ev, key=record_key(ev), partition=0)

    def _send(self, target: Target, state: CircuitState, **fields: Any) -> None:
        """Write a transition in the background; a failure to write it is logged."""

        async def write() -> None:
            await (await self._write(target, state, **fields))

        task = asyncio.ensure_future(write())
        self._pending.add(task)
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Future[None]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("writing a circuit transition to %s failed: %s", self.topic, exc)

    def _config(self, target: Target) -> BreakerConfig:
        return target.breaker or self.defaults

    # --- calls ---------------------------------------------------------------------------

    async def admit(self, target: Target) -> Ticket | ProviderError:
        """Leave to call ``target``, or the error saying why it is skipped."""
        key = key_of(target)
        c = self.circuits.get(key)
        if c is None or c.state == "closed" or not self._config(target).enabled:
            return Ticket(target)
        now = self.clock()
        if (c.until is not None and now < c.until) or key in self._claiming:
            return self._skipped(target, c)
        return await self._claim(target, key)

    async def _claim(self, target: Target, key: str) -> Ticket | ProviderError:
        """Write a probe claim and read the log back to it: the probe is ours if our claim won."""
        claim = new_id()
        lapse = datetime.fromtimestamp(self.clock() + self._config(target).cooldown_s, UTC)
        self._claiming.add(key)
        try:
            async with asyncio.timeout(CLAIM_WAIT_S):
                ack = await self._write(target, "half_open", claim=claim, until=lapse)
                meta = await ack
                await self.tail.reach({0: meta.offset + 1})
        except Exception as exc:  # the log cannot be written or read now: no probe from here
            log.warning("claiming the probe of %s failed: %s", key, exc)
        finally:
            self._claiming.discard(key)
        c = self.circuits[key]
        if c.state == "half_open" and c.claim == claim:
            log.info("probing %s", key)
            return Ticket(target, probe=True)
        return self._skipped(target, c)

    def _skipped(self, target: Target, c: Circuit) -> ProviderError:
        when = datetime.fromtimestamp(c.until, UTC).isoformat(timespec="seconds") if c.until else "now"
        why = (
            f"its circuit is open until {when} after {c.failures} failed calls in a row"
            if c.state == "open"
            else f"its circuit is being probed by {c.by} (until {when})"
        )
        return ProviderError(
            f"{target.label}: not called, {why}", details={"upstream_status": None, "circuit": c.state}
        )

    def done(self, ticket: Ticket, error: GatewayError | None, failed: bool) -> None:
        """The call of ``ticket`` ended: with no error, with ``error``, and ``failed`` when that
        error counts against the deployment (a provider failure, not a verdict on the request)."""
        target, key = ticket.target, key_of(ticket.target)
        cfg = self._config(target)
        if not cfg.enabled:
            return
        c = self.circuits.setdefault(key, Circuit())
        if ticket.probe:
            if failed:
                self._open(target, c, cfg, max(c.failures, cfg.failures), error)
            else:
                c.state, c.until, c.claim = "closed", None, None
                self._send(target, "closed", reason="the probe succeeded")
                log.info("circuit of %s closed: the probe succeeded", key)
            return
        if not failed:
            if error is None:
                self._failures.pop(key, None)
            return
        n = self._failures[key] = self._failures.get(key, 0) + 1
        if n >= cfg.failures and c.state == "closed":
            self._failures.pop(key, None)
            self._open(target, c, cfg, n, error)

    def _open(
        self, target: Target, c: Circuit, cfg: BreakerConfig, failures: int, error: GatewayError | None
    ) -> None:
        until = self.clock() + cfg.cooldown_s
        c.state, c.until, c.failures, c.claim = (
            "open",
            until,
            failures,
            None,
        )  # at once here; the log confirms
        self._send(
            target,
            "open",
            failures=failures,
            until=datetime.fromtimestamp(until, UTC),
            error_code=error.code if error else None,
            reason=error.message[:300] if error else None,
        )
        log.warning(
            "circuit of %s opened for %.0f s after %d failed calls", key_of(target), cfg.cooldown_s, failures
        )
