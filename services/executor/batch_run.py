"""Running ``batch.run`` plans: a batch sent whole to its provider's own batch API (README
"Batches", the provider path), like a video (``video.py``): submitted once, then polled.

The call reads the items from FileStorage (``requests_key``: one request event per line,
``batch_items.parse_items``), submits them as one provider batch (the bodies single calls would
send: ``providers/openai_batches.py``, ``providers/anthropic_batches.py``), records the provider's
batch on the run's job record (``running``, ``provider_job``; acknowledged before polling
starts), and polls it on the provider's hints (``polling.PollSchedule``, ``jobs.poll_*``; 429 /
503 and lost connections waited out) until it has ended, bounded only by the plan's total
deadline (the router gives a run its completion window and more: a 24 h batch is not cut short
by ``total_ms`` or ``jobs.poll_deadline_s``). A cancel of the run (``CancelRequested`` of its
request id) does not stop the call: it cancels the provider's batch, and polling goes on until
that has ended (the lines it stopped end ``cancelled``; ``failed`` with ``batch_expired`` when
the cancel's reason is ``batch_expired``: the batch service's completion window passed). Then
every item gets its terminal job record, its usage record and its audit record
(``batch_items.item_records``), and the run ends with its own outcome (``cancelled`` after a
cancel) and a usage record of no tokens and no cost, which settles the router's reservation
for the run: the items' records carry what is billed, once each.

Exactly once, across restarts:

* **Submitted once.** A run again after a restart (its plan redelivered) finds its provider batch
  on ``llm.jobs`` (the executor's ``JobsView``) and polls it; OpenAI's batches also carry the run's
  id (``metadata.llmgw_run``), so one created just before a crash, unrecorded, is found and adopted.
* **Billed once.** Before the first item's records, the run's job record says when emitting
  began (``provider_job.emitting_since``). A run that finds that mark skips the items whose job
  record is already terminal on ``llm.jobs`` and the items whose usage record is already on
  ``llm.usage`` (read back from that time on), so a re-emitted batch publishes only what is
  missing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from services.contracts.errors import Cancelled, GatewayError, ProviderError, ProviderTimeout
from services.contracts.events import (
    TERMINAL_JOB_STATES,
    BatchRunRequested,
    ExecutionPlanned,
    JobUpdated,
    Usage,
    utcnow,
)
from services.runtime.audit import audit_content
from services.runtime.config import GatewayConfig
from services.runtime.job_results import spill
from services.runtime.jobs import JobsView, job_key, job_state
from services.runtime.kafka import Publisher
from services.runtime.topics import Topics

from .attempts import Final, Until
from .batch_billed import billed_items
from .batch_items import item_records, parse_items
from .handlers import Outcome, QuietCall, SecretLookup
from .media import MediaIO
from .polling import PollSchedule
from .providers.batch_base import BUSY_STATUSES, BatchApiAdapter, BatchLine, LineResult, ProviderBatch
from .providers.registry import adapter_for
from .providers.transport import HttpTransport
from .targets import Target

log = logging.getLogger(__name__)
#: How far before ``emitting_since`` the usage read-back starts (clock skew between hosts, s).
SKEW_S = 60.0
#: Items whose records are enqueued before their acks are awaited.
ACK_EVERY = 500
#: The reason of the cancel the batch service sends when a batch's completion window has passed.
EXPIRED = "batch_expired"


class BatchRunner:
    def __init__(
        self,
        *,
        http: HttpTransport,
        secret: SecretLookup,
        publisher: Publisher,
        topics: Topics,
        jobs: JobsView,
        config: GatewayConfig,
        media: MediaIO,
        bootstrap_servers: str,
        client_id: str,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        exit_mid_batch: str | None = None,
    ):
        self.exit_mid_batch = exit_mid_batch  # a test's fault point (``ExecutorSettings``)
        self.http, self.secret, self.publisher, self.topics = http, secret, publisher, topics
        self.jobs, self.config, self.media = jobs, config, media
        self.bootstrap, self.client_id = bootstrap_servers, client_id
        self.sleep = sleep  # between polls (tests record the waits)

    async def billed(self, req: BatchRunRequested, since: datetime) -> set[str]:
        """The ids of ``req``'s batch's items with a usage record on ``llm.usage`` from
        ``since`` (less ``SKEW_S``) to its end now (``batch_billed.billed_items``)."""
        return await billed_items(
            self.bootstrap, self.client_id, self.topics, req, since - timedelta(seconds=SKEW_S)
        )

    def start(self, plan: ExecutionPlanned) -> BatchRunCall:
        assert isinstance(plan.request, BatchRunRequested)
        return BatchRunCall(self, plan)


class BatchRunCall(QuietCall):
    """The provider calls of one ``batch.run`` plan (``attempts.Call``); ``cancel_at_provider``
    is the run's cancel (``app.Executor.cancel`` calls it instead of cancelling the task)."""

    def __init__(self, runner: BatchRunner, plan: ExecutionPlanned):
        self._runner, self._plan = runner, plan
        req = plan.request
        assert isinstance(req, BatchRunRequested)
        self._req = req
        self._items: list[BatchLine] | None = None
        self._job: dict[str, Any] | None = None  # the provider job, as last recorded
        self._cancel = asyncio.Event()
        self._cancel_reason: str | None = None
        self._emitted: set[str] = set()  # item ids whose records this process published

    # --- cancel ------------------------------------------------------------------------

    def cancel_at_provider(self, reason: str) -> None:
        """The run's cancel: the provider's batch is cancelled, and polled until it has ended."""
        if self._cancel_reason is None:
            self._cancel_reason = reason or "cancelled"
            self._cancel.set()

    # --- the call ----------------------------------------------------------------------

    async def __call__(self, target: Target, fallback_from: Target | None, until: Until) -> Outcome:
        r, req = self._runner, self._req
        adapter: BatchApiAdapter = adapter_for(target.kind, "batch.run")
        key = r.secret(target.api_key_env)
        t0 = time.perf_counter()
        known = r.jobs.peek(req.tenant_id, req.request_id)
        if known is not None and known.status in TERMINAL_JOB_STATES:
            # the run ended before (its plan redelivered past its llm.finished marker): nothing is
            # sent again; its outcome is published again, which every reader takes once
            log.warning("batch run %s already ended %s; not run again", req.request_id, known.status)
            return self._outcome(target, t0)
        items = await self._read_items()
        batch = await self._resumed(adapter, target, key)
        if batch is None:
            if self._cancel.is_set() or (self._job or {}).get("never_submitted"):
                # cancelled before anything was sent: no item ran
                self._cancel_reason = self._cancel_reason or "cancelled"
                never = [LineResult(str(i.batch.index), "canceled") for i in items if i.batch is not None]
                await self._emit(items, never, target, ProviderBatch(id="", status="cancelled"), 0.0)
                return self._outcome(target, t0)
            batch = await self._bounded(
                target, adapter.submit(r.http, items, target, key, req.endpoint, req.request_id)
            )
            await self._record(target, batch)
        batch = await self._until_ended(adapter, batch, target, key)
        if batch.failed:  # the provider refused the whole batch: no item ran
            raise Final(
                ProviderError(
                    f"{target.provider}: batch {batch.id} failed: {batch.error or 'no reason given'}",
                    details={"upstream_status": None, "provider_job": batch.id},
                )
            )
        lines = await self._patiently(target, lambda: adapter.results(r.http, batch, target, key))
        await self._emit(items, lines, target, batch, (time.perf_counter() - t0) * 1000)
        return self._outcome(target, t0)

    def _outcome(self, target: Target, t0: float) -> Outcome:
        error = Cancelled(f"batch run {self._req.request_id} was cancelled") if self._cancel_reason else None
        ms = (time.perf_counter() - t0) * 1000
        return Outcome(Usage(), target, target.upstream_model, provider_ms=ms, error=error)

    async def _read_items(self) -> list[BatchLine]:
        if self._items is None:
            storage = await self._runner.media.storage()
            self._items = parse_items(await storage.get(self._req.requests_key), self._req)
        return self._items

    # --- the provider's batch ------------------------------------------------------------

    async def _resumed(
        self, adapter: BatchApiAdapter, target: Target, key: str | None
    ) -> ProviderBatch | None:
        """The provider batch this run already created at ``target``: recorded on ``llm.jobs``
        (or by this call), else one the provider can tell was this run's."""
        r, req = self._runner, self._req
        if self._job is None:
            known = r.jobs.peek(req.tenant_id, req.request_id)
            pj = known.provider_job if known is not None else None
            if pj and pj.get("deployment") == target.label and isinstance(pj.get("id"), str):
                self._job = dict(pj)
                if isinstance(pj.get("cancel_reason"), str):  # cancelled before the restart
                    self._cancel_reason = self._cancel_reason or pj["cancel_reason"]
        if self._job is not None and self._job.get("never_submitted"):
            return None
        if self._job is not None and self._job.get("deployment") == target.label and self._job.get("id"):
            batch_id = str(self._job["id"])
            polled: ProviderBatch = await self._patiently(
                target, functools.partial(adapter.poll, r.http, batch_id, target, key)
            )
            # the newest record of the run names its provider batch again: the executor's own
            # ``running`` record of this run (which names none) may be all compaction leaves
            await self._record(target, polled)
            return polled
        found: ProviderBatch | None = await self._bounded(
            target, adapter.find(r.http, target, key, req.request_id)
        )
        if found is not None:
            log.warning(
                "batch run %s: adopting provider batch %s (created, not recorded)", req.request_id, found.id
            )
            await self._record(target, found)
        return found

    async def _record(self, target: Target, batch: ProviderBatch, **extra: Any) -> None:
        """The run's ``running`` record naming its provider batch (acknowledged)."""
        r, req = self._runner, self._req
        job = {
            **(self._job or {}),
            "deployment": target.label,
            "provider": target.provider,
            "kind": target.kind,
            "id": batch.id,
            **extra,
        }
        self._job = job
        progress = batch.done / batch.total if batch.total else None
        state = job_state(req, "running").model_copy(
            update={"provider_job": job, "progress": min(progress, 1.0) if progress is not None else None}
        )
        await (await r.publisher.publish(r.topics.jobs.name, state, key=job_key(state)))

    async def _until_ended(
        self, adapter: BatchApiAdapter, batch: ProviderBatch, target: Target, key: str | None
    ) -> ProviderBatch:
        """Poll until the provider's batch has ended; a cancel meanwhile cancels it there first."""
        r = self._runner
        schedule = PollSchedule.of(r.config.jobs)
        cancelled_there = bool(self._job and self._job.get("cancel_requested"))
        last = (batch.status, batch.done)
        while not batch.ended:
            if self._cancel.is_set() and not cancelled_there:
                batch = await self._cancel_there(adapter, batch, target, key)
                cancelled_there = True
                continue
            wait = schedule.after(
                progressed=(batch.status, batch.done) != last, retry_after_s=batch.retry_after_s
            )
            last = (batch.status, batch.done)
            await self._wait(wait, cancelled_there)
            batch = await self._patiently(
                target, functools.partial(adapter.poll, r.http, batch.id, target, key)
            )
            if batch.done != last[1]:
                await self._record(target, batch)
        return batch

    async def _cancel_there(
        self, adapter: BatchApiAdapter, batch: ProviderBatch, target: Target, key: str | None
    ) -> ProviderBatch:
        """Cancel the provider's batch (one that ended meanwhile cannot be: polled instead)."""
        r = self._runner
        try:
            batch = await self._patiently(target, lambda: adapter.cancel(r.http, batch.id, target, key))
        except GatewayError as err:
            log.warning(
                "batch run %s: the provider refused the cancel (%s)", self._req.request_id, err.message
            )
            batch = await self._patiently(target, lambda: adapter.poll(r.http, batch.id, target, key))
        await self._record(target, batch, cancel_requested=True, cancel_reason=self._cancel_reason)
        return batch

    async def _wait(self, seconds: float, cancelled_there: bool) -> None:
        """Sleep ``seconds``; a cancel not yet sent to the provider ends the wait at once."""
        if cancelled_there or self._cancel.is_set():
            await self._runner.sleep(seconds)
            return
        sleeping = asyncio.ensure_future(self._runner.sleep(seconds))
        cancelled = asyncio.ensure_future(self._cancel.wait())
        try:
            await asyncio.wait([sleeping, cancelled], return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            cancelled.cancel()

    async def _bounded(self, target: Target, call: Awaitable[Any]) -> Any:
        """One provider call, within the provider's ``timeout_s``."""
        try:
            async with asyncio.timeout(target.timeout_s):
                return await call
        except TimeoutError:
            raise ProviderTimeout(
                f"{target.provider}: no answer within the provider's timeout_s={target.timeout_s:g}",
                details={"upstream_status": None},
            ) from None

    async def _patiently(self, target: Target, call: Callable[[], Awaitable[Any]]) -> Any:
        """``call()`` until it answers: a refusal that means "not now" (429, 503, 5xx, a lost
        connection, a timeout) is waited out on the provider's hint and tried again, for as
        long as the run's deadline allows; a verdict (4xx) is raised."""
        schedule = PollSchedule.of(self._runner.config.jobs)
        while True:
            try:
                return await self._bounded(target, call())
            except (ProviderError, ProviderTimeout) as err:
                status = err.details.get("upstream_status")
                if not err.retryable and status not in BUSY_STATUSES:
                    raise
                hint = err.details.get("retry_after_ms")
                log.info("batch run %s: %s; trying again", self._req.request_id, err.message)
                wait = schedule.after(
                    progressed=False, retry_after_s=hint / 1000 if isinstance(hint, int | float) else None
                )
                await self._runner.sleep(wait)

    # --- the items' records ----------------------------------------------------------------

    async def _emit(
        self,
        items: list[BatchLine],
        lines: list[LineResult],
        target: Target,
        batch: ProviderBatch,
        total_ms: float,
    ) -> None:
        """Each item's job, usage and audit records, skipping what an earlier run published."""
        r, req = self._runner, self._req
        since = (self._job or {}).get("emitting_since")
        billed: set[str] = set()
        if isinstance(since, str):  # an earlier run began emitting: read back what it billed
            billed = await r.billed(req, datetime.fromisoformat(since))
        else:
            mark: dict[str, Any] = {"emitting_since": utcnow().isoformat()}
            if not batch.id:
                mark["never_submitted"] = True
            await self._record(target, batch, **mark)
        if self._cancel_reason == EXPIRED:  # the batch service's window passed: what never ran expired
            lines = [replace(line, kind="expired") if line.kind == "canceled" else line for line in lines]
        by_id = {line.custom_id: line for line in lines}
        storage = await r.media.storage()
        limit = r.config.jobs.result_inline_max_bytes
        if limit is None:
            limit = r.config.media.inline_max_bytes
        acks: list[asyncio.Future[object]] = []
        skipped = 0
        for item in items:
            rid = item.request_id
            known = r.jobs.peek(item.tenant_id, rid)
            ended = rid in self._emitted or (known is not None and known.status in TERMINAL_JOB_STATES)
            bill = rid not in billed and rid not in self._emitted
            if ended and not bill:
                skipped += 1
                continue
            assert item.batch is not None
            records = item_records(
                item,
                by_id.get(str(item.batch.index)),
                target,
                total_ms=total_ms,
                content=audit_content(r.config, item),
            )
            job: JobUpdated | None = None
            if not ended:
                job = await spill(records.job, storage, limit, r.config.media.url_expiry_s)
            # the item's records are enqueued back to back: one produce request
            if job is not None:
                acks.append(await r.publisher.publish(r.topics.jobs.name, job, key=job_key(job)))
                acks.append(await r.publisher.publish(r.topics.audit.name, records.audit, key=item.tenant_id))
            if bill:
                acks.append(await r.publisher.publish(r.topics.usage.name, records.usage, key=item.tenant_id))
            self._emitted.add(rid)
            if len(acks) >= ACK_EVERY:
                await asyncio.gather(*acks)
                acks = []
                if r.exit_mid_batch == req.request_id and len(self._emitted) * 2 >= len(items):
                    log.warning("LLMGW_FAULT_EXIT_MID_BATCH: exiting mid-way through %s", req.request_id)
                    os._exit(137)
        await asyncio.gather(*acks)
        if skipped:
            log.warning("batch run %s: %d items already had their records", req.request_id, skipped)
