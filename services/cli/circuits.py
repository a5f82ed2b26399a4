"""``llmgw status``'s circuits: each deployment's circuit breaker as ``llm.breakers`` holds it (the
last record per deployment of a compacted topic the executors write, README "Circuit breaking")."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from aiokafka.structs import ConsumerRecord

from services.contracts.events import BreakerChanged
from services.runtime.circuits import Circuit, apply
from services.runtime.settings import Settings
from services.runtime.tail import Tail
from services.runtime.topics import Topics


async def circuit_states(settings: Settings, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Every deployment's circuit, read from the whole log as the executors read it, sorted by
    deployment; ``state`` is what they act on now (``cooled``: an open circuit whose cool-down, or a
    probe claim that, has ended: its next request probes it)."""
    topics = Topics.load(settings.topics_path, settings.topic_prefix)
    circuits: dict[str, Circuit] = {}

    def keep(r: ConsumerRecord) -> None:
        if r.value:
            try:
                apply(circuits, BreakerChanged.model_validate_json(r.value))
            except ValueError:
                return

    tail = Tail(
        settings.bootstrap_servers,
        topics.breakers.name,
        keep,
        partitions=range(topics.breakers.partitions),
        start_at="beginning",
        client_id="llmgw-status",
        fetch_max_wait_ms=50,
    )
    async with asyncio.timeout(timeout_s):
        await tail.start()
        try:
            await tail.caught_up()
        finally:
            await tail.aclose()
    now = time.time()
    rows = []
    for key, c in sorted(circuits.items()):
        state: str = c.state
        if c.until is not None and c.until <= now and state != "closed":
            state = "cooled"  # its next request probes it
        rows.append(
            {
                "deployment": key,
                "state": state,
                "failures": c.failures,
                "until": _iso(c.until),
                "since": _iso(c.since),
                "by": c.by,
                "error_code": c.error_code,
            }
        )
    return rows


def _iso(t: float | None) -> str | None:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds") if t is not None else None
