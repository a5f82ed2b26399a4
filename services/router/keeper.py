"""The ledger's Kafka side: rebuilt on assignment before a partition's requests are admitted,
settled from ``llm.usage``, written to ``llm.admissions`` and ``llm.ledger``.

* On assignment, every governed partition *i* (one holding a governed tenant) is held: its
  ``llm.requests`` and ``llm.usage`` partitions are paused while ``rebuild`` reads, for *i*,
  the latest ``llm.ledger`` snapshot of each tenant, then ``llm.admissions`` and ``llm.usage``
  from the offsets those snapshots cover (never from before ``Governor.replay_since``) up to
  their end offsets. ``llm.usage`` *i* then continues from that end and both are released.
  ``llm.usage`` partitions holding no governed tenant stay paused: the router never reads them.
* Usage records settle live through an inline subscription (``subscription``), in order.
* ``write`` enqueues an admission record in the tenant's partition; its ack advances the
  offset the next snapshot covers. Snapshots go out every ``snapshot_s`` for tenants that
  changed, every ``FULL_SNAPSHOT_S`` for all, and when a partition is revoked.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import orjson
import pydantic
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from services.contracts.errors import InternalError
from services.contracts.events import ExecutionPlanned, LedgerSnapshot
from services.runtime.kafka import Consumer, Publisher, Subscription, range_reader
from services.runtime.plugins import UsagePlugin
from services.runtime.topics import Topics

from .admission import Executable, Governor, Grant
from .ledger import PartitionLedger, TenantLedger
from .plugins import report

log = logging.getLogger(__name__)

#: Seconds between snapshot rounds (tenants that changed).
SNAPSHOT_S = 10.0
#: A tenant's snapshot is rewritten at least this often, so replays start from recent offsets.
FULL_SNAPSHOT_S = 600.0
#: How long a revoked partition's last snapshots may take to be acknowledged.
REVOKE_SNAPSHOT_S = 5.0


def _raw(value: bytes) -> bytes:
    return value


class LedgerKeeper:
    def __init__(
        self,
        bootstrap_servers: str,
        topics: Topics,
        governor: Governor,
        publisher: Publisher,
        *,
        client_id: str = "router-ledger",
        snapshot_s: float = SNAPSHOT_S,
        usage_plugins: Mapping[str, UsagePlugin] | None = None,
    ):
        self.bootstrap = bootstrap_servers
        self.topics = topics
        self.governor = governor
        self.publisher = publisher
        self.client_id = client_id
        self.snapshot_s = snapshot_s
        #: tenants whose own Usage plugin hears every usage record (``plugins.py``)
        self.usage_plugins = dict(usage_plugins or {})
        self._plugin_keys = {t.encode() for t in self.usage_plugins}
        self.count = topics.requests.partitions
        if (
            not topics.usage.partitions
            == topics.admissions.partitions
            == topics.ledger.partitions
            == self.count
        ):
            raise RuntimeError(
                "llm.requests, llm.usage, llm.admissions and llm.ledger need one partition count"
            )
        #: partitions holding a governed tenant
        self.governed = governor.partitions(self.count)
        self.keys = {t.encode() for t in governor.tenants}
        self.ledgers: dict[int, PartitionLedger] = {}
        #: seconds each finished rebuild took, with its partitions (newest last)
        self.rebuilds: deque[tuple[frozenset[int], float]] = deque(maxlen=100)
        self.consumer: Consumer[Any] | None = None
        self._generation: dict[int, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._snapshot_task: asyncio.Task[None] | None = None

    # --- wiring ---------------------------------------------------------------------------

    def subscription(self) -> Subscription:
        """``llm.usage`` for the router's consumer group: settles inline, in partition order, outside
        any trace (keeping the ledger is no hop of the request: the usage sink's span is)."""
        return Subscription(_raw, self.on_usage, name="usage", inline=True, context=False)

    def attach(self, consumer: Consumer[Any]) -> None:
        self.consumer = consumer

    def start(self) -> None:
        self._snapshot_task = asyncio.create_task(self._snapshots(), name="ledger-snapshots")

    async def aclose(self) -> None:
        for t in [*self._tasks, self._snapshot_task]:
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t

    def ready(self, partition: int) -> bool:
        return partition in self.ledgers

    # --- assignment -------------------------------------------------------------------------

    def on_assigned(self, tps: set[TopicPartition]) -> None:
        """Hold governed partitions until rebuilt, and the usage partitions no governed tenant is in."""
        assert self.consumer is not None
        req, use = self.topics.requests.name, self.topics.usage.name
        new = {tp.partition for tp in tps if tp.topic == req and tp.partition in self.governed}
        held = {tp for tp in tps if tp.topic == use or (tp.topic == req and tp.partition in new)}
        self.consumer.hold(held)
        if new:
            for p in new:
                self._generation[p] = self._generation.get(p, 0) + 1
            task = asyncio.create_task(
                self._rebuild(new, {p: self._generation[p] for p in new}), name="ledger-rebuild"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def on_revoked(self, tps: set[TopicPartition]) -> None:
        """Write the revoked partitions' last snapshots (so the next owner replays little), drop them."""
        gone = {tp.partition for tp in tps if tp.topic == self.topics.requests.name}
        for p in gone:
            self._generation[p] = self._generation.get(p, 0) + 1  # a rebuild still running is void
        owned = [p for p in gone if p in self.ledgers]
        if owned:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(REVOKE_SNAPSHOT_S):
                    await self.snapshot_now(owned, force=True)
        for p in gone:
            self.ledgers.pop(p, None)

    async def _rebuild(self, parts: set[int], generation: dict[int, int]) -> None:
        delay = 0.5
        while True:
            t0 = time.perf_counter()
            try:
                ledgers = await self.read(parts)
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ledger rebuild of partitions %s failed; retrying", sorted(parts))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        assert self.consumer is not None
        req, use = self.topics.requests.name, self.topics.usage.name
        if self._plugin_keys:
            try:
                await self._report_unreported(ledgers)
            except Exception:
                log.exception("re-reporting usage of partitions %s to usage plugins failed", sorted(parts))
        assigned = self.consumer.assignment()
        done = set()
        for p, ledger in ledgers.items():
            if self._generation.get(p) != generation[p] or TopicPartition(req, p) not in assigned:
                continue  # revoked (and maybe assigned again) meanwhile: that assignment rebuilds
            self.ledgers[p] = ledger
            self.consumer.seek(TopicPartition(use, p), ledger.usage_next)
            done.add(p)
        seconds = time.perf_counter() - t0
        self.rebuilds.append((frozenset(done), seconds))
        log.info("ledger of partitions %s rebuilt in %.3f s", sorted(done), seconds)
        self.consumer.release({TopicPartition(t, p) for p in done for t in (req, use)})

    async def read(self, parts: set[int], now: float | None = None) -> dict[int, PartitionLedger]:
        """The ledgers of ``parts`` as Kafka holds them now (see the module docstring)."""
        async with range_reader(self.bootstrap, self.client_id) as reader:
            return await rebuild(
                reader, self.topics, self.governor, parts, time.time() if now is None else now
            )

    async def _report_unreported(self, ledgers: Mapping[int, PartitionLedger]) -> None:
        """Tell the tenants' Usage plugins the usage records from the group's committed offset to
        where live settlement will continue (a previous owner may have read them unreported)."""
        assert self.consumer is not None
        use = self.topics.usage.name
        ranges: dict[TopicPartition, tuple[int, int]] = {}
        for p, ledger in ledgers.items():
            tp = TopicPartition(use, p)
            try:
                committed = await self.consumer.committed(tp)
            except Exception:
                log.warning("could not read the committed offset of %s; its usage is not re-reported", tp)
                continue
            if committed is not None and committed < ledger.usage_next:
                ranges[tp] = (committed, ledger.usage_next)
        if not ranges:
            return
        async with range_reader(self.bootstrap, self.client_id) as reader:
            reader.assign(list(ranges))
            async for batch in read_range(reader, ranges):
                for r in batch:
                    if r.key in self._plugin_keys and r.value:
                        await report(self.usage_plugins, r.value)

    # --- live -------------------------------------------------------------------------------

    async def on_usage(self, raw: bytes, record: ConsumerRecord) -> None:
        ledger = self.ledgers.get(record.partition)
        if ledger is None:
            return
        if record.key not in self.keys:
            ledger.usage_next = record.offset + 1
            return
        if not _readable(ledger.apply_usage, raw, record, record.timestamp / 1000):
            ledger.usage_next = record.offset + 1
            return  # the usage sink dead-letters it; the router only reads
        if record.key in self._plugin_keys:
            await report(self.usage_plugins, raw)

    def admit(self, req: Executable, plan: ExecutionPlanned, partition: int) -> Grant | None:
        """The governor's verdict for a request read from ``partition`` (``None``: ungoverned)."""
        if req.tenant_id not in self.governor.tenants:
            return None
        ledger = self.ledgers.get(partition)
        if ledger is None:
            raise InternalError(
                f"the ledger of partition {partition} is not ready (tenant {req.tenant_id!r}"
                " is governed; is the request keyed by tenant?)"
            )
        return self.governor.admit(req, plan, ledger)

    async def write(self, grant: Grant, partition: int) -> asyncio.Future[object] | None:
        """Enqueue the grant's admission record (no ``await`` of the broker here: the caller
        awaits its ack with the plan's)."""
        if grant.record is None:
            return None
        fut = await self.publisher.publish(
            self.topics.admissions.name, grant.record, key=grant.record.tenant_id, partition=partition
        )
        ledger = self.ledgers.get(partition)
        if ledger is not None:
            fut.add_done_callback(lambda f: _acked(f, ledger))
        return fut

    # --- snapshots ----------------------------------------------------------------------------

    async def _snapshots(self) -> None:
        while True:
            await asyncio.sleep(self.snapshot_s)
            try:
                await self.snapshot_now()
            except Exception:
                log.warning("ledger snapshot round failed; the next one retries", exc_info=True)

    async def snapshot_now(self, parts: list[int] | None = None, *, force: bool = False) -> int:
        """Write the snapshots due (all of ``parts``' with ``force``); returns how many, once acked."""
        now = time.time()
        futs = []
        for p in parts if parts is not None else list(self.ledgers):
            ledger = self.ledgers.get(p)
            if ledger is None:
                continue
            for snap in ledger.due(now, 0.0 if force else FULL_SNAPSHOT_S):
                futs.append(
                    await self.publisher.publish(
                        self.topics.ledger.name, snap, key=snap.tenant_id, partition=p
                    )
                )
        await asyncio.gather(*futs)
        return len(futs)


def _acked(fut: asyncio.Future[Any], ledger: PartitionLedger) -> None:
    if not fut.cancelled() and fut.exception() is None:
        ledger.acked(fut.result().offset)


async def rebuild(
    reader: AIOKafkaConsumer, topics: Topics, governor: Governor, parts: set[int], now: float
) -> dict[int, PartitionLedger]:
    """Read the ledgers of ``parts`` with ``reader`` (a started consumer outside any group)."""
    count = topics.requests.partitions
    ledgers = {p: PartitionLedger(p, governor.tenants_of(p, count)) for p in parts}
    snaps = [TopicPartition(topics.ledger.name, p) for p in parts]
    adms = {p: TopicPartition(topics.admissions.name, p) for p in parts}
    uses = {p: TopicPartition(topics.usage.name, p) for p in parts}
    everything = [*snaps, *adms.values(), *uses.values()]
    reader.assign(everything)
    ends: dict[TopicPartition, int] = await reader.end_offsets(everything)
    begins: dict[TopicPartition, int] = await reader.beginning_offsets(everything)

    found: dict[int, list[tuple[int, LedgerSnapshot]]] = {p: [] for p in parts}
    async for batch in read_range(reader, {tp: (begins[tp], ends[tp]) for tp in snaps}):
        for r in batch:
            if r.value is None:
                continue
            try:
                found[r.partition].append((r.offset, LedgerSnapshot.model_validate_json(r.value)))
            except pydantic.ValidationError:
                log.warning(
                    "skipping an unreadable ledger snapshot at %s[%d]@%d", r.topic, r.partition, r.offset
                )
    for p, snapshots in found.items():
        ledgers[p].restore_all(snapshots, now)

    since = {p: int(governor.replay_since(ledgers[p].configs, now) * 1000) for p in parts}
    at = await reader.offsets_for_times({tp: since[p] for d in (adms, uses) for p, tp in d.items()})

    def start(p: int, tp: TopicPartition, covered: Callable[[TenantLedger], int]) -> int:
        found = at.get(tp)
        first: int = found.offset if found is not None else ends[tp]
        tenants = [ledgers[p].tenant(t) for t in ledgers[p].configs]  # (one without a snapshot: from 0)
        return max(first, min((covered(t) for t in tenants if t is not None), default=0), begins[tp])

    async for batch in read_range(
        reader, {adms[p]: (start(p, adms[p], lambda t: t.admissions_from), ends[adms[p]]) for p in parts}
    ):
        for r in batch:
            if r.value:
                _readable(ledgers[r.partition].replay_admission, r.value, r, now)
    keys = {t.encode() for t in governor.tenants}
    async for batch in read_range(
        reader, {uses[p]: (start(p, uses[p], lambda t: t.usage_from), ends[uses[p]]) for p in parts}
    ):
        ledger = ledgers[batch[0].partition]
        replay = functools.partial(ledger.apply_usage, replay=True)
        for r in batch:
            if r.key in keys and r.value:
                _readable(replay, r.value, r, r.timestamp / 1000)
    for p, ledger in ledgers.items():
        ledger.usage_next = ends[uses[p]]
        ledger.admissions_next = ends[adms[p]]
    return ledgers


def _readable(
    apply: Callable[[dict[str, Any], int, float], None], raw: bytes, r: ConsumerRecord, at: float
) -> bool:
    """``apply(doc, offset, at)`` for a record's JSON; a record that is not JSON, not an object,
    or lacks what ``apply`` reads (a field missing, of the wrong type) is skipped with a warning:
    the ledger counts only what it can read, and one bad record never stops a rebuild (the
    usage sink dead-letters bad usage records; the router only reads)."""
    try:
        doc = orjson.loads(raw)
        if not isinstance(doc, dict):
            raise TypeError(f"a JSON {type(doc).__name__}, not an object")
        apply(doc, r.offset, at)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        log.warning(
            "ledger: skipping an unreadable record at %s[%d]@%d (%s: %s)",
            r.topic,
            r.partition,
            r.offset,
            type(exc).__name__,
            exc,
        )
        return False
    return True


async def read_range(
    reader: AIOKafkaConsumer, ranges: dict[TopicPartition, tuple[int, int]], batch: int = 20_000
) -> AsyncIterator[list[ConsumerRecord]]:
    """Every record of each partition in ``[start, end)``, in batches of one partition each, in
    offset order."""
    active = {tp: end for tp, (start, end) in ranges.items() if start < end}
    for tp in active:
        reader.seek(tp, ranges[tp][0])
    while active:
        got = await reader.getmany(*active, timeout_ms=1000, max_records=batch)
        for tp, records in got.items():
            end = active.get(tp)
            if end is None or not records:
                continue
            if records[-1].offset >= end:
                records = [r for r in records if r.offset < end]
            if records:
                yield records
        for tp in list(active):
            if await reader.position(tp) >= active[tp]:
                del active[tp]
