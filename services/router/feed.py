"""Keeps the router's ``RoutingStats`` current from the topics it is given: ``llm.usage`` and the
executors' circuit breakers, ``llm.breakers`` (``llm.audit`` records count too, if given).

Every router instance reads every partition of them with its own consumer (no group,
nothing committed): the statistics are the same in every instance and none owns them. At
start the feed seeks each partition to the first record of the last ``lookback_s`` seconds
(``offsets_for_times``; at most ``max_replay`` records back per partition), replays up to
the end offsets it found, in timestamp order, and only then returns, so a restarted router
orders deployments by the averages it had before, not from scratch. Afterwards it follows
the topics in the background, in batches: the broker answers a fetch of the feed once it holds
``FOLLOW_MIN_BYTES`` or after ``FOLLOW_WAIT_MS``, so the statistics lag by up to a second and
cost the router one fetch a second instead of one per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from .stats import Resolve, RoutingStats

log = logging.getLogger(__name__)
#: How far back a starting router replays (seconds).
LOOKBACK_S = 3600.0
#: Most records replayed per partition: enough for the averages, bounded start-up time.
MAX_REPLAY = 5000
#: How long the broker may hold a fetch of the feed to fill it (ms), and how much it waits for:
#: the statistics need no record at once, and a fetch answered per record would wake the
#: router and the broker once more for every request the gateway serves.
FOLLOW_WAIT_MS = 1000
FOLLOW_MIN_BYTES = 1 << 20


class StatsFeed:
    def __init__(
        self,
        bootstrap_servers: str,
        topics: list[str],
        stats: RoutingStats,
        resolve: Resolve,
        *,
        lookback_s: float = LOOKBACK_S,
        max_replay: int = MAX_REPLAY,
        client_id: str = "router-stats",
    ):
        self.topics = topics
        self.stats = stats
        self.resolve = resolve
        self.lookback_s = lookback_s
        self.max_replay = max_replay
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            enable_auto_commit=False,
            fetch_max_wait_ms=FOLLOW_WAIT_MS,
            fetch_min_bytes=FOLLOW_MIN_BYTES,
        )
        self._task: asyncio.Task[None] | None = None
        self._partial: list[tuple[int, bytes]] = []
        self.replayed = 0

    async def start(self, timeout_s: float = 60.0) -> None:
        """Replay the lookback window (waiting at most ``timeout_s``; past it the router
        starts with what it has read), then follow the topics."""
        c = self._consumer
        await c.start()
        tps = await self._partitions()
        c.assign(tps)
        ends = await c.end_offsets(tps)
        since = int((time.time() - self.lookback_s) * 1000)
        found = await c.offsets_for_times({tp: since for tp in tps})
        for tp in tps:
            at = found.get(tp)
            begin = at.offset if at is not None else ends[tp]
            c.seek(tp, max(begin, ends[tp] - self.max_replay, 0))
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                records = await self._read_until(ends)
        except TimeoutError:
            log.warning(
                "routing statistics: replay not finished after %.0fs; starting with what was read", timeout_s
            )
            records = self._partial
        self.replayed = self.stats.rebuild(records, self.resolve)
        log.info(
            "routing statistics: %d of %d records counted, replayed in %.2fs",
            self.replayed,
            len(records),
            time.perf_counter() - t0,
        )
        self._task = asyncio.create_task(self._follow())

    async def _partitions(self) -> list[TopicPartition]:
        c = self._consumer
        out = []
        for topic in self.topics:
            parts = c.partitions_for_topic(topic)
            if not parts:
                await c._client.force_metadata_update()
                parts = c.partitions_for_topic(topic) or set()
            out += [TopicPartition(topic, p) for p in sorted(parts)]
        return out

    async def _read_until(self, ends: dict[TopicPartition, int]) -> list[tuple[int, bytes]]:
        c = self._consumer
        pending = {tp for tp, end in ends.items() if await c.position(tp) < end}
        while pending:
            for recs in (await c.getmany(*pending, timeout_ms=500)).values():
                self._partial += [(r.timestamp, r.value) for r in recs if r.value]
            pending = {tp for tp in pending if await c.position(tp) < ends[tp]}
        return self._partial

    async def _follow(self) -> None:
        """Until closed; a failed fetch is logged and retried (the statistics go stale, routing
        goes on)."""
        c, observe, resolve = self._consumer, self.stats.observe, self.resolve
        while True:
            try:
                batches = await c.getmany(timeout_ms=1000)
            except Exception:
                log.exception("routing statistics: reading %s failed; retrying", ", ".join(self.topics))
                await asyncio.sleep(1.0)  # back off, then fetch again
                continue
            for recs in batches.values():
                for r in recs:
                    if r.value:
                        observe(r.value, r.timestamp, resolve)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()
