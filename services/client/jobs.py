"""The job calls of ``GatewayClient`` (README "Jobs"): ``submit`` a request as a job and hold its
id; ``get_job``, ``wait_job``, ``cancel_job`` and ``jobs`` read and steer it.

Reads come from a ``JobsView`` of ``llm.jobs`` this client starts on its first read (it reads the
compacted topic whole, then follows it). A client reads only its own tenant's jobs: another
tenant's id is ``job_not_found``; a job finished longer ago than ``job_retention_s`` (the
gateway's ``jobs.retention``, 24 h) is ``job_expired``. A result too large to ride in its record
(``result_ref``) is read back from FileStorage: ``get_job`` and ``wait_job`` answer it whole.
"""

from __future__ import annotations

import asyncio

from services.contracts.events import TERMINAL_JOB_STATES, CancelRequested, JobUpdated, RequestBase
from services.runtime.job_results import with_result
from services.runtime.jobs import DEFAULT_RETENTION_S, JobsView, job_key, job_state
from services.runtime.kafka import Publisher
from services.runtime.media.storage import FileStorage
from services.runtime.topics import Topics

from .media import ref_bytes


class JobOperations:
    tenant_id: str
    timeout_s: float
    topics: Topics
    storage: FileStorage | None
    _publisher: Publisher
    _bootstrap: str
    job_retention_s: float = DEFAULT_RETENTION_S
    _jobs_view: JobsView | None = None
    _jobs_lock: asyncio.Lock | None = None

    async def submit(self, req: RequestBase) -> str:
        """Publish ``req`` as a job (``job: true``, no reply wanted): its id, once the broker has it."""
        job = req.model_copy(update={"job": True, "reply_to": None, "stream": False})
        # its pending record first, acknowledged, then the request: a get_job right after submit
        # finds the job, and no later state of it can land before this one (``llm.jobs`` keeps
        # the newest record of a key; records of other topics are not ordered with it)
        pending = job_state(job, "pending")
        await (await self._publisher.publish(self.topics.jobs.name, pending, key=job_key(pending)))
        await (await self._publisher.publish(self.topics.requests.name, job, key=job.tenant_id))
        return job.request_id

    async def _view(self) -> JobsView:
        if self._jobs_view is None:
            if self._jobs_lock is None:
                self._jobs_lock = asyncio.Lock()
            async with self._jobs_lock:
                if self._jobs_view is None:
                    view = JobsView(
                        self._bootstrap,
                        self.topics,
                        retention_s=self.job_retention_s,
                        client_id=f"client-{self.tenant_id}-jobs",
                    )
                    await view.start()
                    self._jobs_view = view
        return self._jobs_view

    async def _full(self, job: JobUpdated) -> JobUpdated:
        """``job`` with its result inline: one stored in FileStorage (``result_ref``, a large
        result) is read back, by key with this client's ``storage``, else by its presigned URL."""
        ref = job.result_ref
        if job.result is not None or ref is None:
            return job
        if ref.key and self.storage is not None:
            body = await self.storage.get(ref.key)
        else:
            body = await ref_bytes(ref, storage=None, timeout_s=self.timeout_s)
        return with_result(job, body)

    async def get_job(self, job_id: str) -> JobUpdated:
        """The job's state now (what ``llm.jobs`` held when asked: a read of one's own writes)."""
        return await self.job(self.tenant_id, job_id)

    async def job(self, tenant_id: str, job_id: str) -> JobUpdated:
        """``get_job`` for ``tenant_id`` (the edge asks for its callers' tenants)."""
        view = await self._view()
        await view.caught_up()
        return await self._full(view.get(tenant_id, job_id))

    async def wait_job(self, job_id: str, timeout_s: float | None = None) -> JobUpdated:
        """The job once it has ended (``completed``, ``failed`` or ``cancelled``)."""
        view = await self._view()
        done = await view.wait(self.tenant_id, job_id, self.timeout_s if timeout_s is None else timeout_s)
        return await self._full(done)

    async def cancel_job(self, job_id: str) -> JobUpdated:
        """Stop the job (``llm.control``): a pending one never runs, a running one's provider call
        stops; it ends ``cancelled``. Cancelling an ended job changes nothing. Its state now.
        Another tenant's job: ``job_not_found`` (``submit`` wrote the job's pending record before
        its request, so a job just submitted is known)."""
        return await self.cancel_job_of(self.tenant_id, job_id)

    async def cancel_job_of(self, tenant_id: str, job_id: str) -> JobUpdated:
        job = await self.job(tenant_id, job_id)
        if job.status not in TERMINAL_JOB_STATES:
            event = CancelRequested(request_id=job_id, tenant_id=tenant_id, reason="job_cancelled")
            await (await self._publisher.publish(self.topics.control.name, event, key=job_id))
        return job

    async def jobs(self, status: str | None = None) -> list[JobUpdated]:
        """This tenant's jobs, oldest first (of one ``status`` when given)."""
        view = await self._view()
        await view.caught_up()
        return view.jobs(self.tenant_id, status)

    async def close_jobs(self) -> None:
        if self._jobs_view is not None:
            await self._jobs_view.aclose()
            self._jobs_view = None
