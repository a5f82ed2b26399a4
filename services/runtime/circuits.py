"""Reading ``llm.breakers``: the circuit of each deployment, as every reader (executors, routers,
``llmgw status``) must see it from the same log (README "Circuit breaking").

Records are read in log order. ``open`` and ``closed`` records (key ``alias/provider/model``) set
the state; a ``half_open`` record is a probe claim (key ``alias/provider/model#probe``, so that
compaction keeps the last state record of a deployment whatever claims came after it). A claim
counts only while the circuit is ``open`` (the first claim after the ``open`` wins), or when it
comes after the winning claim lapsed; any other claim is void.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.contracts.events import BreakerChanged, CircuitState

#: The suffix of a probe claim's record key.
PROBE = "#probe"


@dataclass
class Circuit:
    """One deployment: ``until`` (unix seconds) ends an ``open`` cool-down or a ``half_open``
    claim; ``claim`` is the winning probe claim while half open; ``by`` wrote the state."""

    state: CircuitState = "closed"
    until: float | None = None
    failures: int = 0
    claim: str | None = None
    by: str | None = None
    since: float | None = None
    error_code: str | None = None


def record_key(ev: BreakerChanged) -> str:
    """The Kafka key of a record: the deployment, ``#probe`` for a claim."""
    return ev.key + PROBE if ev.state == "half_open" else ev.key


def apply(circuits: dict[str, Circuit], ev: BreakerChanged) -> Circuit:
    """One record, in log order; the deployment's circuit after it."""
    c = circuits.setdefault(ev.key, Circuit())
    until = ev.until.timestamp() if ev.until else None
    at = ev.occurred_at.timestamp()
    if ev.state == "open":
        c.state, c.until, c.failures, c.claim, c.by = "open", until, ev.failures, None, ev.by
        c.since, c.error_code = at, ev.error_code
    elif ev.state == "closed":
        c.state, c.until, c.failures, c.claim, c.by, c.since, c.error_code = (
            "closed",
            None,
            0,
            None,
            ev.by,
            at,
            None,
        )
    elif c.state == "open" or (c.state == "half_open" and c.until is not None and at >= c.until):
        c.state, c.until, c.claim, c.by, c.since = "half_open", until, ev.claim, ev.by, at  # this claim wins
    return c
