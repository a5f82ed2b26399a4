"""Asynchronous jobs (README "Jobs"): the state records writers send to ``llm.jobs``, and the
view readers keep of them.

A job is a request with ``job: true``; its id is the request id. Its state is the newest record
of its key on the compacted ``llm.jobs``: ``pending`` (the router admitted it), ``running`` (an
executor took it up), then ``completed`` (with the result), ``failed`` (with the error) or
``cancelled``. States only move forward: a writer replaying an older state (a redelivered plan
run again after a restart) is ignored by every view, so a job ends once.

``JobsView`` is a reader's table of the jobs, rebuilt from the whole compacted topic at start
(``start()`` returns once it has read what the topic held) and then followed: the edge and the
SDK answer ``get_job`` / ``wait_job`` from it. State: that table, in memory, rebuilt from
``llm.jobs`` after a restart.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

import pydantic
from aiokafka.structs import ConsumerRecord

from services.contracts.errors import JobExpired, JobNotFound
from services.contracts.events import (
    JOB_STATE_ORDER,
    TERMINAL_JOB_STATES,
    ErrorInfo,
    JobStatus,
    JobUpdated,
    RequestBase,
    ResultProduced,
    VideoGenerateRequested,
    utcnow,
)

from .kafka import validation_reason
from .tail import Malformed, Tail
from .topics import Topics

log = logging.getLogger(__name__)

#: Operations whose provider works asynchronously: every request of theirs has a record on
#: ``llm.jobs`` (its provider job, for resumption), job or not.
PROVIDER_JOBS: frozenset[str] = frozenset({"video.generate"})
#: How long a finished job stays readable (``jobs.retention``); later it is ``job_expired``.
DEFAULT_RETENTION_S = 24 * 3600.0


def job_key(job: JobUpdated) -> str:
    """The record key of a job on ``llm.jobs``: its tenant and id (job ids are request ids, which
    callers may choose: two tenants' jobs of one id are two jobs)."""
    return f"{job.tenant_id}/{job.job_id}"


def job_state(
    req: RequestBase,
    status: JobStatus,
    *,
    created_at: datetime | None = None,
    started_at: datetime | None = None,
    result: ResultProduced | None = None,
    error: ErrorInfo | None = None,
) -> JobUpdated:
    """The record of ``req``'s job in ``status``; ``created_at`` is the request's own time."""
    now = utcnow()
    return JobUpdated(
        request_id=req.request_id,
        tenant_id=req.tenant_id,
        user_id=req.user_id,
        job_id=req.request_id,
        status=status,
        operation=req.operation,
        model=getattr(req, "model", None),
        created_at=created_at or req.occurred_at,
        started_at=started_at or (now if status != "pending" else None),
        finished_at=now if status in TERMINAL_JOB_STATES else None,
        result=result,
        error=error,
        params=_params(req),
        batch=req.batch,
    )


def _params(req: RequestBase) -> dict[str, Any] | None:
    if isinstance(req, VideoGenerateRequested):
        return {"prompt": req.prompt, "seconds": req.seconds, "size": req.size}
    return None


def outcome_state(req: RequestBase, result: ResultProduced, started_at: datetime | None) -> JobUpdated:
    """The terminal record of a job from its result: ``completed``, ``cancelled`` or ``failed``."""
    if result.status == "ok":
        return job_state(req, "completed", started_at=started_at, result=result)
    status: JobStatus = "cancelled" if result.error and result.error.code == "cancelled" else "failed"
    return job_state(req, status, started_at=started_at, error=result.error)


def newer(old: JobUpdated | None, new: JobUpdated) -> bool:
    """Whether ``new`` moves the job forward (a terminal state never changes again)."""
    if old is None:
        return True
    if old.status in TERMINAL_JOB_STATES:
        return False
    return JOB_STATE_ORDER[new.status] >= JOB_STATE_ORDER[old.status]


class JobsView:
    """Every job on ``llm.jobs``, by id, as this process has read them."""

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Topics,
        *,
        retention_s: float = DEFAULT_RETENTION_S,
        client_id: str = "llmgw-jobs",
    ):
        self.retention = timedelta(seconds=retention_s)
        self._jobs: dict[tuple[str, str], JobUpdated] = {}  # (tenant, job id) -> the job
        self._waiters: dict[tuple[str, str], list[asyncio.Future[JobUpdated]]] = {}
        spec = topics.jobs
        self._tail = Tail(
            bootstrap_servers,
            spec.name,
            self._on_record,
            partitions=range(spec.partitions),
            start_at="beginning",
            client_id=client_id,
            fetch_max_wait_ms=100,
        )

    async def start(self) -> None:
        await self._tail.start()
        await self._tail.caught_up()  # every job the topic held is known before a read is answered

    async def aclose(self) -> None:
        await self._tail.aclose()
        for futs in self._waiters.values():
            for f in futs:
                f.cancel()

    async def caught_up(self) -> None:
        """Every record published before this call has been read (a read-your-writes barrier)."""
        await self._tail.caught_up()

    def _on_record(self, record: ConsumerRecord) -> None:
        if record.value is None:  # a tombstone: the key is "<tenant>/<job id>"
            tenant, _, job_id = (record.key or b"").decode().partition("/")
            self._jobs.pop((tenant, job_id), None)
            return
        try:
            job = JobUpdated.model_validate_json(record.value)
        except pydantic.ValidationError as exc:
            raise Malformed(f"JobUpdated: {validation_reason(exc)}") from exc
        self.apply(job)

    def apply(self, job: JobUpdated) -> None:
        key = (job.tenant_id, job.job_id)
        old = self._jobs.get(key)
        if not newer(old, job):
            return
        if old is not None:  # the first writer knew when the job was created and started
            job = job.model_copy(
                update={
                    "created_at": old.created_at,
                    "started_at": old.started_at or job.started_at,
                    "params": job.params or old.params,
                    "provider_job": job.provider_job or old.provider_job,
                }
            )
        self._jobs[key] = job
        if job.status in TERMINAL_JOB_STATES:
            for f in self._waiters.pop(key, ()):
                if not f.done():
                    f.set_result(job)

    def get(self, tenant_id: str, job_id: str) -> JobUpdated:
        """The job of ``tenant_id`` with this id: ``JobNotFound`` (another tenant's job of that id
        is another job), ``JobExpired`` once it finished longer than the retention ago."""
        job = self._jobs.get((tenant_id, job_id))
        if job is None:
            raise JobNotFound(f"no job {job_id!r}")
        if job.finished_at is not None and job.finished_at + self.retention < utcnow():
            raise JobExpired(
                f"job {job_id!r} finished at {job.finished_at.isoformat()} and is no longer kept"
            )
        return job

    def peek(self, tenant_id: str, job_id: str) -> JobUpdated | None:
        """The job's record, expired or not (for the gateway's own use: resuming provider work)."""
        return self._jobs.get((tenant_id, job_id))

    def jobs(self, tenant_id: str | None = None, status: str | None = None) -> list[JobUpdated]:
        """The jobs known, oldest first, of one tenant and status when given."""
        out = [
            j
            for j in self._jobs.values()
            if (tenant_id is None or j.tenant_id == tenant_id) and (status is None or j.status == status)
        ]
        return sorted(out, key=lambda j: j.created_at)

    async def wait(self, tenant_id: str, job_id: str, timeout_s: float | None = None) -> JobUpdated:
        """The job once it has ended (``get``'s errors for an expired one; a job not seen yet is
        waited for: its ``pending`` record may still be on the way)."""
        key = (tenant_id, job_id)
        if key in self._jobs:
            job = self.get(tenant_id, job_id)
            if job.status in TERMINAL_JOB_STATES:
                return job
        fut: asyncio.Future[JobUpdated] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(fut)
        try:
            async with asyncio.timeout(timeout_s):
                return await fut
        finally:
            waiting = self._waiters.get(key)
            if waiting and fut in waiting:
                waiting.remove(fut)
