"""``llmgw status``'s circuits: each deployment's circuit breaker as ``llm.breakers`` holds it (the
last record per deployment of a compacted topic the executors write, README "Circuit breaking")."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka.structs import ConsumerRecord

from services.contracts.events import BreakerChanged
from services.runtime.settings import Settings
from services.runtime.tail import Tail
from services.runtime.topics import Topics


async def circuit_states(settings: Settings, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Every deployment's last circuit record, sorted by deployment; ``state`` is what the
    executors act on now (an ``open`` circuit whose cool-down has ended is ``cooled``: its next
    request probes it)."""
    topics = Topics.load(settings.topics_path, settings.topic_prefix)
    last: dict[str, BreakerChanged] = {}

    def keep(r: ConsumerRecord) -> None:
        if r.value:
            try:
                ev = BreakerChanged.model_validate_json(r.value)
            except ValueError:
                return
            last[ev.key] = ev

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
    for key, ev in sorted(last.items()):
        until = ev.until.timestamp() if ev.until else None
        state = ev.state
        if state == "open" and until is not None and until <= now:
            state = "cooled"  # type: ignore[assignment]
        rows.append(
            {
                "deployment": key,
                "state": state,
                "failures": ev.failures,
                "until": ev.until.isoformat(timespec="milliseconds") if ev.until else None,
                "since": ev.occurred_at.isoformat(timespec="milliseconds"),
                "by": ev.by,
                "error_code": ev.error_code,
            }
        )
    return rows
