"""Batch service: drives every batch from its creation to its end (README "Batches").

The edge creates a batch: its items, one request event per line, in FileStorage
(``requests_key``), and a ``validating`` record on ``llm.batches``. This service then owns it:

* ``validating`` -> ``in_progress``, choosing the path: **provider** when every line names one
  alias whose first deployment's provider has ``batch_api`` (and, for embeddings, is of the
  ``openai`` kind): one ``batch.run`` request (``BatchRunRequested``) goes to ``llm.requests`` and
  the executor sends the batch to that provider's batch API; else **requests**: the items go to
  ``llm.requests`` themselves, as ordinary job requests (each admitted, limited and billed by the
  router like any request, at the batch discount), at most ``batches.max_in_flight`` of a batch
  and ``batches.max_in_flight_total`` of every batch at once, so interactive requests never wait
  behind more than that many batch items.
* Each item's outcome is read from its own job record on ``llm.jobs`` (``ItemsTable``); the counts
  are written to ``llm.batches`` at most every ``batches.progress_interval_s``.
* Every item ended: ``finalizing`` -> ``completed``. A cancel (``cancelling``, written by the
  edge) stops what has not started (the provider path cancels the run) and ends ``cancelled`` once
  the items running have ended; past ``expires_at`` nothing more starts and the batch ends
  ``expired``. Items that never ran count as ``canceled`` / ``expired``.

Ownership: the group ``llmgw-batches`` on ``llm.batches``; an instance drives the batches of the
partitions it is assigned. State: ``BatchesView`` (``llm.batches``) and ``ItemsTable``
(``llm.jobs``), both rebuilt from those compacted topics at start; the items' lines are read
again from FileStorage. After a restart, items that were sent but have no job record yet are sent
again (at most the in-flight bound): the router counts a request id once and the executor runs
it once, so a resent item is a redelivery, not a second item.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka.structs import ConsumerRecord, TopicPartition
from pydantic import TypeAdapter

from services.contracts.events import (
    MEDIA_PART_TYPES,
    AnyRequest,
    BatchLineError,
    BatchRunRequested,
    BatchUpdated,
    CancelRequested,
    ErrorInfo,
    carries_media,
    utcnow,
)
from services.runtime.batches import (
    TERMINAL_BATCH_STATES,
    BatchesView,
    batch_key,
    foreign_item,
    moved,
    run_id,
)
from services.runtime.config import GatewayConfig, load_config
from services.runtime.jobs import job_key, job_state
from services.runtime.kafka import Consumer, DeadLetters, Publisher, Subscription
from services.runtime.media.storage import FileStorage, S3FileStorage
from services.runtime.service import mark_ready
from services.runtime.settings import Settings
from services.runtime.topics import Topics, apply_topics

from .items import STARTED, ItemsTable

log = logging.getLogger(__name__)
GROUP = "llmgw-batches"
#: The longest the driver sleeps with nothing to do (expiry and progress are checked this often).
TICK_S = 0.5
REQUEST: TypeAdapter[AnyRequest] = TypeAdapter(AnyRequest)
#: A provider batch's cancel is sent again this often until its run has ended (``llm.control``
#: is read live: an executor that was not running when it was sent never saw it).
CANCEL_RESEND_S = 15.0
RUN_ENDED = frozenset({"completed", "failed", "cancelled"})


class ForeignLine(ValueError):
    """A line of a batch's items that is not that batch's own (another tenant's, another batch's)."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


@dataclass
class Drive:
    """What this instance remembers of a batch it drives (lost on restart, then rebuilt)."""

    lines: list[bytes] | None = None  # the items' request events, by index
    sent: set[int] = field(default_factory=set)  # sent and not yet seen on llm.jobs
    cursor: int = 0  # every index below it has been sent or has a record
    run_sent: bool = False
    cancel_sent_at: float | None = None  # monotonic
    written_at: float = 0.0  # when its counts were last written (monotonic)


