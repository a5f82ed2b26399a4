"""The edge's reads and writes of batches (README "Batches"), mixed into ``EdgeClient``.

Batch records go to the compacted ``llm.batches`` (key ``<tenant>/<batch id>``); the edge reads
them back from a ``BatchesView`` it starts on the first batch call, next to the ``JobsView`` its
job calls start, where its items' job records are. After its own write the edge applies the
record to its view, so a read right after the write answers it; a read first waits until the view
has read everything published before it (another worker's write included).
"""

from __future__ import annotations

import asyncio

from services.client.jobs import JobOperations
from services.contracts.events import BatchUpdated, JobUpdated
from services.runtime.batches import BatchesView, batch_key, item_id

#: Item results read back from FileStorage at once (``result_ref``: a result too large for its record).
_LOADS = 16


class BatchOperations(JobOperations):
    """The batch calls of the edge's pipeline client."""

    _batches_view: BatchesView | None = None
    _batches_lock: asyncio.Lock | None = None

    async def _batches(self) -> BatchesView:
        if self._batches_view is None:
            if self._batches_lock is None:
                self._batches_lock = asyncio.Lock()
            async with self._batches_lock:
                if self._batches_view is None:
                    view = BatchesView(
                        self._bootstrap, self.topics, client_id=f"client-{self.tenant_id}-batches"
                    )
                    await view.start()
                    self._batches_view = view
        return self._batches_view

    async def publish_batch(self, batch: BatchUpdated) -> BatchUpdated:
        """Write ``batch`` (acknowledged) and take it into the view: the view's record of it after."""
        view = await self._batches()
        await (await self._publisher.publish(self.topics.batches.name, batch, key=batch_key(batch)))
        view.apply(batch)
        return view.get(batch.tenant_id, batch.batch_id)

    async def delete_batch(self, batch: BatchUpdated) -> None:
        """Remove the batch's record (a tombstone on ``llm.batches``); every view forgets it."""
        view = await self._batches()
        key = batch_key(batch).encode()
        await (await self._publisher.send_raw(self.topics.batches.name, None, key=key))
        await view.caught_up()  # the tombstone read: this view has forgotten it too

    async def batch(self, tenant_id: str, batch_id: str) -> BatchUpdated:
        """The tenant's batch (``BatchNotFound`` for another tenant's id or none)."""
        view = await self._batches()
        await view.caught_up()
        return view.get(tenant_id, batch_id)

    async def tenant_batches(self, tenant_id: str) -> list[BatchUpdated]:
        """The tenant's batches, newest first."""
        view = await self._batches()
        await view.caught_up()
        return view.batches(tenant_id)

    async def batch_jobs(self, batch: BatchUpdated) -> list[JobUpdated | None]:
        """The job record of each of the batch's items, in input order (None: none yet), each with
        its result inline (one spilled to FileStorage is read back)."""
        view = await self._view()
        await view.caught_up()
        jobs: list[JobUpdated | None] = [
            view.peek(batch.tenant_id, item_id(batch.batch_id, i)) for i in range(batch.counts.total)
        ]
        spilled = [i for i, j in enumerate(jobs) if j is not None and j.result is None and j.result_ref]
        if spilled:
            gate = asyncio.Semaphore(_LOADS)

            async def load(i: int) -> None:
                job = jobs[i]
                assert job is not None
                async with gate:
                    jobs[i] = await self._full(job)

            await asyncio.gather(*(load(i) for i in spilled))
        return jobs

    async def close_batches(self) -> None:
        if self._batches_view is not None:
            await self._batches_view.aclose()
            self._batches_view = None
