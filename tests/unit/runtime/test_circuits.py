"""Reading ``llm.breakers`` (``services/runtime/circuits.py``): the same circuit for every reader,
void claims changing nothing, and state records keyed apart from claims (so compaction keeps a
deployment's last state whatever claims came after it)."""

from __future__ import annotations

from datetime import UTC, datetime

from services.contracts.events import BreakerChanged
from services.runtime.circuits import Circuit, apply, record_key

T0 = 1_000_000.0


def ev(state: str, at: float, until: float | None = None, claim: str | None = None) -> BreakerChanged:
    return BreakerChanged(
        alias="a",
        provider="p",
        model="m",
        state=state,  # type: ignore[arg-type]
        occurred_at=datetime.fromtimestamp(at, UTC),
        until=datetime.fromtimestamp(until, UTC) if until else None,
        claim=claim,
        by="x",
    )


def replay(*events: BreakerChanged) -> Circuit:
    circuits: dict[str, Circuit] = {}
    for e in events:
        apply(circuits, e)
    return circuits["a/p/m"]


def test_the_first_claim_after_an_open_wins_and_later_ones_are_void():
    c = replay(
        ev("open", T0, T0 + 30),
        ev("half_open", T0 + 31, T0 + 61, "c1"),
        ev("half_open", T0 + 31, T0 + 61, "c2"),
    )
    assert (c.state, c.claim) == ("half_open", "c1")


def test_a_claim_after_the_close_changes_nothing():
    c = replay(
        ev("open", T0, T0 + 30),
        ev("half_open", T0 + 31, T0 + 61, "c1"),
        ev("closed", T0 + 32),
        ev("half_open", T0 + 33, T0 + 63, "c2"),
    )
    assert c.state == "closed" and c.until is None


def test_a_lapsed_claim_gives_way_to_the_next():
    c = replay(
        ev("open", T0, T0 + 30),
        ev("half_open", T0 + 31, T0 + 61, "c1"),
        ev("half_open", T0 + 62, T0 + 92, "c2"),
    )
    assert (c.state, c.claim, c.until) == ("half_open", "c2", T0 + 92)


def test_claims_are_keyed_apart_from_states():
    assert record_key(ev("open", T0, T0 + 30)) == "a/p/m"
    assert record_key(ev("closed", T0)) == "a/p/m"
    assert record_key(ev("half_open", T0, T0 + 30, "c")) == "a/p/m#probe"
    # compacted: open (the last state record) and the last claim, in their log order
    c = replay(ev("open", T0 + 40, T0 + 70), ev("half_open", T0 + 71, T0 + 101, "c9"))
    assert (c.state, c.claim) == ("half_open", "c9")