def choose_path(config: GatewayConfig, batch: BatchUpdated, lines: Sequence[bytes] = ()) -> str:
    """``provider`` when the batch can go whole to its alias's provider's batch API: one alias
    first served by a provider with ``batch_api`` (of the ``openai`` kind for embeddings), and
    nothing the provider path would skip: the tenant's pre-call hooks (they see every item on the
    requests path) and media parts (the media-store resolves them on the requests path)."""
    tenant = config.tenants.get(batch.tenant_id)
    if tenant is not None and tenant.hooks:
        return "requests"
    model = config.models.get(batch.model or "")
    if model is None:
        return "requests"
    provider = config.providers.get(model.deployments[0].provider)
    if provider is None or not provider.batch_api:
        return "requests"
    if batch.endpoint == "/v1/embeddings" and provider.kind != "openai":
        return "requests"
    if provider.kind not in ("openai", "anthropic"):
        return "requests"
    if any(_has_media(line) for line in lines):
        return "requests"
    return "provider"


def _has_media(line: bytes) -> bool:
    if not any(f'"{t}"'.encode() in line for t in MEDIA_PART_TYPES):
        return False  # most lines: no part type named at all, nothing to parse
    return carries_media(REQUEST.validate_json(line))


class BatchService:
    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        config: GatewayConfig | None = None,
        storage: FileStorage | None = None,
    ):
        self.settings = rt = settings
        self.topics = topics
        self.config = config or load_config(rt.config_path, rt.env)
        self.limits = self.config.batches
        self.storage: FileStorage = storage or S3FileStorage(self.config.media.bucket, endpoint_url=rt.s3_url)
        cid = f"batches-{rt.instance_id}"
        self.publisher = Publisher(rt.bootstrap_servers, client_id=cid)
        self._wake = asyncio.Event()
        self.view = BatchesView(
            rt.bootstrap_servers, topics, client_id=f"{cid}-view", on_change=lambda b, p: self._wake.set()
        )
        self.items = ItemsTable(
            rt.bootstrap_servers, topics, client_id=f"{cid}-items", on_change=lambda t, b: self._wake.set()
        )
        self.owner: Consumer[BatchUpdated] = Consumer(
            bootstrap_servers=rt.bootstrap_servers,
            group_id=rt.topic_prefix + GROUP,
            dead_letters=DeadLetters(self.publisher, topics.dlq.name, "batches"),
            subscriptions={
                topics.batches.name: Subscription.of(BatchUpdated, self._owned, name="BatchUpdated")
            },
            on_assigned=lambda tps: self._wake.set(),
            on_revoked=self._revoked,
            client_id=cid,
        )
        self._drives: dict[tuple[str, str], Drive] = {}
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await apply_topics(self.settings.bootstrap_servers, self.topics, create=False)
        await self.storage.start()
        await self.publisher.start()
        await self.view.start()
        await self.items.start()
        await self.owner.start()
        self._task = asyncio.create_task(self._run(), name="batches-driver")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.owner.aclose()
        await self.items.aclose()
        await self.view.aclose()
        await self.publisher.aclose()
        await self.storage.aclose()

    async def _owned(self, batch: BatchUpdated, record: ConsumerRecord | None) -> None:
        """The group's records are read only to hold the partitions; the view has the state."""
        self._wake.set()

    async def _revoked(self, tps: set[TopicPartition]) -> None:
        lost = {tp.partition for tp in tps if tp.topic == self.topics.batches.name}
        for key in [k for k in self._drives if self.view.partition_of.get(k) in lost]:
            del self._drives[key]

    def owned(self) -> set[int]:
        name = self.topics.batches.name
        return {tp.partition for tp in self.owner.assignment() if tp.topic == name}

    # --- the driver -------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_S):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad pass must not stop every batch: the next pass retries
                log.exception("batch driver pass failed")
                await asyncio.sleep(TICK_S)

    async def tick(self) -> None:
        owned = self.owned()
        live = [
            b
            for b in self.view.batches()
            if b.status not in TERMINAL_BATCH_STATES
            and self.view.partition_of.get((b.tenant_id, b.batch_id)) in owned
        ]
        live.sort(key=lambda b: b.created_at)  # the oldest batch takes free capacity first
        for batch in live:
            await self.drive(batch)

    def _in_flight_total(self) -> int:
        return sum(len(d.sent) + self._running(k) for k, d in self._drives.items())

    def _running(self, key: tuple[str, str]) -> int:
        return self.items.of(*key).running

    async def drive(self, batch: BatchUpdated) -> None:
        key = (batch.tenant_id, batch.batch_id)
        d = self._drives.setdefault(key, Drive())
        items = self.items.of(*key)
        for i in [i for i in d.sent if i in items.states]:
            d.sent.discard(i)
        if batch.status == "finalizing":
            await self.write(moved(batch, "completed", counts=items.counts(batch.counts.total)))
            return
        try:
            if batch.status == "validating":
                path = choose_path(self.config, batch, await self._lines(batch, d))
                await self.write(moved(batch, "in_progress", path=path))
                return
            expired = batch.status == "in_progress" and utcnow() >= batch.expires_at
            if batch.path == "provider":
                await self._drive_run(batch, d, expired)
            else:
                await self._drive_requests(batch, d, expired)
        except ForeignLine as exc:  # none of its lines is sent
            log.error("batch %s: %s", batch.batch_id, exc)
            if batch.status == "validating":
                error = BatchLineError(code="invalid_request", message=str(exc), line=exc.index + 1)
                await self.write(moved(batch, "failed", errors=[error]))

    async def _drive_requests(self, batch: BatchUpdated, d: Drive, expired: bool) -> None:
        key = (batch.tenant_id, batch.batch_id)
        items = self.items.of(*key)
        total = batch.counts.total
        stopping = batch.status == "cancelling" or expired
        if not stopping:
            await self._submit(batch, d)
        if items.ended == total and batch.status == "in_progress":
            await self.write(moved(batch, "finalizing", counts=items.counts(total)))
            return
        if stopping and not d.sent and items.running == 0:  # what ran has ended; the rest never will
            if batch.status == "cancelling":
                await self.write(moved(batch, "cancelled", counts=items.counts(total, "canceled")))
            else:
                await self.write(moved(batch, "expired", counts=items.counts(total, "expired")))
            return
        await self._progress(batch, d)

    async def _submit(self, batch: BatchUpdated, d: Drive) -> None:
        key = (batch.tenant_id, batch.batch_id)
        items = self.items.of(*key)
        room = min(
            self.limits.max_in_flight - len(d.sent) - items.running,
            self.limits.max_in_flight_total - self._in_flight_total(),
        )
        if room <= 0:
            return
        lines = await self._lines(batch, d)
        acks = []
        tenant = batch.tenant_id.encode()
        while room > 0 and d.cursor < len(lines):
            i = d.cursor
            d.cursor += 1
            if i in items.states or i in d.sent:
                continue
            d.sent.add(i)
            room -= 1
            acks.append(await self.publisher.send_raw(self.topics.requests.name, lines[i], key=tenant))
        for ack in acks:
            await ack

    async def _lines(self, batch: BatchUpdated, d: Drive) -> list[bytes]:
        if d.lines is None:
            data = await self.storage.get(batch.requests_key)
            lines = [ln for ln in data.split(b"\n") if ln.strip()]
            for i, line in enumerate(lines):  # each is this batch's own line, or none is sent
                problem = foreign_item(REQUEST.validate_json(line), batch.tenant_id, batch.batch_id, i)
                if problem is not None:
                    raise ForeignLine(i, f"line {i} of {batch.requests_key} {problem}")
            if len(lines) != batch.counts.total:
                log.warning(
                    "batch %s: %d lines in %s, %d counted",
                    batch.batch_id,
                    len(lines),
                    batch.requests_key,
                    batch.counts.total,
                )
            d.lines = lines
        return d.lines

    async def _drive_run(self, batch: BatchUpdated, d: Drive, expired: bool) -> None:
        key = (batch.tenant_id, batch.batch_id)
        items = self.items.of(*key)
        total = batch.counts.total
        rid = run_id(batch.batch_id)
        if items.run_status is None and not d.run_sent and batch.status == "in_progress":
            run = BatchRunRequested(
                request_id=rid,
                tenant_id=batch.tenant_id,
                user_id=batch.user_id,
                model=batch.model or "",
                batch_id=batch.batch_id,
                endpoint=batch.endpoint,
                requests_key=batch.requests_key,
                total=total,
                prompt_tokens=batch.prompt_tokens,
                max_output_tokens=batch.max_output_tokens,
                job=True,
                api_key=batch.api_key,
            )
            await (await self.publisher.publish(self.topics.requests.name, run, key=batch.tenant_id))
            d.run_sent = True
            if batch.run_id is None:
                await self.write(batch.model_copy(update={"run_id": rid, "occurred_at": utcnow()}))
            return
        resend = d.cancel_sent_at is None or time.monotonic() - d.cancel_sent_at >= CANCEL_RESEND_S
        if (batch.status == "cancelling" or expired) and resend and items.run_status not in RUN_ENDED:
            cancel = CancelRequested(
                request_id=rid,
                tenant_id=batch.tenant_id,
                user_id=batch.user_id,
                reason="batch_expired" if expired else "batch_cancelled",
            )
            await (await self.publisher.publish(self.topics.control.name, cancel, key=rid))
            d.cancel_sent_at = time.monotonic()
        run_ended = items.run_status in RUN_ENDED
        if items.ended == total and batch.status == "in_progress":
            await self.write(moved(batch, "finalizing", counts=items.counts(total)))
            return
        if run_ended:
            if items.run_status == "failed" and items.ended < total and batch.status == "in_progress":
                await self._fail_rest(batch, d, items.run_error)
                return
            if batch.status == "cancelling":
                await self.write(moved(batch, "cancelled", counts=items.counts(total, "canceled")))
                return
            if expired:
                await self.write(moved(batch, "expired", counts=items.counts(total, "expired")))
                return
            if items.ended == total:
                await self.write(moved(batch, "finalizing", counts=items.counts(total)))
                return
        await self._progress(batch, d)

    async def _fail_rest(self, batch: BatchUpdated, d: Drive, error: ErrorInfo | None) -> None:
        """The run failed before every item had an outcome: each item left errors with its error,
        as its own job record (so the results show why)."""
        items = self.items.of(batch.tenant_id, batch.batch_id)
        err = error or ErrorInfo(code="provider_error", message="the provider's batch failed")
        acks = []
        for i, raw in enumerate(await self._lines(batch, d)):
            if items.states.get(i, STARTED) != STARTED:
                continue
            req = REQUEST.validate_json(raw)
            state = job_state(req, "failed", error=err)
            acks.append(await self.publisher.publish(self.topics.jobs.name, state, key=job_key(state)))
        for ack in acks:
            await ack

    async def _progress(self, batch: BatchUpdated, d: Drive) -> None:
        """The counts, when they moved, at most every ``progress_interval_s``."""
        items = self.items.of(batch.tenant_id, batch.batch_id)
        if items.ended <= _ended(batch):
            return
        now = time.monotonic()
        wait = self.limits.progress_interval_s - (now - d.written_at)
        if wait > 0:
            self._wake_later(wait)
            return
        d.written_at = now
        await self.write(
            batch.model_copy(update={"counts": items.counts(batch.counts.total), "occurred_at": utcnow()})
        )

    def _wake_later(self, delay_s: float) -> None:
        asyncio.get_running_loop().call_later(max(delay_s, 0.01), self._wake.set)

    async def write(self, batch: BatchUpdated) -> None:
        """Publish a batch's new record and take it into the view at once (the driver's next pass
        must not act on the old one)."""
        await (await self.publisher.publish(self.topics.batches.name, batch, key=batch_key(batch)))
        self.view.apply(batch)
        if batch.status in TERMINAL_BATCH_STATES:
            self._drives.pop((batch.tenant_id, batch.batch_id), None)
            log.info("batch %s %s: %s", batch.batch_id, batch.status, batch.counts.model_dump())


def _ended(batch: BatchUpdated) -> int:
    c = batch.counts
    return c.succeeded + c.errored + c.canceled + c.expired


async def serve(settings: Settings) -> None:
    topics = Topics.load(settings.topics_path, settings.topic_prefix)
    service = BatchService(settings, topics, load_config(settings.config_path, settings.env))
    await service.start()
    mark_ready("batches", settings)
    try:
        await asyncio.Event().wait()
    finally:
        await service.aclose()
